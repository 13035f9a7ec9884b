"""The runs list (`/studio/`) and its live pulse (`/studio/pulse`).

The list is `tide.runs.list`: newest first, keyset-paginated, filtered by status and workflow, each filter served by
an index. Counts per status are index-only counts; the workflow menu is a loose index scan. Live updates are a poll,
not a stream: the page asks `/pulse` once a second for the status and current step of the rows it shows (primary-key
probes, at most one page) and for the newest matching run (one index probe), so its cost per open tab does not grow
with the table. Counts are refreshed every fifth poll.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from tidebase.models import RUN_STATUSES, Run
from tidebase.ops.insight_models import RunPulse
from tidebase.server.common import query
from tidebase.server.studio.pages import page, render, tide, url_part

PAGE_SIZES = (20, 50, 100, 200)
STEP_WORDS = {"step.started": "running", "step.completed": "done", "step.failed": "failed",
              "step.reviewed": "reviewed"}


def current_step(pulse: RunPulse | None) -> dict[str, str] | None:
    if pulse is None or pulse.step_key is None:
        return None
    return {"key": pulse.step_key, "state": STEP_WORDS.get(pulse.step_event or "", "")}


def _filters(request: Request) -> dict[str, Any]:
    status = query(request, "status") or None
    workflow = query(request, "workflow") or None
    raw_limit = query(request, "limit") or "50"
    limit = int(raw_limit) if raw_limit.isdigit() and int(raw_limit) in PAGE_SIZES else 50
    if status is not None and status not in RUN_STATUSES:
        status = None
    return {"status": status, "workflow": workflow, "limit": limit}


@page
async def runs(request: Request) -> Response:
    t = tide(request)
    base = request.scope.get("root_path", "")
    found = (query(request, "q") or "").strip()
    if found and await t.insights.pulse([found]):
        return RedirectResponse(f"{base}/runs/{url_part(found)}", status_code=303)
    filters = _filters(request)
    cursor = query(request, "cursor") or None
    listing, counts, workflows = await asyncio.gather(
        t.runs.list(filters["status"], filters["workflow"], filters["limit"], cursor),
        t.insights.status_counts(), t.insights.workflows())
    pulses = {p.id: p for p in await t.insights.pulse([r.id for r in listing.runs])}
    rows = [{"run": r, "step": current_step(pulses.get(r.id))} for r in listing.runs]
    return render(request, "runs.html", title="Runs", nav="runs", rows=rows, counts=counts,
                  total=sum(counts.values()), statuses=RUN_STATUSES, workflows=workflows, filters=filters,
                  cursor=cursor, next_cursor=listing.next_cursor, missing=found or None, page_sizes=PAGE_SIZES,
                  query_for=lambda **kw: _query_string({**filters, **kw}))


def _query_string(params: dict[str, Any]) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


def pulse_json(p: RunPulse) -> dict[str, Any]:
    return {"id": p.id, "status": p.status, "attempt": p.attempt, "step": current_step(p),
            "updatedAt": p.updated_at.isoformat()}


@page
async def pulse(request: Request) -> Response:
    """JSON for the live list: the rows' pulses, the newest matching run, and (with counts=1) the counts."""
    t = tide(request)
    ids = [i for i in (query(request, "ids") or "").split(",") if i][:200]
    filters = _filters(request)
    calls: list[Any] = [t.insights.pulse(ids), t.runs.list(filters["status"], filters["workflow"], 1)]
    if query(request, "counts") == "1":
        calls.append(t.insights.status_counts())
    results = await asyncio.gather(*calls)
    newest: tuple[Run, ...] = results[1].runs
    body: dict[str, Any] = {"runs": [pulse_json(p) for p in results[0]],
                            "newest": newest[0].id if newest else None}
    if len(results) > 2:
        body["counts"] = results[2]
    return JSONResponse(body, headers={"cache-control": "no-store"})
