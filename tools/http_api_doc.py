"""Generate the reference part of docs/http-api.md from the server's own OpenAPI document.

The hand-written text of docs/http-api.md stays as it is; only the blocks between marker comments are regenerated:

- `<!-- generated: errors -->` ... `<!-- end -->`: the error table, from `tidebase.server.errors.STATUS` (the errors
  the engine raises) and the codes the HTTP layer answers by itself (`HTTP_CODES` below);
- `<!-- generated: routes -->` ... `<!-- end -->`: every operation of `tidebase.server.openapi.document()` with its
  path and query parameters, its body fields (types and constraints, from the body schemas of server/schemas.py that
  the OpenAPI document is built from), its answers and the error codes it can give, then the paths the server
  serves outside the OpenAPI document.

What the OpenAPI document does not say (the body of each answer, which error codes a route can raise, defaults, the
section of the semantics it belongs to) is written here, per route, in `ROUTES`, and checked against the app: a route
served but missing from the OpenAPI document, an operation without its notes here (or notes for one that is gone), a
status the OpenAPI document lists but the notes do not, an unknown error code, a code no route gives, a default for
a field the route does not have, or a link to an anchor the document does not define all fail.

Usage: python tools/http_api_doc.py [--check]    (`--check` fails when docs/http-api.md is out of date)
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "http-api.md"
SERVER_SOURCES = ROOT / "src" / "tidebase" / "server"
BLOCK = re.compile(r"(?P<open><!-- generated: (?P<name>[a-z]+) -->\n)(?P<body>.*?)(?P<close><!-- end -->)", re.S)
ANCHOR = re.compile(r'<a id="(?P<id>[a-z0-9-]+)"></a>')
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})  # the methods whose body the server reads (and limits)


class DocError(Exception):
    """The notes below disagree with the app, or the document cannot be regenerated."""


# -- what the HTTP layer answers by itself -----------------------------------------------------------------------------

# code: (status, `error` text). Each code and text must appear in the server's sources (src/tidebase/server).
HTTP_CODES: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "invalid request"),
    "unauthorized": (401, "unauthorized"),
    "not_found": (404, "not found"),
    "method_not_allowed": (405, "method not allowed"),
    "request_timeout": (408, "request body not received in time"),
    "payload_too_large": (413, "payload too large"),
    "unsupported_media_type": (415, "request body must be application/json"),
    "step_needs_review": (409, "step needs manual review"),
    "internal": (500, "internal server error"),
    "unavailable": (503, "database unavailable"),
}

# code: what it means, for the error table. Every code of the catalogue needs one.
MEANING: dict[str, str] = {
    "invalid_request": "malformed JSON, a body that fails validation, a bad path parameter, query parameter or header, "
                       "an invalid cron expression",
    "unauthorized": "a key is configured and the request does not present it",
    "invalid_token": "the `token` given to resolve a gate is not the gate's",
    "not_found": "no such route (the out-of-scope paths included)",
    "run_not_found": "the run of the path does not exist",
    "step_not_found": "no step with this id in this run",
    "gate_not_found": "no gate with this id in this run",
    "state_not_found": "the stream has no version to label yet",
    "schedule_not_found": "no schedule with this name",
    "method_not_allowed": "the path exists, the method does not (the `Allow` header lists those that do)",
    "request_timeout": "the body did not arrive in time; the connection is closed",
    "run_cancelled": "the run is cancelled; every refusal caused by cancellation has this code, and no other does",
    "run_completed": "the run is completed",
    "run_leased": "begin: another owner holds a live lease",
    "lease_lost": "the caller does not hold the lease the write needs",
    "step_needs_review": "the step is parked in `manual_review`",
    "step_completed": "the step is already completed (with another output, for complete)",
    "step_not_in_review": "review of a step that is not parked",
    "gate_resolved": "the gate already has another decision",
    "workflow_mismatch": "a client-chosen run id exists with another workflow",
    "input_mismatch": "a client-chosen run id exists with another input",
    "conflict": "the run's state does not allow the operation (the message says why)",
    "child_conflict": "the edge name exists with another child workflow or input",
    "payload_too_large": "the body is over the limit; the connection is closed",
    "unsupported_media_type": "a non-empty body that is not declared `application/json`",
    "no_recovery_webhook": "recover on a run without a `recoveryWebhook`",
    "internal": "a fault of the server; the body carries no detail",
    "unavailable": "the database cannot be reached, is not migrated, or stayed busy; `Retry-After: 1`",
}

# code: the keys an error body carries besides `error` and `code` (`run` is added for errors.WITH_RUN).
EXTRA: dict[str, tuple[str, ...]] = {
    "invalid_request": ("issues",),
    "run_leased": ("leaseOwner",),
    "step_needs_review": ("step",),
    "step_completed": ("step",),
    "step_not_in_review": ("step",),
    "gate_resolved": ("gate",),
    "payload_too_large": ("limit",),
}


# -- what the OpenAPI document does not say, per operation -------------------------------------------------------------


@dataclass(frozen=True)
class Notes:
    """`see`: the anchor of the semantics; `answers`: (status, body) of each success; `errors`: (code, when) of each
    error specific to the route, in the order the route checks them ("" = the code's meaning); `defaults`: field or
    parameter name -> what an absent (or null) value means; `database`: whether the route reads the database;
    `unlisted`: statuses the OpenAPI document lists for the route although the route never answers them (checked
    both ways, so that a corrected OpenAPI document makes the exception go)."""

    see: str
    answers: tuple[tuple[int, str], ...]
    errors: tuple[tuple[str, str], ...] = ()
    defaults: Mapping[str, str] = field(default_factory=dict)
    database: bool = True
    unlisted: tuple[int, ...] = ()


TERMINAL = (("run_cancelled", "the run is cancelled"), ("run_completed", "the run is completed"))
LEASE = "the caller does not hold both the run lease and the step's lease"
CHANNELS = "no channels"

ROUTES: dict[str, Notes] = {
    "GET /health": Notes(
        "health", ((200, "`{ok: true, database}`; `database` says whether the server's event connection is up"),),
        database=False),
    "GET /health/ready": Notes(
        "health", ((200, "`{ok: true, database: true}`: the database answers and its schema is current"),),
        (("unavailable", "the database does not answer within 5 s: `{ok: false, error, code}`"),)),
    "GET /runs": Notes(
        "list-runs", ((200, "`{runs: Run[]}`, newest first"),),
        (("invalid_request", "a `status` or `limit` out of its range"),),
        {"limit": "100", "status": "any status", "workflowName": "any workflow", "queue": "any queue or none"}),
    "POST /runs/{workflowName}": Notes(
        "create-run", ((201, "`{run}`: a new run, `pending`"),
                       (200, "`{run}`: the existing run of this `runId`, unchanged")),
        (("invalid_request", "the workflow name is not a name"), ("workflow_mismatch", ""), ("input_mismatch", "")),
        {"input": "`{}`", "metadata": "`{}`", "runId": "`run_` + 32 hex", "channels": CHANNELS,
         "recoveryWebhook": "none"}),
    "GET /runs/{runId}": Notes(
        "run-detail", ((200, "the run detail: `{run, steps, state, stateStreams, stateVersions, runEdges, childRuns, "
                             "recoveryAttempts, channels, channelDeliveries, gates, usage, events}`"),),
        (("run_not_found", ""),)),
    "POST /runs/{runId}/begin": Notes(
        "begin", ((200, "`{run, leaseOwner}`; for a completed run, the run unchanged and no lease"),),
        (("invalid_request", "an `x-tidebase-worker` header that is not a valid owner"), ("run_not_found", ""),
         ("run_cancelled", "the run is cancelled (also when its deadline passed just now)"), ("run_leased", ""))),
    "POST /runs/{runId}/heartbeat": Notes(
        "heartbeat", ((200, "`{run}` with the lease extended"),),
        (("run_not_found", ""), TERMINAL[0],
         ("lease_lost", "the lease is not live, or not the caller's (also after complete, fail or requeue)"))),
    "POST /runs/{runId}/complete": Notes(
        "complete", ((200, "`{run}`, completed; the same result again returns it unchanged"),),
        (("run_not_found", ""), TERMINAL[0], ("run_completed", "completed with another result"),
         ("lease_lost", "the run is not `running`, or `leaseOwner` is not its holder")),
        {"result": "`null`", "leaseOwner": "not fenced: any caller while the run is `running`"}),
    "POST /runs/{runId}/fail": Notes(
        "fail", ((200, "`{run, requeued}`: failed, or back on its queue when `requeued`"),),
        (("run_not_found", ""), *TERMINAL,
         ("lease_lost", "the run is not `running`, or `leaseOwner` is not its holder")),
        {"error": "`{}`", "failureClass": "none", "leaseOwner": "not fenced: any caller while the run is `running`"}),
    "POST /runs/{runId}/cancel": Notes(
        "cancel", ((200, "`{run}`, cancelled; a cancelled run is returned unchanged"),),
        (("run_not_found", ""), TERMINAL[1]),
        {"reason": "none", "actor": "none"}),
    "POST /runs/{runId}/recover": Notes(
        "recover", ((202, "`{recoveryAttempt}`: a `run.resume` webhook, `pending`"),),
        (("run_not_found", ""), *TERMINAL, ("no_recovery_webhook", "")),
        {"reason": "`manual`"}, unlisted=(200,)),
    "POST /runs/{runId}/children": Notes(
        "children", ((200, "`{run, edge, created}`: the child run, its edge, and whether this call created them"),),
        (("run_not_found", "the parent does not exist"), *TERMINAL, ("child_conflict", "")),
        {"input": "`{}`", "metadata": "`{}`", "edgeType": "`child`", "edgeMetadata": "`{}`", "channels": CHANNELS,
         "recoveryWebhook": "none"}),
    "POST /runs/{runId}/steps/begin": Notes(
        "steps-begin", ((200, "`{action, ...}`: `execute`, `return`, `locked`, `input_mismatch` or `cancelled`"),),
        (("run_not_found", ""), ("run_completed", "the run is completed and the step is not"),
         ("lease_lost", "the caller does not hold the run lease"),
         ("step_needs_review", "the step is parked, or was interrupted and has just been parked")),
        {"input": "`{}`", "options": "`{}`", "leaseOwner": "no owner: only `return`, `input_mismatch` and "
                                                          "`cancelled` can be answered"}),
    "POST /runs/{runId}/steps/{stepId}/complete": Notes(
        "step-complete", ((200, "`{step}`, completed; the same output again returns it unchanged"),),
        (("run_not_found", ""), ("step_not_found", ""), TERMINAL[0],
         ("step_completed", "completed with another output"), TERMINAL[1], ("lease_lost", LEASE)),
        {"output": "`null`"}),
    "POST /runs/{runId}/steps/{stepId}/fail": Notes(
        "step-fail", ((200, "`{step}`, failed as classified"),),
        (("run_not_found", ""), ("step_not_found", ""), TERMINAL[0], ("step_completed", "the step is completed"),
         TERMINAL[1], ("lease_lost", LEASE)),
        {"error": "`null`", "retryable": "`false`", "resumeDecision": "classified by the server"}),
    "POST /runs/{runId}/steps/{stepId}/review": Notes(
        "step-review", ((200, "`{step}`: `failed_retryable` after `retry`, `completed` after `complete`"),),
        (("run_not_found", ""), *TERMINAL, ("step_not_found", ""), ("step_not_in_review", "")),
        {"output": "`null` (for `complete`)"}),
    "PUT /runs/{runId}/state": Notes(
        "state-write", ((200, "`{state, stateVersion}`"),),
        (("run_not_found", ""), *TERMINAL),
        {"value": "`{}`", "stream": "`run`", "importance": "`normal`", "metadata": "`{}`"}),
    "PATCH /runs/{runId}/state": Notes(
        "state-merge", ((200, "`{state, stateVersion}`"),),
        (("run_not_found", ""), *TERMINAL),
        {"value": "`{}`", "stream": "`run`", "importance": "`normal`", "metadata": "`{}`"}),
    "POST /runs/{runId}/state/save": Notes(
        "state-save", ((200, "`{stateVersion}`"),),
        (("run_not_found", ""), *TERMINAL, ("state_not_found", "")),
        {"stream": "`run`", "importance": "`milestone`", "metadata": "`{}`"}),
    "GET /runs/{runId}/state/versions": Notes(
        "state-versions", ((200, "`{stateVersions: StateVersion[]}` by stream, then version"),),
        (("invalid_request", "`labeled` other than `true` or `false`"), ("run_not_found", "")),
        {"stream": "every stream", "labeled": "`false`: every version"}),
    "POST /runs/{runId}/snapshots": Notes(
        "snapshots", ((200, "`{snapshot: StateVersion}`"),),
        (("invalid_request", "`target` without a valid `type` and `id`"), ("run_not_found", ""), *TERMINAL),
        {"target": "the run: stream `run:<runId>`", "state": "`{}`", "metadata": "`{}`"}),
    "GET /runs/{runId}/snapshots": Notes(
        "snapshots", ((200, "`{snapshots: StateVersion[]}`, newest first"),),
        (("run_not_found", ""),)),
    "POST /runs/{runId}/usage": Notes(
        "usage", ((200, "`{usage}`"),),
        (("run_not_found", ""), ("invalid_request", "`stepId` names no step of this run")),
        {"kind": "`custom`", "totalTokens": "`inputTokens + outputTokens` when either is given", "metadata": "`{}`"}),
    "POST /runs/{runId}/gates/begin": Notes(
        "gate-begin", ((200, "`{action: \"wait\" | \"return\", gate}`; `gate.resolveToken` is set only by the "
                             "call that created the gate"),),
        (("run_not_found", ""), *TERMINAL),
        {"data": "`{}`", "capability": "`null`", "channels": CHANNELS, "timeoutMs": "ignored"}),
    "GET /runs/{runId}/gates/{gateId}": Notes(
        "gate-poll", ((200, "`{gate, runStatus}`"),),
        (("run_not_found", ""), ("gate_not_found", ""))),
    "POST /runs/{runId}/gates/{gateId}/resolve": Notes(
        "gate-resolve", ((200, "`{gate}`, decided; the same decision again returns it unchanged"),),
        (("run_not_found", ""), ("gate_not_found", ""),
         ("run_cancelled", "the gate is still pending and the run is cancelled"),
         ("run_completed", "the gate is still pending and the run is completed"),
         ("invalid_token", ""), ("gate_resolved", "")),
        {"token": "resolved as an operator (the API key is the authority)", "actor": "none", "payload": "`{}`"}),
    "GET /runs/{runId}/events": Notes(
        "sse", ((200, "`text/event-stream`: the run's events after the start position, then each new one"),),
        (("invalid_request", "`after` or `Last-Event-ID` is not a non-negative integer"), ("run_not_found", "")),
        {"after": "`0`", "token": "only the `Authorization` header authenticates"}),
    "POST /queues/{queue}/enqueue": Notes(
        "enqueue", ((200, "`{run, deduplicated}`"),),
        (("invalid_request", "the queue name is not a name"), ("workflow_mismatch", "the run id exists with another "
                                                                                  "workflow"),
         ("conflict", "the run of this dedupe key kept finishing while it was read: retry")),
        {"input": "`{}`", "metadata": "`{}`", "delayMs": "`0`", "runAt": "now + `delayMs`", "maxAttempts": "`1`",
         "priority": "`0`", "deadlineMs": "no deadline", "dedupeKey": "no dedupe", "channels": CHANNELS,
         "recoveryWebhook": "none"}),
    "POST /queues/claim": Notes(
        "claim", ((200, "`{runs: Run[], leaseOwner}`, possibly no runs"),),
        defaults={"leaseOwner": "a new owner per request", "limit": "`1`"}),
    "GET /queues": Notes(
        "queue-list", ((200, "`{queues: QueueStat[]}` by name"),)),
    "PUT /queues/{queue}/config": Notes(
        "queue-config", ((200, "`{config}`"),),
        (("invalid_request", "the queue name is not a name"),),
        {"concurrency": "absent: kept; `null`: no cap", "ratePerMinute": "absent: kept; `null`: no cap",
         "invokeUrl": "absent: kept; `null`: no push dispatch"}),
    "PUT /schedules/{name}": Notes(
        "schedules", ((200, "`{schedule}` with its `nextRunAt`"),),
        (("invalid_request", "an invalid cron expression, or one with no fire within five years (issue on `cron`)"),),
        {"input": "`{}`", "queue": "`default`", "maxAttempts": "`1`", "enabled": "`true`"}),
    "GET /schedules": Notes(
        "schedules", ((200, "`{schedules: Schedule[]}` by name"),)),
    "DELETE /schedules/{name}": Notes(
        "schedules", ((200, "`{deleted: <name>}`"),),
        (("schedule_not_found", ""),)),
}


# -- the app -----------------------------------------------------------------------------------------------------------


@dataclass
class App:
    """What the generator reads from the server: its OpenAPI document, the routes it serves, the error table."""

    document: dict[str, Any]
    served: set[str]  # "METHOD /path" in OpenAPI spelling, HEAD left out
    outside: list[tuple[str, str]]  # (methods, path) served but not in the OpenAPI document on purpose
    out_of_scope: list[str]
    open_paths: frozenset[str]
    status: list[tuple[int, str, str]]  # (status, code, message) of errors.STATUS
    with_run: frozenset[str]


PARAMETER_NAMES = {"run_id": "runId", "step_id": "stepId", "gate_id": "gateId", "workflow": "workflowName"}


def openapi_path(path: str) -> str:
    """A Starlette route path in the OpenAPI document's spelling: `{run_id}` -> `{runId}`."""
    return re.sub(r"\{(\w+)\}", lambda m: "{" + PARAMETER_NAMES.get(m.group(1), m.group(1)) + "}", path)


def load_app() -> App:
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    from starlette.routing import Mount, Route  # noqa: PLC0415 - after the path is set

    from tidebase.server import app as server_app  # noqa: PLC0415
    from tidebase.server import errors, middleware, openapi  # noqa: PLC0415

    asgi: Any = server_app.create_app(server_app.Settings())
    while not hasattr(asgi, "routes"):  # the middleware wrap the Starlette app
        asgi = asgi.app
    served: set[str] = set()
    outside: list[tuple[str, str]] = []
    out_of_scope = [openapi_path(p) for p in server_app.OUT_OF_SCOPE]
    for route in asgi.routes:
        path = openapi_path(route.path)
        if isinstance(route, Mount):
            outside.append(("", path + "/…"))
            continue
        if not isinstance(route, Route):
            raise DocError(f"unexpected route type {type(route).__name__} at {route.path}")
        methods = sorted(m for m in (route.methods or ()) if m != "HEAD")
        if path in out_of_scope:
            continue
        if path in ("/openapi.json", "/", "/metrics"):
            outside.append((", ".join(methods), path))
            continue
        served.update(f"{m} {path}" for m in methods)
    status = [(s, code, message) for s, code, message in errors.STATUS.values()]
    return App(openapi.document(), served, outside, out_of_scope, middleware.OPEN_PATHS, status,
               frozenset(errors.WITH_RUN))


def operations(app: App) -> list[tuple[str, dict[str, Any]]]:
    """("METHOD /path", operation) in the document's order."""
    return [(f"{method.upper()} {path}", op) for path, item in app.document["paths"].items()
            for method, op in item.items()]


# -- the error catalogue -----------------------------------------------------------------------------------------------


@dataclass
class Code:
    status: int
    messages: list[str]


def catalogue(app: App) -> dict[str, Code]:
    """Every error code the server can answer with: errors.STATUS plus the HTTP layer's own."""
    codes: dict[str, Code] = {}
    for status, code, message in [*app.status, *((s, c, m) for c, (s, m) in HTTP_CODES.items())]:
        entry = codes.setdefault(code, Code(status, []))
        if entry.status != status:
            raise DocError(f"error code {code} has two statuses: {entry.status} and {status}")
        if message not in entry.messages:
            entry.messages.append(message)
    sources = "\n".join(p.read_text("utf-8") for p in sorted(SERVER_SOURCES.glob("*.py")))
    for code, (_, message) in HTTP_CODES.items():
        for text in (code, message):
            if f'"{text}' not in sources:
                raise DocError(f"HTTP_CODES: {text!r} appears nowhere in src/tidebase/server: update HTTP_CODES")
    missing = sorted(set(codes) - set(MEANING))
    if missing:
        raise DocError(f"MEANING has no entry for the error codes {missing}")
    stale = sorted(set(MEANING) - set(codes))
    if stale:
        raise DocError(f"MEANING describes codes the server no longer has: {stale}")
    return codes


def error_table(app: App, codes: dict[str, Code]) -> str:
    lines = ["| status | `code` | `error` | other keys | meaning |", "|---|---|---|---|---|"]
    for code, entry in sorted(codes.items(), key=lambda item: (item[1].status, item[0])):
        extra = (*(("run",) if code in app.with_run else ()), *EXTRA.get(code, ()))
        lines.append(f"| {entry.status} | `{code}` | {' / '.join(f'`{m}`' for m in entry.messages)} | "
                     f"{', '.join(f'`{k}`' for k in extra)} | {MEANING[code]} |")
    return "\n".join(lines) + "\n"


# -- schemas to words --------------------------------------------------------------------------------------------------


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def describe(schema: dict[str, Any]) -> tuple[str, list[str]]:
    """(type, constraints) of a JSON schema, in words."""
    if "anyOf" in schema:
        parts = [s for s in schema["anyOf"] if s != {"type": "null"}]
        if len(parts) != 1:
            raise DocError(f"cannot describe {schema}")
        return describe(parts[0])
    kind: str | None = schema.get("type")
    constraints: list[str] = []
    low, high = schema.get("minLength"), schema.get("maxLength")
    if low is not None and high is not None:
        constraints.append(f"{low} to {high} characters")
    elif low is not None:
        constraints.append(f"at least {low} character{'s' if low != 1 else ''}")
    elif high is not None:
        constraints.append(f"at most {high} characters")
    if "pattern" in schema:
        constraints.append(f"matches `{schema['pattern']}`")
    if "enum" in schema:
        constraints.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    if "minimum" in schema:
        constraints.append(f"≥ {number(schema['minimum'])}")
    if "maximum" in schema:
        constraints.append(f"≤ {number(schema['maximum'])}")
    if kind is None:
        return "any JSON", constraints
    if kind == "string" and schema.get("format") == "date-time":
        return "string (date-time)", constraints
    if kind == "array":
        if "minItems" in schema:
            constraints.append(f"at least {schema['minItems']} item{'s' if schema['minItems'] != 1 else ''}")
        items = schema.get("items")
        if not items:
            return "array", constraints
        if "properties" in items:
            return "array of objects", constraints
        item_kind, item_constraints = describe(items)
        if item_constraints:
            constraints.append("each " + ", ".join(item_constraints))
        return f"array of {item_kind}s", constraints
    return str(kind), constraints


def wrap(text: str) -> str:
    """A paragraph of prose at the document's width (120), never breaking inside a word."""
    return textwrap.fill(text, width=120, break_long_words=False, break_on_hyphens=False)


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def slug(key: str) -> str:
    return "route-" + re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")


# -- one operation -----------------------------------------------------------------------------------------------------


def common_codes(key: str, op: dict[str, Any], notes: Notes, app: App) -> list[tuple[str, str]]:
    """(code, why) of the errors the route gives like every route of its kind."""
    method, path = key.split(" ", 1)
    params = op.get("parameters", [])
    reasons = []
    if "requestBody" in op:
        reasons.append("a body that is not a valid JSON object for this route")
    if any(p["in"] == "path" for p in params):
        reasons.append("a path parameter that is not valid percent-encoded UTF-8")
    out: list[tuple[str, str]] = []
    if reasons:
        out.append(("invalid_request", " or ".join(reasons)))
    if path not in app.open_paths:
        out.append(("unauthorized", "with a key configured"))
    if method in BODY_METHODS:
        out.append(("request_timeout", ""))
        out.append(("payload_too_large", ""))
    if "requestBody" in op:
        out.append(("unsupported_media_type", ""))
    if notes.database:
        out.append(("unavailable", ""))
    out.append(("internal", ""))
    return out


def parameter_table(op: dict[str, Any], notes: Notes) -> list[str]:
    params = op.get("parameters", [])
    if not params:
        return []
    out = ["| parameter | in | type | constraints | when absent |", "|---|---|---|---|---|"]
    for p in params:
        kind, constraints = describe(p["schema"])
        if p["in"] == "path":
            constraints.append("percent-decoded")
        absent = "required" if p.get("required") else notes.defaults.get(p["name"], "")
        out.append(f"| `{p['name']}` | {p['in']} | {kind} | {cell(', '.join(constraints))} | {cell(absent)} |")
    return [*out, ""]


def body_tables(op: dict[str, Any], notes: Notes) -> list[str]:
    """The body fields, then a table for the items of each list of objects (channels)."""
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    required = set(schema.get("required", []))
    out = ["| body field | type | required | constraints | when absent or null |", "|---|---|---|---|---|"]
    nested: list[tuple[str, dict[str, Any]]] = []
    for name, prop in schema["properties"].items():
        kind, constraints = describe(prop)
        items = (prop.get("anyOf", [prop])[0]).get("items") or {}
        if "properties" in items:
            nested.append((name, items))
        absent = "" if name in required else notes.defaults.get(name, "")
        out.append(f"| `{name}` | {kind} | {'yes' if name in required else ''} | {cell(', '.join(constraints))} "
                   f"| {cell(absent)} |")
    out.append("")
    for name, items in nested:
        inner = set(items.get("required", []))
        out += [f"Each item of `{name}`:", "", "| field | type | required | constraints |", "|---|---|---|---|"]
        for sub, prop in items["properties"].items():
            kind, constraints = describe(prop)
            out.append(f"| `{sub}` | {kind} | {'yes' if sub in inner else ''} | {cell(', '.join(constraints))} |")
        out.append("")
    return out


def answer_table(key: str, op: dict[str, Any], notes: Notes, app: App, codes: dict[str, Code]) -> list[str]:
    listed = {int(s) for s in op["responses"] if s != "default"}
    answered = {status for status, _ in notes.answers}
    if not listed - set(notes.unlisted) <= answered:
        raise DocError(f"{key}: the OpenAPI document lists {sorted(listed - answered)}, which ROUTES does not answer")
    if not set(notes.unlisted) <= listed - answered:
        raise DocError(f"{key}: `unlisted` {notes.unlisted} is stale: the OpenAPI document no longer lists them")
    out = ["| answer | `code` | when |", "|---|---|---|"]
    out += [f"| {status} | | {cell(body)} |" for status, body in notes.answers]
    for code, when in notes.errors:
        if code not in codes:
            raise DocError(f"{key}: unknown error code {code}")
        out.append(f"| {codes[code].status} | `{code}` | {cell(when or MEANING[code])} |")
    specific = {code for code, _ in notes.errors}
    common = [f"`{codes[code].status} {code}`" + (f" ({why})" if why else "")
              for code, why in common_codes(key, op, notes, app) if why or code not in specific]
    return [*out, "", wrap("Also, as every route of its kind: " + ", ".join(common) + "."), ""]


def render_operation(key: str, op: dict[str, Any], notes: Notes, app: App, codes: dict[str, Code],
                     titles: dict[str, str]) -> str:
    method, path = key.split(" ", 1)
    if notes.see not in titles:
        raise DocError(f"{key}: `see` names {notes.see!r}, which is not the anchor of a heading of the document")
    known = {p["name"] for p in op.get("parameters", [])}
    out = [f'<a id="{slug(key)}"></a>', "", f"### `{method} {path}`", "",
           f"{op['summary']}. Semantics: [{titles[notes.see]}](#{notes.see}).", ""]
    out += parameter_table(op, notes)
    if "requestBody" in op:
        known |= set(op["requestBody"]["content"]["application/json"]["schema"]["properties"])
        out += body_tables(op, notes)
    elif method in BODY_METHODS:
        out += ["No body is read.", ""]
    unknown = sorted(set(notes.defaults) - known)
    if unknown:
        raise DocError(f"{key}: defaults for fields the route does not have: {unknown}")
    out += answer_table(key, op, notes, app, codes)
    return "\n".join(out)


def routes_block(app: App, codes: dict[str, Code], titles: dict[str, str]) -> str:
    ops = operations(app)
    keys = [k for k, _ in ops]
    documented = set(keys)
    if app.served - documented:
        raise DocError(f"served but missing from the OpenAPI document (server/openapi.py): "
                       f"{sorted(app.served - documented)}")
    if documented - app.served:
        raise DocError(f"in the OpenAPI document but not served: {sorted(documented - app.served)}")
    if set(ROUTES) != documented:
        raise DocError(f"ROUTES and the OpenAPI document differ: without notes {sorted(documented - set(ROUTES))}, "
                       f"notes for no operation {sorted(set(ROUTES) - documented)}")
    used: set[str] = set()
    for key, op in ops:
        used.update(c for c, _ in ROUTES[key].errors)
        used.update(c for c, _ in common_codes(key, op, ROUTES[key], app))
    used |= {"not_found", "method_not_allowed"}  # answered by the router, listed in the text after the routes
    if set(codes) - used:
        raise DocError(f"error codes no route gives: {sorted(set(codes) - used)}: add them to ROUTES")
    out = [f"The server answers {len(ops)} operations. Generated from `GET /openapi.json` "
           f"(OpenAPI {app.document['openapi']}).", "",
           "| method | path | summary |", "|---|---|---|"]
    out += [f"| {k.split(' ', 1)[0]} | [`{k.split(' ', 1)[1]}`](#{slug(k)}) | {op['summary']} |" for k, op in ops]
    out.append("")
    out += [render_operation(key, op, ROUTES[key], app, codes, titles) for key, op in ops]
    out += ["### Paths outside the OpenAPI document", ""]
    for methods, path in app.outside:
        what = {"/openapi.json": "the OpenAPI document of the operations above",
                "/": "redirects to the Studio",
                "/metrics": "Prometheus metrics of the server process and of the database's queues "
                            "([operations.md](operations.md#metrics-traces-and-logs))",
                "/studio/…": "the Studio, a web dashboard with its own session authentication "
                             "([studio.md](studio.md))"}.get(path, "")
        out.append(f"- `{(methods + ' ' + path).strip()}`: {what}")
    out += ["", wrap("These paths exist only to answer `GET` and `POST` with `404 not_found` (after authentication): "
                     + ", ".join(f"`{p}`" for p in app.out_of_scope) + "."),
            "", wrap("Any other path is `404 not_found`; a known path with another method is `405 method_not_allowed` "
                     "with an `Allow` header. `HEAD` is answered wherever `GET` is."), ""]
    return "\n".join(out)


# -- the document ------------------------------------------------------------------------------------------------------


def headings(text: str) -> dict[str, str]:
    """anchor -> the text of the heading right after it, for the anchors of the hand-written sections."""
    found = re.finditer(r'<a id="(?P<id>[a-z0-9-]+)"></a>\n+#+ (?P<title>.+)', text)
    return {m.group("id"): m.group("title").strip() for m in found}


def render(text: str, app: App) -> str:
    codes = catalogue(app)
    blocks = {"errors": error_table(app, codes), "routes": routes_block(app, codes, headings(text))}
    found = [m.group("name") for m in BLOCK.finditer(text)]
    if sorted(found) != sorted(blocks):
        raise DocError(f"docs/http-api.md must hold the marker pairs {sorted(blocks)} once each, found {found}")
    new = BLOCK.sub(lambda m: m.group("open") + "\n" + blocks[m.group("name")] + "\n" + m.group("close"), text)
    anchors = [m.group("id") for m in ANCHOR.finditer(new)]
    duplicates = sorted({a for a in anchors if anchors.count(a) > 1})
    if duplicates:
        raise DocError(f"anchors defined twice: {duplicates}")
    missing = sorted(set(re.findall(r"\]\(#([a-z0-9-]+)\)", new)) - set(anchors))
    if missing:
        raise DocError(f"links to anchors the document does not define: {missing}")
    return new


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if docs/http-api.md is out of date")
    args = parser.parse_args()
    text = DOC.read_text("utf-8")
    try:
        new = render(text, load_app())
    except DocError as exc:
        print(f"tools/http_api_doc.py: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print("docs/http-api.md is out of date: run `python tools/http_api_doc.py`", file=sys.stderr)
            return 1
        return 0
    if new != text:
        DOC.write_text(new, "utf-8")
        print("docs/http-api.md regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
