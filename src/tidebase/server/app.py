"""`create_app()`: the Starlette application of `tidebase serve` (wire-api.md).

A thin layer (STYLE P10): handlers parse, call `tidebase.wire_async`, and serialise; one exception handler turns
every error into the JSON answer of `errors.STATUS`; authentication, the body limit, CORS and raw-path routing are
pure-ASGI middleware. The lifespan opens one database pool and one event doorbell per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo
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
from tidebase.ops import render
from tidebase.server import openapi, routes_gates, routes_queues, routes_runs, routes_state, routes_steps, sse, studio
from tidebase.server.background import background
from tidebase.server.common import Services, path, path_or_none, services
from tidebase.server.errors import WITH_RUN, invalid, lookup
from tidebase.server.http_engine import AsyncWire
from tidebase.server.middleware import Auth, BodyLimit, CloseUnread, Cors, RawPath

log = logging.getLogger("tidebase.server")
DIGITS = re.compile(r"[0-9]{1,18}")

OUT_OF_SCOPE = ["/agents", "/agents/{a}/challenge", "/agents/{a}/prove", "/agents/{a}", "/resources",
                "/resources/{r}/revoke", "/runs/{run_id}/grants", "/runs/{run_id}/grants/{g}/use",
                "/runs/{run_id}/grants/{g}/revoke", "/audit"]


@dataclass
class Settings:
    """What the server reads from the environment (wire §2.9)."""

    dsn: str | None = None
    api_key: str | None = None
    cors_origin: str = "*"
    public_url: str = "http://localhost:7373"
    lease_ms: int = 60000
    max_body_bytes: int = 8388608
    body_timeout_ms: int = 30000  # from the end of the headers to the end of the body, else 408
    keepalive_timeout_ms: int = 5000  # an idle HTTP connection is closed after it (applied by `tidebase serve`)
    keepalive_ms: int = 15000
    pool_max: int = 20
    reconciler: bool = True
    reconcile_ms: int = 5000
    webhook_secret: str | None = None
    webhook_timeout_ms: int = 10000
    webhook_max_attempts: int = 10
    max_auto_recoveries: int | None = None

    @classmethod
    def from_env(cls, port: int = 7373, dsn: str | None = None) -> Settings:
        env = os.environ
        return cls(
            dsn=dsn, api_key=env.get("TIDEBASE_API_KEY") or None,
            cors_origin=env.get("TIDEBASE_CORS_ORIGIN", "*"),
            public_url=(env.get("TIDEBASE_PUBLIC_URL") or f"http://localhost:{port}").rstrip("/"),
            lease_ms=int(env.get("TIDEBASE_LEASE_MS", "60000")),
            max_body_bytes=int(env.get("TIDEBASE_MAX_BODY_BYTES", "8388608")),
            body_timeout_ms=int(env.get("TIDEBASE_BODY_TIMEOUT_MS", "30000")),
            keepalive_timeout_ms=int(env.get("TIDEBASE_KEEPALIVE_TIMEOUT_MS", "5000")),
            keepalive_ms=int(env.get("TIDEBASE_SSE_KEEPALIVE_MS", "15000")),
            pool_max=int(env.get("TIDEBASE_SERVER_POOL_MAX", "20")),
            reconciler=env.get("TIDEBASE_RECONCILER", "1") != "0",
            reconcile_ms=int(env.get("TIDEBASE_RECONCILE_MS", "5000")),
            webhook_secret=env.get("TIDEBASE_WEBHOOK_SECRET") or None,
            webhook_timeout_ms=int(env.get("TIDEBASE_WEBHOOK_TIMEOUT_MS", "10000")),
            webhook_max_attempts=int(env.get("TIDEBASE_WEBHOOK_MAX_ATTEMPTS", "10")),
            max_auto_recoveries=int(env["TIDEBASE_MAX_AUTO_RECOVERIES"])
            if env.get("TIDEBASE_MAX_AUTO_RECOVERIES") else None,
        )


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

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dsn = resolve_dsn(cfg.dsn)
        if cfg.max_auto_recoveries is not None:  # read by tidebase.max_auto_recoveries() in every session
            options = conninfo_to_dict(dsn).get("options") or ""
            dsn = make_conninfo(dsn, options=f"{options} -c tidebase.max_auto_recoveries={cfg.max_auto_recoveries}")
        timeouts = Timeouts.from_env()
        db = await AsyncDatabase.connect(dsn, min_size=1, max_size=cfg.pool_max, timeouts=timeouts)
        try:
            await ensure_schema(db.pool, auto_migrate=True)
            bell = sse.Doorbell(dsn, timeouts=timeouts)
            bell.start()
            app.state.services = Services(AsyncWire(db, lease_ms=cfg.lease_ms), bell, cfg.public_url,
                                          cfg.keepalive_ms / 1000)
            try:
                async with background(dsn, db.pool, enabled=cfg.reconciler, period_ms=cfg.reconcile_ms,
                                      lease_ms=cfg.lease_ms, webhook_secret=cfg.webhook_secret,
                                      webhook_timeout_ms=cfg.webhook_timeout_ms,
                                      webhook_max_attempts=cfg.webhook_max_attempts,
                                      public_url=cfg.public_url):
                    yield
            finally:
                await bell.stop()
        finally:
            await db.close()

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/openapi.json", openapi.serve, methods=["GET"]),
        Route("/runs/{run_id}/events", events, methods=["GET"]),
        *routes_steps.ROUTES, *routes_gates.ROUTES, *routes_state.ROUTES, *routes_runs.ROUTES,
        *routes_queues.ROUTES,
        *(Route(p, not_found, methods=["GET", "POST"]) for p in OUT_OF_SCOPE),
        studio.ROOT, studio.mount(cfg.api_key, cfg.public_url, cfg.lease_ms),  # its own session auth: studio/guard.py
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: handle_http, TidebaseError: handle_error,
                                        Exception: handle_error, DatabaseError: handle_error})
    return CloseUnread(Cors(Auth(BodyLimit(RawPath(app), cfg.max_body_bytes, cfg.body_timeout_ms / 1000),
                                 cfg.api_key), cfg.cors_origin))
