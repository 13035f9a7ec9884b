"""Queue and schedule routes: enqueue, claim, list, config (docs/http-api.md#queues); schedules put, list, delete
(docs/http-api.md#schedules). Dispatch rules (caps, dedupe, claim order, deadlines) live in SQL (migrations 0004 and
0005)."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidebase.core import rules as _base
from tidebase.ops import cron, render
from tidebase.server.common import answer, body, path, services
from tidebase.server.errors import invalid
from tidebase.server.schemas import Field, check, parse_body, timestamp


def _name(request: Request, param: str, what: str) -> str:
    value = path(request, param)
    problem = check(what, Field("name"), value)
    if problem:
        raise invalid(["path", what], problem)
    return value


async def enqueue(request: Request) -> JSONResponse:
    queue = _name(request, "queue", "queue")
    b = await body(request, "enqueue")
    row, deduplicated = await services(request).wire.enqueue(
        queue, b["workflowName"], b.get("input"), b.get("metadata") or {}, run_id=_base.new_run_id(),
        channels=b.get("channels"), recovery_webhook=b.get("recoveryWebhook"), dedupe_key=b.get("dedupeKey"),
        run_at=timestamp(b["runAt"]) if "runAt" in b else None, delay_ms=b.get("delayMs", 0),
        max_attempts=b.get("maxAttempts", 1), priority=b.get("priority", 0), deadline_ms=b.get("deadlineMs"))
    return answer({"run": render.run(row), "deduplicated": deduplicated})


async def claim(request: Request) -> JSONResponse:
    b = await body(request, "claim")
    owner = b.get("leaseOwner") or str(uuid.uuid4())
    rows = await services(request).wire.claim(b["queues"], owner, b.get("limit", 1))  # SQL ignores duplicates
    return answer({"runs": [render.run(r) for r in rows], "leaseOwner": owner})


async def list_queues(request: Request) -> JSONResponse:
    rows = await services(request).wire.queue_stats()
    return answer({"queues": [render.queue_stat(r) for r in rows]})


async def configure_queue(request: Request) -> JSONResponse:
    queue = _name(request, "queue", "queue")
    valid = await body(request, "queue_config")  # the non-null values, checked and typed
    raw = parse_body(await request.body())  # which keys were sent at all: an explicit null clears
    fields: dict[str, Any] = {k: valid.get(k) for k in ("concurrency", "ratePerMinute", "invokeUrl") if k in raw}
    row = await services(request).wire.configure_queue(queue, fields)
    return answer({"config": render.queue_config(row)})


async def put_schedule(request: Request) -> JSONResponse:
    name = _name(request, "name", "name")
    b = await body(request, "schedule")
    wire = services(request).wire
    now = await wire.now()
    try:
        next_run_at = cron.parse(b["cron"]).next_after(now)
    except cron.CronError as exc:
        raise invalid(["cron"], str(exc)) from None
    row = await wire.set_schedule(name, b["cron"], b["workflowName"], b.get("input"), b.get("queue") or "default",
                                  b.get("maxAttempts", 1), b.get("enabled", True), next_run_at)
    return answer({"schedule": render.schedule(row)})


async def list_schedules(request: Request) -> JSONResponse:
    rows = await services(request).wire.list_schedules()
    return answer({"schedules": [render.schedule(r) for r in rows]})


async def delete_schedule(request: Request) -> JSONResponse:
    name = path(request, "name")
    await services(request).wire.delete_schedule(name)
    return answer({"deleted": name})


ROUTES = [
    Route("/queues", list_queues, methods=["GET"]),
    Route("/queues/claim", claim, methods=["POST"]),
    Route("/queues/{queue}/enqueue", enqueue, methods=["POST"]),
    Route("/queues/{queue}/config", configure_queue, methods=["PUT"]),
    Route("/schedules", list_schedules, methods=["GET"]),
    Route("/schedules/{name}", put_schedule, methods=["PUT"]),
    Route("/schedules/{name}", delete_schedule, methods=["DELETE"]),
]
