"""`create_app()`: the Starlette application of `tidebase serve` (docs/http-api.md).

A thin layer (STYLE P10): handlers parse, call `tidebase.server.http_engine`, and serialise; one exception handler turns
every error into the JSON answer of `errors.STATUS`; authentication, the body limit, CORS and raw-path routing are
pure-ASGI middleware. The lifespan opens one database pool and one event doorbell per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tidebase.core.connect import Timeouts
from tidebase.core.db_async import AsyncDatabase
from tidebase.core.dsn import resolve_dsn
from tidebase.core.migrate_async import ensure_schema
from tidebase.errors import DatabaseError, TidebaseError
from tidebase.mcp.http import HttpDoor
from tidebase.ops import render
from tidebase.ops.metrics import METRICS
from tidebase.server import (
    metrics,
    openapi,
    routes_gates,
    routes_queues,
    routes_runs,
    routes_state,
    routes_steps,
    sse,
    studio,
)
from tidebase.server.background import background
from tidebase.server.common import Services, path, path_or_none, services
from tidebase.server.errors import WITH_RUN, invalid, lookup
from tidebase.server.http_engine import AsyncWire
from tidebase.server.middleware import Auth, BodyLimit, CloseUnread, Cors, RawPath
from tidebase.settings import Settings

log = logging.getLogger("tidebase.server")
DIGITS = re.compile(r"[0-9]{1,18}")

OUT_OF_SCOPE = ["/agents", "/agents/{a}/challenge", "/agents/{a}/prove", "/agents/{a}", "/resources",
                "/resources/{r}/revoke", "/runs/{run_id}/grants", "/runs/{run_id}/grants/{g}/use",
                "/runs/{run_id}/grants/{g}/revoke", "/audit"]


async def handle_error(request: Request, exc: Exception) -> Response:
    """The JSON answer of `errors.lookup` for any error. It must not raise itself (an error escaping a handler is a
    bare 500), so it reads path parameters with `path_or_none`: the error may be that they are invalid."""
    status, code, message, extra = lookup(exc)
    body: dict[str, Any] = {"error": message, "code": code, **extra}
    headers = {}
    in_path = {name: path_or_none(request, name) for name in ("run_id", "step_id", "gate_id")}
    run_id = getattr(exc, "run_id", None) or in_path["run_id"]
    if code in WITH_RUN and isinstance(run_id, str):
        with contextlib.suppress(TidebaseError):
            body["run"] = render.run(await services(request).wire.get_run(run_id))
    with contextlib.suppress(TidebaseError):
        if code.startswith("step_") and code != "step_not_found" and in_path["run_id"] and in_path["step_id"]:
            step = await services(request).wire.get_step(in_path["run_id"], in_path["step_id"])
            body["step"] = None if step is None else render.step(step)
        if code == "gate_resolved" and in_path["run_id"] and in_path["gate_id"]:
            gate = await services(request).wire.get_gate(in_path["run_id"], in_path["gate_id"])
            body["gate"] = render.gate(gate, services(request).public_url)
    if status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse(body, status_code=status, headers=headers)


async def handle_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return JSONResponse({"error": "method not allowed", "code": "method_not_allowed"}, status_code=405,
                            headers=dict(exc.headers or {}))
    return JSONResponse({"error": "not found", "code": "not_found"}, status_code=404)


async def health(request: Request) -> JSONResponse:
    """Liveness, without a query: `database` is whether the event doorbell's connection is up right now."""
    return JSONResponse({"ok": True, "database": services(request).bell.connected.is_set()})


async def ready(request: Request) -> JSONResponse:
    try:
        await asyncio.wait_for(services(request).wire.health(), timeout=5)
    except (TidebaseError, TimeoutError) as exc:
        return JSONResponse({"ok": False, "error": f"database unavailable ({type(exc).__name__})",
                             "code": "unavailable"}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"ok": True, "database": True})


async def not_found(request: Request) -> JSONResponse:
    return JSONResponse({"error": "not found", "code": "not_found"}, status_code=404)


async def events(request: Request) -> Response:
    svc = services(request)
    run_id = path(request, "run_id")
    positions = [request.query_params.get("after", "0"), request.headers.get("last-event-id", "").strip() or "0"]
    for where, value in zip((["query", "after"], ["headers", "last-event-id"]), positions, strict=True):
        if not DIGITS.fullmatch(value):
            raise invalid(list(where), "must be a non-negative integer")
    await svc.wire.require_run(run_id)
    body = sse.stream(svc.wire, svc.bell, run_id, max(int(p) for p in positions), svc.keepalive_s, svc.public_url)
    return StreamingResponse(body, media_type="text/event-stream; charset=utf-8",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


def create_app(settings: Settings | None = None) -> Any:
    """The ASGI application; `settings` default to the environment."""
    cfg = settings or Settings.from_env()
    METRICS.max_workflows = cfg.metrics_max_workflows  # the HTTP door's runs are labelled under the same cap
    public_url = cfg.resolved_public_url
    lease_ms = int(cfg.http_lease_seconds * 1000)
    mcp_door = HttpDoor(cfg)  # /mcp (docs/mcp.md), when the `mcp` extra is installed

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dsn = resolve_dsn(cfg.database_url)
        timeouts = Timeouts(connect=cfg.connect_timeout_seconds, statement=cfg.statement_timeout_seconds)
        db = await AsyncDatabase.connect(dsn, min_size=1, max_size=cfg.server_pool_max_size, timeouts=timeouts)
        try:
            await ensure_schema(db.pool, auto_migrate=True)
            bell = sse.Doorbell(dsn, timeouts=timeouts)
            bell.start()
            wire = AsyncWire(db, lease_ms=lease_ms, max_auto_recoveries=cfg.max_auto_recoveries)
            app.state.services = Services(wire, bell, public_url, cfg.sse_keepalive_seconds)
            try:
                async with background(dsn, db.pool, cfg), mcp_door.running(db.pool):
                    yield
            finally:
                await bell.stop()
        finally:
            await db.close()

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        metrics.ROUTE,  # docs/operations.md#metrics: behind the API key unless TIDEBASE_METRICS_PUBLIC=1
        Route("/openapi.json", openapi.serve, methods=["GET"]),
        Route("/runs/{run_id}/events", events, methods=["GET"]),
        *routes_steps.ROUTES, *routes_gates.ROUTES, *routes_state.ROUTES, *routes_runs.ROUTES,
        *routes_queues.ROUTES, *mcp_door.routes,
        *(Route(p, not_found, methods=["GET", "POST"]) for p in OUT_OF_SCOPE),
        # the Studio has its own session auth (studio/guard.py)
        studio.ROOT, studio.mount(cfg.api_key, public_url, lease_ms, secret=cfg.studio_secret),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: handle_http, TidebaseError: handle_error,
                                        Exception: handle_error, DatabaseError: handle_error})
    return metrics.public(CloseUnread(Cors(Auth(BodyLimit(RawPath(app), cfg.max_body_bytes, cfg.body_timeout_seconds),
                                                cfg.api_key), cfg.cors_origin)), app, cfg.metrics_public)
