"""Run routes: create, list, detail, begin, heartbeat, complete, fail, cancel, recover, children
(docs/http-api.md#runs)."""

from __future__ import annotations

import re
import secrets
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidebase.core import rules as _base
from tidebase.ops import render
from tidebase.server.common import answer, body, path, query, services
from tidebase.server.errors import invalid
from tidebase.server.schemas import Field, check

RUN_STATUSES = ("pending", "queued", "running", "completed", "failed", "cancelled")


async def create_run(request: Request) -> JSONResponse:
    wire = services(request).wire
    workflow = path(request, "workflow")
    problem = check("workflowName", Field("name"), workflow)
    if problem:
        raise invalid(["workflowName"], problem)
    b = await body(request, "create_run")
    run_id = b.get("runId") or _base.new_run_id()
    row, created = await wire.create_run(run_id, workflow, b.get("input"), b.get("metadata") or {},
                                         channels=b.get("channels"), recovery_webhook=b.get("recoveryWebhook"))
    return answer({"run": render.run(row)}, 201 if created else 200)


async def list_runs(request: Request) -> JSONResponse:
    status = query(request, "status")
    if status is not None and status not in RUN_STATUSES:
        raise invalid(["query", "status"], f"must be one of {', '.join(RUN_STATUSES)}")
    raw_limit = query(request, "limit") or "100"
    if not re.fullmatch(r"[0-9]{1,4}", raw_limit) or not 1 <= int(raw_limit) <= 1000:
        raise invalid(["query", "limit"], "must be an integer from 1 to 1000")
    rows = await services(request).wire.list_runs(status, query(request, "workflowName"), query(request, "queue"),
                                                  int(raw_limit))
    return answer({"runs": [render.run(r) for r in rows]})


async def get_run(request: Request) -> JSONResponse:
    svc = services(request)
    d = await svc.wire.detail(path(request, "run_id"))
    latest = {s["name"]: s for s in d.streams}
    run_stream = latest.get("run")
    stream_ids = {s["name"]: s["id"] for s in d.streams}
    state = None
    if run_stream is not None and run_stream["current_version"] > 0:
        state = {"runId": run_stream["run_id"], "stream": "run", "value": run_stream["current_value"],
                 "version": run_stream["current_version"], "updatedAt": render.ts(run_stream["updated_at"])}
    return answer({
        "run": render.run(d.run), "steps": [render.step(s) for s in d.steps], "state": state,
        "stateStreams": [render.stream(s) for s in d.streams],
        "stateVersions": [render.version(v, stream_ids.get(v["stream"])) for v in d.versions],
        "runEdges": [render.edge(e) for e in d.edges], "childRuns": [render.run(c) for c in d.children],
        "recoveryAttempts": [render.recovery(r) for r in d.recoveries],
        "channels": [render.channel(h, d.run) for h in d.run.get("webhooks") or [] if h.get("kind") == "channel"],
        "channelDeliveries": [render.delivery(r) for r in d.deliveries],
        "gates": [render.gate(g, svc.public_url) for g in d.gates], "usage": [render.usage(u) for u in d.usage],
        "events": [render.event(e, svc.public_url) for e in d.events],
    })


async def begin(request: Request) -> JSONResponse:
    owner = request.headers.get("x-tidebase-worker") or str(uuid.uuid4())
    problem = check("x-tidebase-worker", Field("owner"), owner)
    if problem:
        raise invalid(["headers", "x-tidebase-worker"], problem)
    row = await services(request).wire.begin(path(request, "run_id"), owner)
    return answer({"run": render.run(row), "leaseOwner": owner})


async def heartbeat(request: Request) -> JSONResponse:
    b = await body(request, "heartbeat")
    row = await services(request).wire.heartbeat(path(request, "run_id"), b["leaseOwner"])
    return answer({"run": render.run(row)})


async def complete(request: Request) -> JSONResponse:
    b = await body(request, "complete")
    row = await services(request).wire.complete(path(request, "run_id"), b.get("leaseOwner"), b.get("result"))
    return answer({"run": render.run(row)})


async def fail(request: Request) -> JSONResponse:
    b = await body(request, "fail")
    error = b.get("error", {})
    row = await services(request).wire.fail(path(request, "run_id"), b.get("leaseOwner"), error,
                                            b.get("failureClass"))
    return answer({"run": render.run(row), "requeued": row["status"] == "queued"})


async def cancel(request: Request) -> JSONResponse:
    b = await body(request, "cancel")
    row = await services(request).wire.cancel(path(request, "run_id"), b.get("reason"), b.get("actor"))
    return answer({"run": render.run(row)})


async def recover(request: Request) -> JSONResponse:
    b = await body(request, "recover")
    row = await services(request).wire.recover(path(request, "run_id"), b.get("reason") or "manual")
    return answer({"recoveryAttempt": render.recovery(row)}, 202)


async def children(request: Request) -> JSONResponse:
    b = await body(request, "children")
    edge_meta = b.get("edgeMetadata") or {}
    child, edge, created = await services(request).wire.create_child(
        path(request, "run_id"), b["name"], b["workflowName"], b.get("input"), b.get("edgeType") or "child",
        edge_meta, "run_" + secrets.token_hex(16), b.get("metadata") or {}, channels=b.get("channels"),
        recovery_webhook=b.get("recoveryWebhook"))
    return answer({"run": render.run(child), "edge": render.edge(edge), "created": created})


ROUTES = [
    Route("/runs", list_runs, methods=["GET"]),
    Route("/runs/{run_id}", get_run, methods=["GET"]),
    Route("/runs/{workflow}", create_run, methods=["POST"]),
    Route("/runs/{run_id}/begin", begin, methods=["POST"]),
    Route("/runs/{run_id}/heartbeat", heartbeat, methods=["POST"]),
    Route("/runs/{run_id}/complete", complete, methods=["POST"]),
    Route("/runs/{run_id}/fail", fail, methods=["POST"]),
    Route("/runs/{run_id}/cancel", cancel, methods=["POST"]),
    Route("/runs/{run_id}/recover", recover, methods=["POST"]),
    Route("/runs/{run_id}/children", children, methods=["POST"]),
]
