"""The Studio's write actions: cancel, fork, release or skip a parked step, decide a gate, pause or resume a schedule.

Each is an HTML form POST (it works without JavaScript) that the guard has already checked for origin and CSRF
token, and each calls the same public library method a Python user would (`tide.runs.cancel`, `tide.runs.fork`,
`tide.runs.release_step` / `skip_step`, `tide.gates.resolve`, `tide.schedules.pause` / `resume`), with the signed-in
person's name as the actor. The answer is a redirect (303) to the page that shows the outcome, read back from the
database: a gate someone else decided first shows who did and what they decided.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tidebase.errors import GateAlreadyResolved, InvalidArgument
from tidebase.server.common import path
from tidebase.server.studio.guard import session_of
from tidebase.server.studio.pages import page, tide, url_part

MAX_COMMENT = 2000


async def form(request: Request) -> dict[str, str]:
    """The fields of an urlencoded form body (the Studio's forms send nothing else)."""
    body = await request.body()
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def back_to(request: Request, fields: dict[str, str], default: str) -> str:
    """Where to go after the action: the form's `back` when it is a Studio path (never another site), else
    `default`."""
    base = request.scope.get("root_path", "")
    target = fields.get("back", "")
    if target.startswith(base + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


def _see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _run_url(request: Request, run_id: str) -> str:
    return f"{request.scope.get('root_path', '')}/runs/{url_part(run_id)}"


@page
async def cancel(request: Request) -> Response:
    run_id = path(request, "run_id")
    fields = await form(request)
    reason = fields.get("reason", "").strip()[:MAX_COMMENT] or None
    await tide(request).runs.cancel(run_id, reason=reason, actor=session_of(request.scope).name)
    return _see(back_to(request, fields, _run_url(request, run_id)))


@page
async def fork(request: Request) -> Response:
    run_id = path(request, "run_id")
    fields = await form(request)
    forked = await tide(request).runs.fork(run_id, fields.get("step", ""))
    return _see(_run_url(request, forked.id))


@page
async def release(request: Request) -> Response:
    run_id = path(request, "run_id")
    fields = await form(request)
    await tide(request).runs.release_step(run_id, fields.get("key", ""), actor=session_of(request.scope).name,
                                          reason=fields.get("reason", "").strip()[:MAX_COMMENT] or None)
    return _see(_run_url(request, run_id) + "#steps")


@page
async def skip(request: Request) -> Response:
    run_id = path(request, "run_id")
    fields = await form(request)
    text = fields.get("output", "").strip() or "null"
    try:
        output = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"the output to skip with must be JSON: {exc}") from None
    await tide(request).runs.skip_step(run_id, fields.get("key", ""), output, actor=session_of(request.scope).name,
                                       reason=fields.get("reason", "").strip()[:MAX_COMMENT] or None)
    return _see(_run_url(request, run_id) + "#steps")


@page
async def resolve_gate(request: Request) -> Response:
    """Approve or reject a gate with an optional comment (stored as the decision payload `{"comment": ...}`)."""
    gate_id = path(request, "gate_id")
    fields = await form(request)
    decision = fields.get("decision", "")
    comment = fields.get("comment", "").strip()[:MAX_COMMENT]
    base = request.scope.get("root_path", "")
    back = back_to(request, fields, f"{base}/gates")
    outcome = "decided"
    try:
        await tide(request).gates.resolve(gate_id, decision, actor=session_of(request.scope).name,
                                          payload={"comment": comment} if comment else None)
    except GateAlreadyResolved:
        outcome = "taken"
    sep = "&" if "?" in back else "?"
    return _see(f"{back}{sep}{urlencode({outcome: gate_id})}")


@page
async def pause_schedule(request: Request) -> Response:
    fields = await form(request)
    await tide(request).schedules.pause(fields.get("name", ""))
    return _see(f"{request.scope.get('root_path', '')}/schedules")


@page
async def resume_schedule(request: Request) -> Response:
    fields = await form(request)
    await tide(request).schedules.resume(fields.get("name", ""))
    return _see(f"{request.scope.get('root_path', '')}/schedules")
