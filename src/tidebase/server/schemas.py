"""Request bodies: strict JSON parsing and one declarative schema per route, which both validates (producing the
`issues` of a 400) and describes the route in the OpenAPI document, so the two cannot drift.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tidebase.server.errors import InvalidRequest, invalid

MAX_DEPTH = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RUN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$")
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$", re.IGNORECASE)
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class Field:
    """One body field: `kind` is json, object, array, string, name, owner, hash, run_id, int, number, bool, enum,
    url (absolute http(s), at most 2048 characters), timestamp (RFC 3339 with an offset), names (a non-empty list of
    names) or channels (a list of channel specs, docs/http-api.md#objects)."""

    kind: str
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
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
        if spec.maximum is not None and value > spec.maximum:
            return f"must be at most {spec.maximum:g}"
        return None
    if kind == "names":
        if not isinstance(value, list) or not value:
            return "must be a non-empty array of names"
        return next((f"[{i}] {p}" for i, v in enumerate(value) if (p := check(name, Field("name"), v))), None)
    if kind == "channels":
        if not isinstance(value, list):
            return "must be an array of channel specs"
        return next((f"[{i}] {p}" for i, v in enumerate(value) if (p := _channel_problem(v))), None)
    if not isinstance(value, str):
        return "must be a string"
    if kind == "url":
        return None if len(value) <= 2048 and _URL.match(value) else "must be an absolute http(s) URL of at most " \
            "2048 characters"
    if kind == "timestamp":
        return None if _TIMESTAMP.match(value) and _parse_time(value) else "must be an RFC 3339 timestamp with Z " \
            "or a numeric offset"
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


def _parse_time(value: str) -> datetime | None:
    """The aware datetime of an RFC 3339 text, or None; years outside 1900-9998 are refused (they are mistakes, and
    the far ends cannot be shown back in UTC)."""
    try:
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00").replace(" ", "T"))
        return parsed if 1900 <= parsed.astimezone(UTC).year <= 9998 else None
    except (ValueError, OverflowError):
        return None


def timestamp(value: str) -> datetime:
    """The aware datetime of a value that passed the `timestamp` check."""
    parsed = _parse_time(value)
    assert parsed is not None
    return parsed


def _channel_problem(spec: Any) -> str | None:
    if not isinstance(spec, dict):
        return "must be an object {type, url, secret?, events?}"
    if spec.get("type", "webhook") != "webhook":
        return "type must be webhook"
    problem = check("url", Field("url"), spec.get("url"))
    if problem:
        return f"url {problem}"
    secret = spec.get("secret")
    if secret is not None and (not isinstance(secret, str) or not 1 <= len(secret) <= 1024):
        return "secret must be a string of 1 to 1024 characters"
    events = spec.get("events")
    if events is not None and (not isinstance(events, list) or not all(isinstance(e, str) for e in events)):
        return "events must be an array of event type strings"
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


INT32 = 2**31 - 1  # integer columns
CENTURY_MS = 100 * 366 * 86_400_000  # delays and deadlines: anything longer is a mistake, and overflows intervals

# The bodies of the routes (docs/http-api.md#reference), by route name.
NAME = Field("name", required=True)
BODIES: dict[str, Schema] = {
    "create_run": {"input": Field("json"), "metadata": Field("object"), "recoveryWebhook": Field("url"),
                   "channels": Field("channels"), "runId": Field("run_id")},
    "heartbeat": {"leaseOwner": Field("owner", required=True)},
    "complete": {"result": Field("json"), "leaseOwner": Field("owner")},
    "fail": {"error": Field("json"), "failureClass": Field("string"), "leaseOwner": Field("owner")},
    "cancel": {"reason": Field("string"), "actor": Field("string")},
    "recover": {"reason": Field("string")},
    "children": {"name": NAME, "workflowName": NAME, "input": Field("json"), "metadata": Field("object"),
                 "recoveryWebhook": Field("url"), "channels": Field("channels"), "edgeType": Field("name"),
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
                   "channels": Field("channels"), "capability": Field("json"),
                   "timeoutMs": Field("int", minimum=1)},
    "enqueue": {"workflowName": NAME, "input": Field("json"), "metadata": Field("object"),
                "recoveryWebhook": Field("url"), "channels": Field("channels"), "dedupeKey": Field("name"),
                "delayMs": Field("int", minimum=0, maximum=CENTURY_MS), "runAt": Field("timestamp"),
                "maxAttempts": Field("int", minimum=1, maximum=INT32),
                "priority": Field("int", minimum=-INT32, maximum=INT32),
                "deadlineMs": Field("int", minimum=1, maximum=CENTURY_MS)},
    "claim": {"queues": Field("names", required=True), "leaseOwner": Field("owner"),
              "limit": Field("int", minimum=1, maximum=100)},
    "queue_config": {"concurrency": Field("int", minimum=1, maximum=INT32),
                     "ratePerMinute": Field("int", minimum=1, maximum=INT32), "invokeUrl": Field("url")},
    "schedule": {"cron": Field("string", required=True), "workflowName": NAME, "input": Field("json"),
                 "queue": Field("name"), "maxAttempts": Field("int", minimum=1, maximum=INT32),
                 "enabled": Field("bool")},
    "resolve_gate": {"decision": Field("enum", required=True, values=("approved", "rejected", "canceled")),
                     "token": Field("string"), "actor": Field("string"), "payload": Field("json")},
}
