"""A run's page (`/studio/runs/{id}`), the fragments that keep it live, its event stream, and a step's raw output.

The page is a set of parts (header, steps, state, gates, usage, webhooks), each a template of its own. The first
load renders them all; afterwards the page's script re-fetches only the parts an event concerns
(`/runs/{id}/part/{name}`), so the server stays the only renderer. Events arrive over the same SSE stream code as
`GET /runs/{id}/events` (`server/sse.py`), on a Studio route that the session cookie admits: the API key never
reaches the browser. Every read is one run's index range; steps come in pages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tidebase.client_async import AsyncTidebase
from tidebase.errors import NotFound
from tidebase.models import Step
from tidebase.ops.render import event as render_event
from tidebase.server import sse
from tidebase.server.common import path, query, services
from tidebase.server.errors import invalid
from tidebase.server.studio.pages import duration, fragment, page, render, studio, tide

STEP_PAGE = 200
EVENTS_SHOWN = 200
VERSIONS_SHOWN = 100
USAGE_STEPS = 50
DIGITS = re.compile(r"[0-9]{1,18}")
SECRET_TEXT = re.compile(r"(resolve_?token|secret|authorization)(\W{1,4})[^\s\"',&}]{6,}", re.IGNORECASE)


def offset_of(request: Request) -> int:
    raw = query(request, "steps") or "0"
    return int(raw) if raw.isdigit() else 0


async def _header(t: AsyncTidebase, run_id: str, request: Request) -> dict[str, Any]:
    return {"ov": await t.insights.overview(run_id)}


async def _steps(t: AsyncTidebase, run_id: str, request: Request) -> dict[str, Any]:
    offset = offset_of(request)
    ov, steps = await asyncio.gather(t.insights.overview(run_id), t.insights.steps(run_id, offset=offset,
                                                                                   limit=STEP_PAGE))
    start = ov.run.started_at if offset == 0 else None
    return {"ov": ov, "steps": steps, "offset": offset, "step_page": STEP_PAGE,
            "durations": step_durations(steps, start)}


def step_durations(steps: list[Step], start: datetime | None) -> dict[str, str]:
    """How long each step took: from its start marker to completion when it has one (side-effecting steps), else
    (`≈`) the time since the previous step completed, which is what a pure step's run took when steps are
    sequential."""
    out: dict[str, str] = {}
    previous = start
    for s in steps:
        if s.started_at is not None and s.completed_at is not None and s.started_at < s.completed_at:
            out[s.key] = duration((s.completed_at - s.started_at).total_seconds())
        elif s.completed_at is not None and previous is not None and previous <= s.completed_at:
            out[s.key] = "≈ " + duration((s.completed_at - previous).total_seconds())
        previous = s.completed_at or previous
    return out


async def _state(t: AsyncTidebase, run_id: str, request: Request) -> dict[str, Any]:
    streams, versions, snapshots = await asyncio.gather(
        t.insights.streams(run_id), t.insights.versions(run_id, limit=VERSIONS_SHOWN), t.insights.snapshots(run_id))
    return {"streams": streams, "versions": versions, "snapshots": snapshots,
            "live": next((s for s in streams if s.name == "run"), None)}


async def _gates(t: AsyncTidebase, run_id: str, request: Request) -> dict[str, Any]:
    return {"gates": await t.gates.list(status=None, run_id=run_id, limit=1000)}


async def _usage(t: AsyncTidebase, run_id: str, request: Request) -> dict[str, Any]:
    usage, (spent, saved) = await asyncio.gather(t.insights.step_usage(run_id, limit=USAGE_STEPS),
                                                 t.insights.usage_totals(run_id))
    return {"usage": usage, "usage_spent": spent, "usage_saved": saved, "usage_steps": USAGE_STEPS}


async def _webhooks(t: AsyncTidebase, run_id: str, request: Request) -> dict[str, Any]:
    recoveries, deliveries = await asyncio.gather(t.runs.recoveries(run_id), t.runs.deliveries(run_id))
    return {"recoveries": recoveries, "deliveries": [safe_delivery(d) for d in deliveries]}


Loader = Callable[[AsyncTidebase, str, Request], Awaitable[dict[str, Any]]]
PARTS: dict[str, Loader] = {"header": _header, "steps": _steps, "state": _state, "gates": _gates, "usage": _usage,
                            "webhooks": _webhooks}


def origin_only(url: str | None) -> str:
    """A webhook URL without its path and query, which often carry a token (`https://hooks.example/…`)."""
    if not url:
        return "—"
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/…"


def redact(text: str | None, limit: int = 500) -> str | None:
    """A receiver's answer as shown: cut to `limit` characters, and anything that looks like a token or secret
    value (after `resolveToken`, `secret`, `authorization`) replaced, in case the receiver echoed our request."""
    if text is None:
        return None
    shown = SECRET_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
    return shown if len(shown) <= limit else shown[:limit] + "…"


def safe_delivery(row: dict[str, Any]) -> dict[str, Any]:
    """The columns of an outbox row that a page may show: never its secret, body (which may carry a resolve token)
    or full URL."""
    return {"id": row.get("public_id") or row["id"], "kind": row["kind"], "event_type": row["event_type"],
            "url": origin_only(row.get("url")), "status": row["status"], "attempts": row["attempts"],
            "http_status": row.get("http_status"), "response": redact(row.get("response_body")),
            "error": redact(row.get("last_error")), "created_at": row["created_at"],
            "completed_at": row.get("completed_at") or row.get("delivered_at"),
            "next_attempt_at": row["next_attempt_at"] if row["status"] == "pending" else None}


@page
async def run_page(request: Request) -> Response:
    t = tide(request)
    run_id = path(request, "run_id")
    ov = await t.insights.overview(run_id)
    parts, recent = await asyncio.gather(
        asyncio.gather(*(loader(t, run_id, request) for name, loader in PARTS.items() if name != "header")),
        t.insights.recent_events(run_id, EVENTS_SHOWN))
    context: dict[str, Any] = {"ov": ov}
    for part in parts:
        context.update(part)
    # the same public form as the SSE stream sends, so the page and the stream show events alike
    events = [render_event(dataclasses.asdict(e), studio(request).public_url) for e in recent]
    return render(request, "run.html", title=f"Run {run_id}", nav="runs", run=ov.run, events=events,
                  last_seq=events[-1]["seq"] if events else 0, **context)


@page
async def run_part(request: Request) -> Response:
    name = path(request, "part")
    loader = PARTS.get(name)
    if loader is None:
        raise NotFound(f"no part {name!r}")
    run_id = path(request, "run_id")
    t = tide(request)
    context = await loader(t, run_id, request)
    if "ov" not in context:
        context["ov"] = await t.insights.overview(run_id)
    context.setdefault("run", context["ov"].run)
    return fragment(request, f"part_{name}.html", **context)


async def run_events(request: Request) -> Response:
    """The run's events as SSE, exactly as `GET /runs/{id}/events` streams them (same code, same doorbell)."""
    svc = services(request)
    run_id = path(request, "run_id")
    positions = [query(request, "after") or "0", request.headers.get("last-event-id", "").strip() or "0"]
    for where, value in zip((["after"], ["headers", "last-event-id"]), positions, strict=True):
        if not DIGITS.fullmatch(value):
            raise invalid(list(where), "must be a non-negative integer")
    await svc.wire.require_run(run_id)
    body = sse.stream(svc.wire, svc.bell, run_id, max(int(p) for p in positions), svc.keepalive_s, svc.public_url)
    return StreamingResponse(body, media_type="text/event-stream; charset=utf-8",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


@page
async def step_output(request: Request) -> Response:
    """A step's stored output (or error) as raw JSON, for values too large to show whole in the timeline."""
    step = await tide(request).insights.step(path(request, "run_id"), query(request, "key") or "")
    return JSONResponse({"key": step.key, "status": step.status, "output": step.output, "error": step.error})
