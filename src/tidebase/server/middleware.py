"""Pure-ASGI middleware: closing connections whose body was left unread (outermost), CORS, API-key
authentication, the body limit and timeout, and routing on the raw path."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

OPEN_PATHS = frozenset({"/health"})
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "authorization, content-type, last-event-id, x-tidebase-worker"
EVENTS_SUFFIX = "/events"
CLOSE = (b"connection", b"close")


async def send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class RawPath:
    """Routes on the still percent-encoded path, so `%2F` in a workflow name stays inside its parameter
    (docs/http-api.md#names-and-paths)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("raw_path"):
            scope = {**scope, "path": scope["raw_path"].decode("latin-1").split("?", 1)[0]}
        await self.app(scope, receive, send)


class Cors:
    """CORS for every route; a preflight is answered 204 before authentication (docs/http-api.md#cors)."""

    def __init__(self, app: ASGIApp, origins: str) -> None:
        self.app = app
        self.origins = [o.strip() for o in origins.split(",") if o.strip()] or ["*"]

    def _allow(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        if self.origins == ["*"]:
            return [(b"access-control-allow-origin", b"*")]
        origin = (_header(scope, b"origin") or b"").decode("latin-1")
        if origin in self.origins:
            return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        return [(b"vary", b"Origin")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allow = self._allow(scope)
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method") is not None:
            await send({"type": "http.response.start", "status": 204, "headers": [
                *allow, (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", ALLOW_HEADERS.encode()), (b"access-control-max-age", b"600")]})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *allow]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def studio_path(scope: Scope) -> bool:
    """`/` (a redirect) and the Studio, which a browser cannot reach with a bearer token: the Studio checks its own
    session cookie (server/studio/guard.py). Both the decoded and the raw path must say so."""
    raw = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1").split("?", 1)[0]
    return all(p in {"/", "/studio"} or p.startswith("/studio/") for p in (scope["path"], raw))


class Auth:
    """`Authorization: Bearer <key>` on every route but /health; `?token=` on the SSE route only
    (docs/http-api.md#auth).

    The presented and the configured key are compared as SHA-256 digests with a constant-time equality, so neither
    their contents nor the key's length leak through timing.
    """

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.digest = hashlib.sha256(api_key.encode()).digest() if api_key else None

    def _ok(self, presented: str | None) -> bool:
        if presented is None or self.digest is None:
            return False
        return hmac.compare_digest(hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest(),
                                   self.digest)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.digest is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS or studio_path(scope):
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        if header is not None:
            scheme, _, key = header.decode("latin-1").partition(" ")
            ok = scheme.lower() == "bearer" and self._ok(key.strip())
        elif scope["method"] == "GET" and scope["path"].endswith(EVENTS_SUFFIX):
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            ok = self._ok(query.get("token"))
        else:
            ok = False
        if not ok:
            await send_json(send, 401, {"error": "unauthorized", "code": "unauthorized"},
                            [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Reads the whole body before the app sees it: at most `limit` bytes (413 above it, docs/http-api.md#limits), all
    of them within `timeout_s` of the end of the request headers (408 `request_timeout` after it). Both refusals close
    the connection, so a client that never finishes its body cannot hold one. GET, HEAD and OPTIONS pass unread."""

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float = 30.0) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_large = {"error": "payload too large", "code": "payload_too_large", "limit": self.limit}
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await send_json(send, 413, too_large, [CLOSE])
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._read(receive)
        except TimeoutError:
            await send_json(send, 408, {"error": "request body not received in time", "code": "request_timeout"},
                            [CLOSE])
            return
        if body is None:
            return
        if len(body) > self.limit:
            await send_json(send, 413, too_large, [CLOSE])
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        """The body, or its first chunks once they exceed the limit; None when the client disconnected."""
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self.limit or not message.get("more_body", False):
                return b"".join(chunks)


class CloseUnread:
    """Closes the connection after a response that started before the request body was received to its end.

    Answers given without reading a declared body (401, a CORS preflight, a GET handler) would otherwise leave the
    connection open for the rest of that body, and uvicorn does not arm its idle timer while bytes keep arriving: a
    client trickling them could hold the connection as long as it liked. Its next request takes a new connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        complete = _header(scope, b"transfer-encoding") is None and (length is None or length.strip() == b"0")

        async def tracked() -> Message:
            nonlocal complete
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start" and not complete:
                headers = list(message.get("headers", []))
                if CLOSE not in headers:
                    message = {**message, "headers": [*headers, CLOSE]}
            await send(message)

        await self.app(scope, tracked, closing)
