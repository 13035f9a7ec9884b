"""State, snapshot and usage routes (docs/http-api.md#state)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidebase.errors import StepNotFound
from tidebase.ops import render
from tidebase.server.common import answer, body, path, query, services
from tidebase.server.errors import invalid
from tidebase.server.schemas import Field, check


async def _write(request: Request, mode: str) -> JSONResponse:
    b = await body(request, "state")
    stream = b.get("stream") or "run"
    value = b.get("value", {})
    row, stream_id = await services(request).wire.write_state(
        path(request, "run_id"), mode, stream, value, label=b.get("label"), reason=b.get("reason"),
        importance=b.get("importance"), metadata=b.get("metadata"), created_by=b.get("createdBy"))
    return answer({"state": render.state(row, stream), "stateVersion": render.version(row, stream_id)})


async def put_state(request: Request) -> JSONResponse:
    return await _write(request, "set")


async def patch_state(request: Request) -> JSONResponse:
    return await _write(request, "patch")


async def save_state(request: Request) -> JSONResponse:
    b = await body(request, "save")
    row, stream_id = await services(request).wire.write_state(
        path(request, "run_id"), "save", b.get("stream") or "run", None, label=b["label"], reason=b.get("reason"),
        importance=b.get("importance"), metadata=b.get("metadata"), created_by=b.get("createdBy"))
    return answer({"stateVersion": render.version(row, stream_id)})


async def versions(request: Request) -> JSONResponse:
    labeled = request.query_params.get("labeled", "false")
    if labeled not in ("true", "false"):
        raise invalid(["query", "labeled"], "must be true or false")
    rows = await services(request).wire.versions(path(request, "run_id"), query(request, "stream"),
                                                 labeled == "true")
    return answer({"stateVersions": [render.version(r) for r in rows]})


async def create_snapshot(request: Request) -> JSONResponse:
    b = await body(request, "snapshot")
    run_id = path(request, "run_id")
    target: Any = b.get("target")
    if target is not None:
        for key in ("type", "id"):
            problem = "is required" if target.get(key) is None else check(key, Field("name"), target[key])
            if problem:
                raise invalid(["target", key], problem)
        kind, ident = str(target["type"]), str(target["id"])
    else:
        kind, ident = "run", run_id
    row, stream_id = await services(request).wire.write_state(
        run_id, "snapshot", f"{kind}:{ident}", b.get("state", {}), label=b["label"], reason=b.get("reason"),
        importance="milestone", metadata=b.get("metadata"), created_by=b.get("createdBy"), target=(kind, ident))
    return answer({"snapshot": render.version(row, stream_id)})


async def list_snapshots(request: Request) -> JSONResponse:
    rows = await services(request).wire.snapshots(path(request, "run_id"))
    return answer({"snapshots": [render.version(r) for r in rows]})


async def record_usage(request: Request) -> JSONResponse:
    b = await body(request, "usage")
    fields = {"kind": b.get("kind"), "provider": b.get("provider"), "model": b.get("model"), "label": b.get("label"),
              "unit": b.get("unit"), "quantity": b.get("quantity"), "input_tokens": b.get("inputTokens"),
              "output_tokens": b.get("outputTokens"), "total_tokens": b.get("totalTokens"),
              "cost_usd": b.get("costUsd"), "metadata": b.get("metadata")}
    try:
        row = await services(request).wire.record_usage(path(request, "run_id"), b.get("stepId"), fields)
    except StepNotFound:
        raise invalid(["stepId"], "must name a step of this run") from None
    return answer({"usage": render.usage(row)})


ROUTES = [
    Route("/runs/{run_id}/state", put_state, methods=["PUT"]),
    Route("/runs/{run_id}/state", patch_state, methods=["PATCH"]),
    Route("/runs/{run_id}/state/save", save_state, methods=["POST"]),
    Route("/runs/{run_id}/state/versions", versions, methods=["GET"]),
    Route("/runs/{run_id}/snapshots", create_snapshot, methods=["POST"]),
    Route("/runs/{run_id}/snapshots", list_snapshots, methods=["GET"]),
    Route("/runs/{run_id}/usage", record_usage, methods=["POST"]),
]
