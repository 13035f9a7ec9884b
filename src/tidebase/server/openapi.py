"""The OpenAPI 3.1 document of the API, built from the same body schemas the handlers validate with."""

from __future__ import annotations

import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from tidebase.server.schemas import BODIES, Field

# (method, path, body schema or None, summary, query parameters {name: schema})
OPERATIONS: list[tuple[str, str, str | None, str, dict[str, dict[str, Any]]]] = [
    ("get", "/health", None, "Liveness", {}),
    ("get", "/health/ready", None, "Readiness: the database answers", {}),
    ("get", "/runs", None, "List runs, newest first", {
        "status": {"type": "string", "enum": ["pending", "queued", "running", "completed", "failed", "cancelled"]},
        "workflowName": {"type": "string"}, "queue": {"type": "string"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 1000}}),
    ("post", "/runs/{workflowName}", "create_run", "Create a run", {}),
    ("get", "/runs/{runId}", None, "Run detail from one snapshot", {}),
    ("post", "/runs/{runId}/begin", None, "Acquire the run lease", {}),
    ("post", "/runs/{runId}/heartbeat", "heartbeat", "Extend the lease", {}),
    ("post", "/runs/{runId}/complete", "complete", "Complete the run", {}),
    ("post", "/runs/{runId}/fail", "fail", "Fail the run", {}),
    ("post", "/runs/{runId}/cancel", "cancel", "Cancel the run", {}),
    ("post", "/runs/{runId}/recover", "recover", "Ask the application to resume the run", {}),
    ("post", "/runs/{runId}/children", "children", "Create a child run, once per edge name", {}),
    ("post", "/runs/{runId}/steps/begin", "begin_step", "Open or replay a step", {}),
    ("post", "/runs/{runId}/steps/{stepId}/complete", "complete_step", "Complete a step", {}),
    ("post", "/runs/{runId}/steps/{stepId}/fail", "fail_step", "Fail a step", {}),
    ("post", "/runs/{runId}/steps/{stepId}/review", "review_step", "Release a parked step", {}),
    ("put", "/runs/{runId}/state", "state", "Replace a stream's live value", {}),
    ("patch", "/runs/{runId}/state", "state", "Merge into a stream's live value", {}),
    ("post", "/runs/{runId}/state/save", "save", "Label the current value", {}),
    ("get", "/runs/{runId}/state/versions", None, "State versions", {
        "stream": {"type": "string"}, "labeled": {"type": "string", "enum": ["true", "false"]}}),
    ("post", "/runs/{runId}/snapshots", "snapshot", "Create a snapshot", {}),
    ("get", "/runs/{runId}/snapshots", None, "List snapshots", {}),
    ("post", "/runs/{runId}/usage", "usage", "Record usage", {}),
    ("post", "/runs/{runId}/gates/begin", "begin_gate", "Open or rejoin a gate", {}),
    ("get", "/runs/{runId}/gates/{gateId}", None, "Poll a gate", {}),
    ("post", "/runs/{runId}/gates/{gateId}/resolve", "resolve_gate", "Decide a gate", {}),
    ("get", "/runs/{runId}/events", None, "Server-sent events of the run", {
        "after": {"type": "integer", "minimum": 0}, "token": {"type": "string"}}),
    ("post", "/queues/{queue}/enqueue", "enqueue", "Queue a run", {}),
    ("post", "/queues/claim", "claim", "Claim ready runs (pull dispatch)", {}),
    ("get", "/queues", None, "Queues with their counts and config", {}),
    ("put", "/queues/{queue}/config", "queue_config", "Set a queue's caps and invoke URL", {}),
    ("put", "/schedules/{name}", "schedule", "Create or replace a cron schedule", {}),
    ("get", "/schedules", None, "List schedules", {}),
    ("delete", "/schedules/{name}", None, "Delete a schedule", {}),
]

_KINDS: dict[str, dict[str, Any]] = {
    "json": {}, "object": {"type": "object"}, "array": {"type": "array"}, "bool": {"type": "boolean"},
    "string": {"type": "string"}, "name": {"type": "string", "minLength": 1, "maxLength": 512},
    "owner": {"type": "string", "minLength": 1, "maxLength": 256},
    "hash": {"type": "string", "minLength": 1, "maxLength": 256},
    "run_id": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.:\\-]{0,127}$"},
    "int": {"type": "integer"}, "number": {"type": "number"},
    "url": {"type": "string", "maxLength": 2048, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},
    "timestamp": {"type": "string", "format": "date-time"},
    "names": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1, "maxLength": 512}},
    "channels": {"type": "array", "items": {"type": "object", "required": ["url"], "properties": {
        "type": {"type": "string", "enum": ["webhook"]},
        "url": {"type": "string", "maxLength": 2048, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},
        "secret": {"type": "string", "minLength": 1, "maxLength": 1024},
        "events": {"type": "array", "items": {"type": "string"}}}}},
}


def _field(spec: Field) -> dict[str, Any]:
    schema = dict(_KINDS.get(spec.kind, {"type": "string"}))
    if spec.kind == "enum":
        schema["enum"] = list(spec.values)
    if spec.minimum is not None:
        schema["minimum"] = spec.minimum
    if spec.maximum is not None:
        schema["maximum"] = spec.maximum
    if not spec.required and schema:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def _error() -> dict[str, Any]:
    return {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


@functools.cache
def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, route, body, summary, query in OPERATIONS:
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                  for n in ("workflowName", "runId", "stepId", "gateId", "queue", "name") if "{" + n + "}" in route]
        params += [{"name": n, "in": "query", "required": False, "schema": s} for n, s in query.items()]
        op: dict[str, Any] = {"summary": summary, "operationId": f"{method}_{route}", "parameters": params,
                              "responses": {"200": {"description": "ok", "content": {
                                  "text/event-stream" if route.endswith("/events") else "application/json": {
                                      "schema": {} if route.endswith("/events") else {"type": "object"}}}},
                                  "default": _error()}}
        if route == "/runs/{workflowName}":
            op["responses"]["201"] = {"description": "created", "content": {"application/json": {
                "schema": {"type": "object"}}}}
        if body is not None:
            fields = BODIES[body]
            op["requestBody"] = {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {n: _field(f) for n, f in fields.items()},
                "required": [n for n, f in fields.items() if f.required]}}}}
        paths.setdefault(route, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tidebase", "version": "0.7.0-compatible"},
        "paths": paths,
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error", "code"], "properties": {
                "error": {"type": "string"}, "code": {"type": "string"}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


async def serve(request: Request) -> JSONResponse:
    return JSONResponse(document())
