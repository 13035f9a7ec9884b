"""Gate routes: begin, get, resolve (docs/http-api.md#gates). The resolve token leaves only in the creating answer."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidebase.ops import render
from tidebase.server.common import answer, body, path, services


async def begin_gate(request: Request) -> JSONResponse:
    b = await body(request, "begin_gate")
    # stored with their secrets, which sign the deliveries and are never rendered (render.gate shows hasSecret)
    channels = [{"type": "webhook", "url": c["url"], "events": c.get("events") or [],
                 **({"secret": c["secret"]} if c.get("secret") else {})} for c in b.get("channels") or []]
    svc = services(request)
    row, _created, token = await svc.wire.begin_gate(path(request, "run_id"), b["name"], b["prompt"], b.get("data"),
                                                    b.get("capability"), channels)
    action = "wait" if row["status"] == "pending" else "return"
    return answer({"action": action, "gate": render.gate(row, svc.public_url, token)})


async def get_gate(request: Request) -> JSONResponse:
    svc = services(request)
    row = await svc.wire.get_gate(path(request, "run_id"), path(request, "gate_id"))
    return answer({"gate": render.gate(row, svc.public_url), "runStatus": render.status(row["run_status"])})


async def resolve_gate(request: Request) -> JSONResponse:
    b = await body(request, "resolve_gate")
    svc = services(request)
    row = await svc.wire.resolve_gate(path(request, "run_id"), path(request, "gate_id"), b["decision"],
                                      b.get("token"), b.get("actor"), b.get("payload"))
    return answer({"gate": render.gate(row, svc.public_url)})


ROUTES = [
    Route("/runs/{run_id}/gates/begin", begin_gate, methods=["POST"]),
    Route("/runs/{run_id}/gates/{gate_id}", get_gate, methods=["GET"]),
    Route("/runs/{run_id}/gates/{gate_id}/resolve", resolve_gate, methods=["POST"]),
]
