"""The gates inbox (`/studio/gates`): pending gates across runs, oldest first, and the history of decisions.

Pending gates come from `tide.gates.list("pending")` (the partial index of pending gates), decisions from
`tide.insights.decisions()`. After a decision the page names the gate that was just decided, or, when someone else
decided it first, who did and what they decided, read back from the database (the one winner of `resolve`).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from tidebase.errors import NotFound
from tidebase.server.common import query
from tidebase.server.studio.pages import page, render, tide

INBOX = 100
HISTORY = 50


@page
async def gates(request: Request) -> Response:
    t = tide(request)
    pending, decisions = await asyncio.gather(t.gates.list("pending", limit=INBOX), t.insights.decisions(HISTORY))
    notice = None
    for outcome in ("decided", "taken"):
        gate_id = query(request, outcome)
        if gate_id:
            try:
                notice = {"outcome": outcome, "gate": await t.gates.get(gate_id)}
            except NotFound:
                notice = None
    return render(request, "gates.html", title="Gates", nav="gates", pending=pending, decisions=decisions,
                  notice=notice, now=datetime.now(UTC))
