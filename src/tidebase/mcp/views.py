"""What the MCP tools return: the library's records as JSON documents, bounded and without secrets.

Three rules, applied to every tool result, in this order:

1. Secret-named keys are redacted (`scrub`). Wherever it occurs (a run's input or metadata, a step's output, an
   event payload, a gate's data), the value of a key named like a credential (`secret`, `token`, `password`,
   `api_key`, `authorization`, `credentials`, ... and any key ending in `secret`, `token`, `password` or `owner`,
   such as `leaseOwner` and `fencingToken`) becomes `"[redacted]"`. Booleans, nulls and empty containers are kept
   (`hasSecret: true` says there is a secret without showing it). Lease owners are fencing identities of the HTTP
   API, so a run's lease is shown as who holds it (`holder`), never as its owner string.
2. Large values are truncated (`Budget`). A JSON value whose text is longer than the budget of its tool becomes
   `{"truncated": true, "chars": <length of its JSON text>, "preview": <its first characters>}` and its path is
   listed in the result's `truncated`; the preview is taken after rule 1, so it cannot show a redacted value.
3. Known secret strings are replaced (`Redactor`): the API key, the webhook and Studio secrets of the settings and
   the database password, wherever they occur in any string of the result.

The event payloads are first put in their public form by `tidebase.ops.render.payload` (the form the HTTP API and
its SSE stream serve: gates without resolve tokens, channels with `hasSecret` instead of their secret), and a step's
resume contract by `render.contract`. Resolve tokens are never read: a `Gate` read back carries none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from psycopg.conninfo import conninfo_to_dict

from tidebase.core.owners import parse_owner
from tidebase.models import Edge, Event, Gate, Run, StateVersion, Step
from tidebase.ops import render
from tidebase.ops.insight_models import Link, RunOverview, StateStream
from tidebase.settings import Settings

T = TypeVar("T")

REDACTED = "[redacted]"
# Key names (lowercase, without `_` and `-`) whose values are never shown.
SECRET_KEYS = frozenset({
    "secret", "token", "password", "passwd", "pwd", "apikey", "authorization", "auth", "credential", "credentials",
    "cookie", "privatekey", "signature", "tokenhash", "dsn", "databaseurl",
})
# ... and names ending in one of these (`leaseOwner`, `previousOwner`, `fencingToken`, `resolveToken`, ...).
SECRET_SUFFIXES = ("secret", "token", "password", "apikey", "credentials", "owner")
# Values shorter than this are not searched for as known secrets (a key of a few characters would garble text).
MIN_SECRET_CHARS = 6

LIST_VALUE_CHARS = 1_000     # per value in a list result (runs, steps, events, gates)
DETAIL_VALUE_CHARS = 20_000  # per value in a one-object result (a run, a step, a state)
MAX_RESULT_CHARS = 100_000   # a page of items is cut before it grows past this


def is_secret_key(key: str) -> bool:
    """True for a key whose value `scrub` redacts."""
    name = key.lower().replace("_", "").replace("-", "")
    return name in SECRET_KEYS or name.endswith(SECRET_SUFFIXES)


def scrub(value: Any) -> Any:
    """`value` (decoded JSON) with the value of every secret-named key replaced by `"[redacted]"`, at any depth.
    Booleans, nulls and empty containers under such keys are kept: they show no secret."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(str(k)) and _shows_something(v) else scrub(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def _shows_something(value: Any) -> bool:
    return not (value is None or isinstance(value, bool) or (isinstance(value, dict | list | tuple) and not value))


def json_chars(value: Any) -> int:
    """The length of `value`'s compact JSON text."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


@dataclass
class Budget:
    """Bounds the JSON values of one tool result to `value_chars` characters each, and records what it cut."""

    value_chars: int
    truncated: list[dict[str, Any]] = field(default_factory=list)

    def value(self, value: Any, path: str) -> Any:
        """`value` scrubbed (`scrub`), and replaced by a truncation record when its JSON text is too long."""
        clean = scrub(value)
        text = json.dumps(clean, ensure_ascii=False, separators=(",", ":"), default=str)
        if len(text) <= self.value_chars:
            return clean
        self.truncated.append({"path": path, "chars": len(text)})
        return {"truncated": True, "chars": len(text), "preview": text[:self.value_chars]}


class Redactor:
    """Replaces known secret strings by `"[redacted]"` in every string of a document."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        found = {s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}
        self.secrets = sorted(found, key=len, reverse=True)  # the longest first: one may contain another

    @classmethod
    def from_settings(cls, settings: Settings, dsn: str | None = None) -> Redactor:
        """The secrets of `settings` (API key, webhook and Studio secrets) and the password of the database DSN."""
        return cls([settings.api_key, settings.webhook_secret, settings.studio_secret,
                    _password(dsn), _password(settings.database_url)])

    def text(self, text: str) -> str:
        """`text` with every known secret replaced."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def apply(self, value: Any) -> Any:
        """`value` with every known secret replaced in its strings (keys included)."""
        if not self.secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.apply(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.apply(v) for v in value]
        return value


def _password(conninfo: str | None) -> str | None:
    """The password of a DSN (URL or key=value form); None when it has none or cannot be parsed."""
    if not conninfo:
        return None
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except Exception:  # noqa: BLE001 - a malformed DSN has no password to hide (the connection will say why)
        return None
    return None if password is None else str(password)


def fit(items: Sequence[dict[str, Any]], max_chars: int = MAX_RESULT_CHARS) -> int:
    """How many of `items`, from the first, fit in `max_chars` characters of JSON (at least one)."""
    total = 0
    for n, item in enumerate(items):
        total += json_chars(item) + 1
        if total > max_chars and n > 0:
            return n
    return len(items)


@dataclass
class Page:
    """The documents of a list result that fit in `MAX_RESULT_CHARS`, the values cut in them, and whether the list
    was cut short (`cut`: fewer documents than records)."""

    docs: list[dict[str, Any]]
    truncated: list[dict[str, Any]]
    cut: bool


def page(records: Sequence[T], render_one: Callable[[T, Budget, str], dict[str, Any]], name: str,
         value_chars: int = LIST_VALUE_CHARS) -> Page:
    """Renders `records` as `name[i]` with a budget of `value_chars` per value, keeping those that `fit`."""
    docs: list[dict[str, Any]] = []
    cuts: list[list[dict[str, Any]]] = []
    for i, record in enumerate(records):
        budget = Budget(value_chars)
        docs.append(render_one(record, budget, f"{name}[{i}]"))
        cuts.append(budget.truncated)
    kept = fit(docs)
    return Page(docs[:kept], [t for c in cuts[:kept] for t in c], kept < len(docs))


# -- records --------------------------------------------------------------------------------------------------------


def holder(owner: str | None) -> str | None:
    """Who holds a lease, without the owner string: `worker process 1234 on host h` for a library owner, `an HTTP
    client` for an owner an HTTP client chose (a fencing identity of the HTTP API), None for no lease."""
    if owner is None:
        return None
    parsed = parse_owner(owner)
    if parsed is None:
        return "an HTTP client"
    role = f"{parsed.role} " if parsed.role else ""
    return f"{role}process {parsed.pid} on host {parsed.host}"


def run_summary(run: Run) -> dict[str, Any]:
    """A run without its values: identity, status, attempt, lease holder and times."""
    lease = None
    if run.lease_owner is not None:
        lease = {"holder": holder(run.lease_owner), "expires_at": render.ts(run.lease_expires_at)}
    return {
        "id": run.id, "workflow": run.workflow, "status": run.status, "attempt": run.attempt, "queue": run.queue,
        "parent_id": run.parent_id, "failure_class": run.failure_class, "cancel_reason": run.cancel_reason,
        "lease": lease, "created_at": render.ts(run.created_at), "updated_at": render.ts(run.updated_at),
        "started_at": render.ts(run.started_at), "completed_at": render.ts(run.completed_at),
        "available_at": render.ts(run.available_at),
    }


def step_summary(step: Step) -> dict[str, Any]:
    """A step without its output and error."""
    return {"key": step.key, "status": step.status, "attempt": step.attempt,
            "resume_decision": step.resume_decision, "started_at": render.ts(step.started_at),
            "completed_at": render.ts(step.completed_at)}


def step(step: Step, budget: Budget, path: str) -> dict[str, Any]:
    """A step with its resume contract, output and error (each within `budget`)."""
    return {**step_summary(step), "name": step.name, "occurrence": step.occurrence, "input_hash": step.input_hash,
            "contract": scrub(render.contract(step.contract)), "output": budget.value(step.output, f"{path}.output"),
            "error": budget.value(step.error, f"{path}.error"), "created_at": render.ts(step.created_at),
            "updated_at": render.ts(step.updated_at)}


def link(link: Link) -> dict[str, Any]:
    """A run at the other end of an edge (a child, fan-out member or fork; or a parent)."""
    return {"run_id": link.run_id, "workflow": link.workflow, "status": link.status, "edge": link.edge.name,
            "edge_type": link.edge.edge_type}


def edge(edge: Edge) -> dict[str, Any]:
    return {"parent_run_id": edge.parent_run_id, "child_run_id": edge.child_run_id, "name": edge.name,
            "edge_type": edge.edge_type}


def gate(gate: Gate, budget: Budget, path: str) -> dict[str, Any]:
    """A gate with its prompt, data and decision; a resolve token is never part of it."""
    return {"id": gate.id, "run_id": gate.run_id, "name": gate.name, "prompt": gate.prompt,
            "data": budget.value(gate.data, f"{path}.data"), "status": gate.status, "decision": gate.decision,
            "actor": gate.actor, "payload": budget.value(gate.payload, f"{path}.payload"),
            "run_status": gate.run_status, "created_at": render.ts(gate.created_at),
            "resolved_at": render.ts(gate.resolved_at)}


def run_detail(overview: RunOverview, steps: Sequence[Step], pending: Sequence[Gate], budget: Budget
               ) -> dict[str, Any]:
    """A run with its input, result, error and metadata (within `budget`), the first of its steps (without
    outputs), the runs linked to it and its pending gates."""
    run = overview.run
    return {
        **run_summary(run), "input": budget.value(run.input, "input"), "result": budget.value(run.result, "result"),
        "error": budget.value(run.error, "error"), "metadata": budget.value(run.metadata, "metadata"),
        "cancelled_at": render.ts(overview.cancelled_at), "cancel_actor": overview.cancel_actor,
        "step_count": overview.step_count, "event_count": overview.event_count,
        "steps": [step_summary(s) for s in steps],
        "children": [link(c) for c in overview.children], "parents": [link(p) for p in overview.parents],
        "pending_gates": [gate(g, budget, f"pending_gates[{i}]") for i, g in enumerate(pending)],
    }


def event(event: Event, public_url: str, budget: Budget, path: str) -> dict[str, Any]:
    """An event with its payload in the public form of the HTTP API (`render.payload`), scrubbed and bounded."""
    payload = render.payload(event.type, event.payload or {}, public_url)
    return {"seq": event.seq, "type": event.type, "created_at": render.ts(event.created_at),
            "payload": budget.value(payload, f"{path}.payload")}


def state_version(version: StateVersion, budget: Budget) -> dict[str, Any]:
    """One version of a state stream: its value (within `budget`) and what labelled it."""
    return {"run_id": version.run_id, "stream": version.stream, "version": version.version,
            "value": budget.value(version.value, "value"), "label": version.label, "reason": version.reason,
            "step_key": version.step_key, "created_at": render.ts(version.created_at)}


def state_stream(stream: StateStream, budget: Budget) -> dict[str, Any]:
    """The current version of a state stream."""
    return {"run_id": stream.run_id, "stream": stream.name, "version": stream.version,
            "value": budget.value(stream.value, "value"), "label": None, "reason": None, "step_key": None,
            "created_at": render.ts(stream.updated_at)}


def stream_info(stream: StateStream) -> dict[str, Any]:
    """A state stream without its value."""
    return {"name": stream.name, "version": stream.version, "target_type": stream.target_type,
            "updated_at": render.ts(stream.updated_at)}
