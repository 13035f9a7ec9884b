"""Operations pages: queues (`/studio/queues`), schedules (`/studio/schedules`) and usage (`/studio/usage`).

Queues come from `tide.queues.list()` (depth and running counts by index-only scans, caps and rate from the queue
config); schedules from `tide.schedules.list()` with each one's latest fires; usage from `tide.insights.usage_by_day`,
charted per day and workflow with what replays saved beside what was spent.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from tidebase.ops.insight_models import Totals
from tidebase.server.common import query
from tidebase.server.studio import chart
from tidebase.server.studio.pages import page, render, tide

FIRES_SHOWN = 5
RANGES = (7, 14, 30, 90)


@page
async def queues(request: Request) -> Response:
    return render(request, "queues.html", title="Queues", nav="queues", queues=await tide(request).queues.list())


@page
async def schedules(request: Request) -> Response:
    t = tide(request)
    items = await t.schedules.list()
    fires = await asyncio.gather(*(t.schedules.fires(s.name, FIRES_SHOWN) for s in items))
    return render(request, "schedules.html", title="Schedules", nav="schedules",
                  schedules=list(zip(items, fires, strict=True)))


@page
async def usage(request: Request) -> Response:
    raw = query(request, "days") or "14"
    days = int(raw) if raw.isdigit() and int(raw) in RANGES else 14
    metric = chart.TOKENS if query(request, "metric") == "tokens" else chart.COST
    t = tide(request)
    rows = await t.insights.usage_by_day(days)
    today = datetime.now(UTC).date()
    axis = [today - timedelta(days=days - 1 - i) for i in range(days)]
    by_workflow: dict[str, tuple[Totals, Totals]] = {}
    for r in rows:
        spent, saved = by_workflow.get(r.workflow, (Totals(), Totals()))
        by_workflow[r.workflow] = (spent + r.spent, saved + r.saved)
    spent_total = sum((v[0] for v in by_workflow.values()), Totals())
    saved_total = sum((v[1] for v in by_workflow.values()), Totals())
    return render(request, "usage.html", title="Usage", nav="usage", days=days, ranges=RANGES, metric=metric,
                  spent_chart=chart.stacked_bars(axis, rows, metric, title=f"Spent {metric.label} per day"),
                  saved_chart=chart.stacked_bars(axis, rows, metric, saved=True,
                                                 title=f"Saved by replay, {metric.label} per day"),
                  legend=chart.colours(sorted(by_workflow)), by_workflow=sorted(by_workflow.items()), rows=rows,
                  spent_total=spent_total, saved_total=saved_total)
