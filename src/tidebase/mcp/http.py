"""The `/mcp` route of `tidebase serve`: the MCP tools over streamable HTTP (docs/mcp.md#serve).

`HttpDoor(settings)` is built by `create_app` whether or not the `mcp` extra is installed: without it, `routes` is
empty (so `/mcp` is absent, a 404 like any unknown path) and `running(pool)` does nothing. With it, `routes` holds
`/mcp`, and `running(pool)`, entered by the app's lifespan once the database pool is open, builds the tools over an
`AsyncTidebase` on that pool and runs the SDK's session manager; `mcp` is imported only there.

The route sits behind the app's middleware like every other route: the API key (`Authorization: Bearer`, 401
without it), the body limit, CORS. The SDK's own DNS-rebinding check (a Host allow-list) is off, because the server
may be reached under any host name; with `TIDEBASE_API_KEY` set, the key is what admits a client. The transport is
stateless with JSON answers: every POST is one exchange, so any server process behind a load balancer can answer it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tidebase.mcp import INSTALL_HINT, available
from tidebase.settings import Settings

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

PATH = "/mcp"
log = logging.getLogger("tidebase.server")


class HttpDoor:
    """The MCP endpoint of one app: its routes, and the context that serves them while the app runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: ASGIApp | None = None
        self.unavailable = "the MCP endpoint is not running"
        # The door itself is the route's ASGI endpoint (an object, not a function: every method reaches it).
        self.routes: list[BaseRoute] = [Route(PATH, endpoint=self)] if available() else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:  # before the lifespan set it up, after its end, or with an unusable `mcp` package
            answer = JSONResponse({"error": self.unavailable, "code": "unavailable"},
                                  status_code=503, headers={"retry-after": "1"})
            await answer(scope, receive, send)
            return
        await self._app(scope, receive, send)

    @contextlib.asynccontextmanager
    async def running(self, pool: AsyncConnectionPool[Any]) -> AsyncIterator[None]:
        """Serves `/mcp` with the tools over `pool` (the server's, which stays open) until the context ends."""
        if not self.routes:
            yield
            return
        try:
            from mcp.server.transport_security import TransportSecuritySettings  # noqa: PLC0415 - the optional extra

            from tidebase.mcp.tools import create_server  # noqa: PLC0415
        except ImportError as exc:  # an `mcp` that is not the SDK version of the extra: the rest of the app serves
            self.unavailable = f"the `mcp` package cannot be used ({exc}); {INSTALL_HINT}"
            log.warning("/mcp is unavailable: %s", self.unavailable)
            yield
            return
        from tidebase.client_async import AsyncTidebase  # noqa: PLC0415
        from tidebase.mcp.views import Redactor  # noqa: PLC0415

        tide = AsyncTidebase(pool, settings=self.settings)
        server = create_server(tide, public_url=self.settings.resolved_public_url,
                               redactor=Redactor.from_settings(self.settings))
        # Builds the server's session manager (the Starlette app it returns is not used: the route is ours).
        server.streamable_http_app(
            streamable_http_path=PATH, json_response=True, stateless_http=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=self.settings.max_body_bytes)
        manager = server.session_manager
        try:
            async with manager.run():
                self._app = manager.handle_request
                try:
                    yield
                finally:
                    self._app = None
        finally:
            await tide.close()
