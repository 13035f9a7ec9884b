"""Request bodies: strict JSON parsing and one declarative schema per route, which both validates (producing the
`issues` of a 400) and describes the route in the OpenAPI document, so the two cannot drift.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest, invalid

MAX_DEPTH = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RUN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$")


@dataclass(frozen=True)
class Field:
    """One body field: `kind` is json, object, array, string, name, owner, hash, run_id, int, number, bool or enum."""

    kind: str
    required: bool = False
    minimum: float | None = None
    values: tuple[str, ...] = ()


Schema = dict[str, Field]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_strings(value: Any, depth: int = 0) -> None:
    """Refuses nesting deeper than MAX_DEPTH and strings (values or keys) that Postgres jsonb cannot store."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nesting deeper than {MAX_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("strings must not contain U+0000")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("strings must not contain unpaired surrogates") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, depth + 1)
            _check_strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item, depth + 1)


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body; an empty body is `{}` (the schema then reports missing fields)."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        _check_strings(value)
    except RecursionError:
        raise invalid([], f"nesting deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid([], f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise invalid([], "the request body must be a JSON object")
    return value


def check(name: str, spec: Field, value: Any) -> str | None:
    """The problem with one present, non-null value, or None."""
    kind = spec.kind
    if kind == "json":
        return None
    if kind == "object":
        return None if isinstance(value, dict) else "must be an object"
    if kind == "array":
        return None if isinstance(value, list) else "must be an array"
    if kind == "bool":
        return None if isinstance(value, bool) else "must be a boolean"
    if kind in ("int", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a finite number"
        if kind == "int" and not (isinstance(value, int) or value.is_integer()):
            return "must be an integer"
        if abs(value) >= 2**63 if kind == "int" else abs(value) > 1.7e308:
            return "is out of range"
        if spec.minimum is not None and value < spec.minimum:
            return f"must be at least {spec.minimum:g}"
        return None
    if not isinstance(value, str):
        return "must be a string"
    if kind == "enum":
        return None if value in spec.values else f"must be one of {', '.join(spec.values)}"
    if kind == "run_id":
        return None if _RUN_ID.match(value) else "must be 1 to 128 characters of A-Z a-z 0-9 _ . : -"
    limit = {"name": 512, "owner": 256, "hash": 256}.get(kind)
    if limit is not None:
        if not 1 <= len(value) <= limit:
            return f"must be 1 to {limit} characters"
        if kind != "hash" and _CONTROL.search(value):
            return "must not contain control characters"
    return None


def validate(body: dict[str, Any], schema: Schema) -> dict[str, Any]:
    """The body's known fields (null = absent; integers as int), or InvalidRequest listing every problem."""
    issues = []
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        value = body.get(name)
        if value is None:
            if spec.required:
                issues.append({"path": [name], "message": "is required"})
            continue
        problem = check(name, spec, value)
        if problem:
            issues.append({"path": [name], "message": problem})
            continue
        out[name] = int(value) if spec.kind == "int" else value
    if issues:
        raise InvalidRequest(issues)
    return out


# The bodies of the routes (wire-api.md §4), by route name.
NAME = Field("name", required=True)
BODIES: dict[str, Schema] = {
    "create_run": {"input": Field("json"), "metadata": Field("object"), "recoveryWebhook": Field("string"),
                   "channels": Field("array"), "runId": Field("run_id")},
    "heartbeat": {"leaseOwner": Field("owner", required=True)},
    "complete": {"result": Field("json"), "leaseOwner": Field("owner")},
    "fail": {"error": Field("json"), "failureClass": Field("string"), "leaseOwner": Field("owner")},
    "cancel": {"reason": Field("string"), "actor": Field("string")},
    "recover": {"reason": Field("string")},
    "children": {"name": NAME, "workflowName": NAME, "input": Field("json"), "metadata": Field("object"),
                 "recoveryWebhook": Field("string"), "channels": Field("array"), "edgeType": Field("name"),
                 "edgeMetadata": Field("object")},
    "begin_step": {"name": NAME, "inputHash": Field("hash", required=True), "input": Field("json"),
                   "options": Field("object"), "leaseOwner": Field("owner")},
    "complete_step": {"leaseOwner": Field("owner", required=True), "output": Field("json")},
    "fail_step": {"leaseOwner": Field("owner", required=True), "error": Field("json"), "retryable": Field("bool"),
                  "resumeDecision": Field("enum", values=("auto_retry", "safe_replay", "manual_review",
                                                          "fail_hard"))},
    "review_step": {"action": Field("enum", required=True, values=("retry", "complete")), "output": Field("json"),
                    "actor": Field("string"), "reason": Field("string")},
    "state": {"value": Field("json"), "stream": Field("name"), "label": Field("name"), "reason": Field("string"),
              "importance": Field("enum", values=("transient", "normal", "checkpoint", "milestone")),
              "metadata": Field("object"), "createdBy": Field("string")},
    "save": {"label": NAME, "stream": Field("name"), "reason": Field("string"),
             "importance": Field("enum", values=("transient", "normal", "checkpoint", "milestone")),
             "metadata": Field("object"), "createdBy": Field("string")},
    "snapshot": {"label": NAME, "target": Field("object"), "state": Field("json"), "reason": Field("string"),
                 "metadata": Field("object"), "createdBy": Field("string")},
    "usage": {"stepId": Field("string"), "kind": Field("name"), "provider": Field("string"),
              "model": Field("string"), "label": Field("string"), "unit": Field("string"),
              "quantity": Field("number"), "inputTokens": Field("int", minimum=0),
              "outputTokens": Field("int", minimum=0), "totalTokens": Field("int", minimum=0),
              "costUsd": Field("number", minimum=0), "metadata": Field("object")},
    "begin_gate": {"name": NAME, "prompt": Field("string", required=True), "data": Field("json"),
                   "channels": Field("array"), "capability": Field("json"), "timeoutMs": Field("int", minimum=1)},
    "resolve_gate": {"decision": Field("enum", required=True, values=("approved", "rejected", "canceled")),
                     "token": Field("string"), "actor": Field("string"), "payload": Field("json")},
}
