"""The Studio's gate keeper: pure-ASGI middleware in front of every `/studio` route.

The API's bearer-token middleware (`server/middleware.py`, `Auth`) lets `/studio` through, because a browser cannot
send a bearer token with a link, a form or an EventSource; this middleware then decides instead:

- With `TIDEBASE_API_KEY` set, every route but the login form and the static files needs a valid session cookie
  (`session.py`): a page request without one is sent to the login form, anything else gets 401.
- Without a key the Studio is open, like the API, but only to loopback: the peer address must be a loopback address
  and the Host header a loopback name (which also defeats DNS rebinding). A session is issued silently, for the CSRF
  token and the name recorded with decisions.
- Every POST must come from the Studio's own origin (Origin, else Referer, equal to the request's host or to
  `TIDEBASE_PUBLIC_URL`) and carry the session's CSRF token (form field `csrf` or header `x-csrf-token`); the login
  form carries its double-submit nonce instead. Anything else is refused with 403 before a handler runs.
- Every answer gets a strict Content-Security-Policy (scripts and styles from the Studio only, no framing), no-store
  caching for pages, and a Server-Timing header with the time the server spent before answering.
"""

from __future__ import annotations

import html
import ipaddress
import time
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidebase.server.studio.session import COOKIE, LOCAL_NAME, LOGIN_COOKIE, TTL_S, Session, Sessions, cookie_header

SCOPE_KEY = "tidebase.studio.session"
PUBLIC = ("/login", "/static/")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
FORM = "application/x-www-form-urlencoded"


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def cookies(scope: Scope) -> dict[str, str]:
    jar: dict[str, str] = {}
    for key, value in scope["headers"]:
        if key == b"cookie":
            for part in bytes(value).decode("latin-1").split(";"):
                name, _, val = part.strip().partition("=")
                jar.setdefault(name, val)
    return jar


def session_of(scope: Scope) -> Session:
    """The session the guard admitted the request with (every Studio handler runs behind the guard)."""
    session: Session = scope[SCOPE_KEY]
    return session


def _loopback_peer(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(str(client[0]).split("%")[0]).is_loopback
    except ValueError:
        return False


def _loopback_host(host: str | None) -> bool:
    if not host:
        return False
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


async def _page(send: Send, status: int, title: str, text: str, headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    body = (f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>").encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        (b"content-security-policy", CSP.encode()), (b"cache-control", b"no-store"), *headers]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Admits a request to the Studio or answers it (see the module docstring)."""

    def __init__(self, app: ASGIApp, sessions: Sessions, public_url: str, extra: dict[str, Any]) -> None:
        self.app = app
        self.sessions = sessions
        self.extra = extra  # added to the scope of every admitted request (the Studio's state)
        self.public_origin = _origin(public_url)
        self.secure = public_url.lower().startswith("https://")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        base = scope.get("root_path", "")
        sub = scope["path"][len(base):] if scope["path"].startswith(base) else scope["path"]
        public = sub == "/login" or sub.startswith("/static/")
        if not self.sessions.keyed and not (_loopback_peer(scope) and _loopback_host(header(scope, b"host"))):
            await _page(send, 403, "Loopback only", "Without TIDEBASE_API_KEY the Studio answers only on loopback "
                        "(127.0.0.1, ::1, localhost). Set an API key to open it to other hosts.")
            return
        jar = cookies(scope)
        session = self.sessions.read(jar.get(COOKIE))
        set_cookie: list[tuple[bytes, bytes]] = []
        if session is None and not self.sessions.keyed:
            session, value = self.sessions.issue(LOCAL_NAME)
            set_cookie.append((b"set-cookie", cookie_header(COOKIE, value, path=base or "/", secure=self.secure,
                                                            max_age=TTL_S)))
        if session is None and not public:
            if scope["method"] in ("GET", "HEAD") and sub != "/pulse" and not sub.endswith("/events"):
                target = scope["path"] + ("?" + scope["query_string"].decode("latin-1")
                                          if scope.get("query_string") else "")
                location = f"{base}/login?next={quote(target, safe='')}"
                await send({"type": "http.response.start", "status": 303,
                            "headers": [(b"location", location.encode("latin-1")), (b"cache-control", b"no-store")]})
                await send({"type": "http.response.body", "body": b""})
            else:
                await _page(send, 401, "Sign in required", "This Studio needs a session: sign in first.")
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            body, refusal = await self._check_post(scope, receive, session, sub == "/login", jar)
            if refusal is not None:
                await _page(send, 403, "Refused", refusal)
                return
            receive = _replay(body, receive)
        scope = {**scope, **self.extra, SCOPE_KEY: session}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                spent = (time.perf_counter() - started) * 1000
                extra = [(b"server-timing", f"app;dur={spent:.1f}".encode()),
                         (b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
                         (b"referrer-policy", b"same-origin"), (b"x-content-type-options", b"nosniff")]
                if not sub.startswith("/static/"):
                    extra.append((b"cache-control", b"no-store"))
                headers = list(message.get("headers", []))
                # A handler that sets the session cookie itself (login, logout) wins over the one issued here.
                if not any(k == b"set-cookie" and v.startswith(COOKIE.encode() + b"=") for k, v in headers):
                    extra += set_cookie
                message = {**message, "headers": [*headers, *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _same_origin(self, scope: Scope) -> bool:
        claimed = header(scope, b"origin")
        if claimed is None or claimed == "null":
            referer = header(scope, b"referer")
            claimed = _origin(referer) if referer else None
        if claimed is None:
            return False
        own = {f"{scope.get('scheme', 'http')}://{header(scope, b'host') or ''}".lower(), self.public_origin}
        return claimed.lower() in own

    async def _check_post(self, scope: Scope, receive: Receive, session: Session | None, login: bool,
                          jar: dict[str, str]) -> tuple[bytes, str | None]:
        """The body (read whole: it is small, and the body limit bounds it) and why the POST is refused, if it is."""
        body = await _read(receive)
        if not self._same_origin(scope):
            return body, "Cross-site request: the Origin of this request is not the Studio's."
        media = (header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)) if media == FORM else {}
        if login:
            nonce = jar.get(LOGIN_COOKIE)
            if not nonce or fields.get("nonce") != nonce:
                return body, "The sign-in form expired: reload it and sign in again."
            return body, None
        presented = header(scope, b"x-csrf-token") or fields.get("csrf")
        if session is None or not self.sessions.csrf_ok(session, presented):
            return body, "Missing or wrong CSRF token: reload the page and try again."
        return body, None


async def _read(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Any:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
