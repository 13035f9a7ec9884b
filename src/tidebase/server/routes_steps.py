"""Step routes: begin (the `action` protocol), complete, fail, review (docs/http-api.md#steps)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidebase.errors import ManualReviewRequired
from tidebase.ops import render
from tidebase.server.common import answer, body, path, services
from tidebase.server.errors import HttpError


def _needs_review(row: dict[str, Any] | None) -> HttpError:
    """409 step_needs_review with the parked step (docs/http-api.md#errors)."""
    return HttpError(409, "step_needs_review", "step needs manual review",
                     step=None if row is None else render.step(row))


async def begin_step(request: Request) -> JSONResponse:
    b = await body(request, "begin_step")
    run_id = path(request, "run_id")
    owner = b.get("leaseOwner")
    wire = services(request).wire
    try:
        action, row = await wire.begin_step(run_id, owner, b["name"], b["inputHash"], b.get("input"),
                                            b.get("options") or {})
    except ManualReviewRequired:
        parked = await wire.step_by_name(run_id, b["name"])
        raise _needs_review(parked) from None
    if action == "cancelled" or row is None:
        return answer({"action": "cancelled"})
    step = render.step(row)
    if action == "parked":
        raise _needs_review(row)
    if action == "input_mismatch":
        return answer({"action": action, "step": step, "expectedInputHash": row["input_hash"],
                       "actualInputHash": b["inputHash"]})
    if action == "return":
        return answer({"action": action, "step": step, "output": row["output"]})
    if action == "locked":
        return answer({"action": action, "step": step})
    return answer({"action": "execute", "step": step, "leaseOwner": owner})


async def complete_step(request: Request) -> JSONResponse:
    b = await body(request, "complete_step")
    row = await services(request).wire.complete_step(path(request, "run_id"), path(request, "step_id"),
                                                     b["leaseOwner"], b.get("output"))
    return answer({"step": render.step(row)})


async def fail_step(request: Request) -> JSONResponse:
    b = await body(request, "fail_step")
    row = await services(request).wire.fail_step(path(request, "run_id"), path(request, "step_id"),
                                                 b["leaseOwner"], b.get("error"), bool(b.get("retryable", False)),
                                                 b.get("resumeDecision"))
    return answer({"step": render.step(row)})


async def review_step(request: Request) -> JSONResponse:
    b = await body(request, "review_step")
    row = await services(request).wire.review_step(path(request, "run_id"), path(request, "step_id"), b["action"],
                                                   b.get("output"), b.get("actor"), b.get("reason"))
    return answer({"step": render.step(row)})


ROUTES = [
    Route("/runs/{run_id}/steps/begin", begin_step, methods=["POST"]),
    Route("/runs/{run_id}/steps/{step_id}/complete", complete_step, methods=["POST"]),
    Route("/runs/{run_id}/steps/{step_id}/fail", fail_step, methods=["POST"]),
    Route("/runs/{run_id}/steps/{step_id}/review", review_step, methods=["POST"]),
]
