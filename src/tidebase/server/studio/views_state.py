"""Time travel and diffs (`/studio/runs/{id}/state`): a run's state as it was, and what changed between two versions.

`?version=N`, `?label=L` or `?step=K` (with `stream`, default `run`) shows the state at that point, read with
`tide.runs.state_at`; `?a=N&b=M` shows the line diff of two versions' values. Both are plain GET forms, so every
view has a link of its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tidebase.errors import InvalidArgument
from tidebase.server.common import path, query
from tidebase.server.studio import jsonview
from tidebase.server.studio.pages import page, render, tide


def _version(request: Request, name: str) -> int | None:
    raw = query(request, name)
    if raw in (None, ""):
        return None
    if not raw.isdigit():
        raise InvalidArgument(f"{name} must be a version number")
    return int(raw)


@page
async def state(request: Request) -> Response:
    t = tide(request)
    run_id = path(request, "run_id")
    stream = query(request, "stream") or "run"
    ov, streams, snapshots, versions = await asyncio.gather(
        t.insights.overview(run_id), t.insights.streams(run_id), t.insights.snapshots(run_id),
        t.insights.versions(run_id, stream=stream, limit=200))
    context: dict[str, Any] = {"at": None, "diff": None}
    a, b = _version(request, "a"), _version(request, "b")
    if a is not None and b is not None:
        old, new = await asyncio.gather(t.runs.state_at(run_id, version=a, stream=stream),
                                        t.runs.state_at(run_id, version=b, stream=stream))
        context["diff"] = {"old": old, "new": new, "lines": jsonview.diff(old.value, new.value)}
    else:
        version, label, step = _version(request, "version"), query(request, "label"), query(request, "step")
        if version is not None or label or step:
            context["at"] = await t.runs.state_at(run_id, version=version, label=label or None, step=step or None,
                                                  stream=stream)
    return render(request, "state.html", title=f"State of {run_id}", nav="runs", run=ov.run, ov=ov, stream=stream,
                  streams=streams, snapshots=snapshots, versions=versions, query=request.query_params, **context)
