"""Signing in and out of the Studio (`/studio/login`, `/studio/logout`).

The login form asks for the API key (when the server has one) and a display name, recorded as the actor of the
person's decisions. The key is compared in constant time and never echoed; a wrong key costs a short pause, which
slows guessing without holding a worker. In open (loopback) mode there is no key and the form only sets the name.
The form is protected by a double-submit nonce (cookie + field), checked by the guard with the Origin.
"""

from __future__ import annotations

import asyncio
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tidebase.core.rules import check_name
from tidebase.errors import InvalidArgument
from tidebase.server.common import query
from tidebase.server.studio.actions import back_to, form
from tidebase.server.studio.guard import SCOPE_KEY
from tidebase.server.studio.pages import ENV, studio
from tidebase.server.studio.session import COOKIE, LOCAL_NAME, LOGIN_COOKIE, TTL_S, cookie_header

WRONG_KEY_PAUSE_S = 0.5
MAX_NAME = 64


def _login_page(request: Request, *, status: int = 200, error: str | None = None, name: str = "",
                target: str = "") -> Response:
    nonce = secrets.token_urlsafe(16)
    base = request.scope.get("root_path", "")
    html = ENV.get_template("login.html").render(
        base=base, title="Sign in", keyed=studio(request).sessions.keyed, error=error, name=name, nonce=nonce,
        next=target, session=request.scope.get(SCOPE_KEY))
    response = Response(html, status_code=status, media_type="text/html; charset=utf-8")
    response.headers.append("set-cookie", cookie_header(LOGIN_COOKIE, nonce, path=base or "/",
                                                        secure=_secure(request), max_age=600).decode("latin-1"))
    return response


def _secure(request: Request) -> bool:
    return studio(request).public_url.lower().startswith("https://") or request.url.scheme == "https"


async def login_form(request: Request) -> Response:
    return _login_page(request, target=query(request, "next") or "")


async def login(request: Request) -> Response:
    sessions = studio(request).sessions
    fields = await form(request)
    name = fields.get("name", "").strip()[:MAX_NAME] or LOCAL_NAME
    target = fields.get("next", "")
    try:
        check_name(name, "name")
    except InvalidArgument:
        return _login_page(request, status=400, error="Use a name without control characters.", target=target)
    if sessions.keyed and not sessions.key_matches(fields.get("key", "")):
        await asyncio.sleep(WRONG_KEY_PAUSE_S)
        return _login_page(request, status=401, error="That key is not this server's API key.", name=name,
                           target=target)
    base = request.scope.get("root_path", "")
    _, value = sessions.issue(name)
    response = RedirectResponse(back_to(request, {"back": target}, f"{base}/"), status_code=303)
    response.headers.append("set-cookie", cookie_header(COOKIE, value, path=base or "/", secure=_secure(request),
                                                        max_age=TTL_S).decode("latin-1"))
    response.headers.append("set-cookie", cookie_header(LOGIN_COOKIE, "", path=base or "/", secure=_secure(request),
                                                        max_age=0).decode("latin-1"))
    return response


async def logout(request: Request) -> Response:
    base = request.scope.get("root_path", "")
    response = RedirectResponse(f"{base}/login", status_code=303)
    response.headers.append("set-cookie", cookie_header(COOKIE, "", path=base or "/", secure=_secure(request),
                                                        max_age=0).decode("latin-1"))
    return response
