"""`GET /metrics` of `tidebase serve`: the server process's instruments and the database gauges (docs/operations.md).

Authentication: /metrics is a route like any other, so with `TIDEBASE_API_KEY` set a scraper sends
`Authorization: Bearer <key>` (Prometheus: `authorization: {credentials: ...}` in the scrape config); without a key the
whole server is open and bound to loopback. `TIDEBASE_METRICS_PUBLIC=1` serves /metrics without the key, for scrapers
that cannot carry one: `public()` answers it before the authentication middleware. The answer names workflows and
queues, never a run's data.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tidebase.errors import TidebaseError
from tidebase.ops import metrics
from tidebase.server.common import services

log = logging.getLogger("tidebase.server")
PATH = "/metrics"


async def serve_metrics(request: Request) -> Response:
    """The exposition; a database that does not answer within 5 s gives `tidebase_scrape_database_error 1` and the
    process's instruments, never an error answer (a scrape must not fail because the thing it watches does)."""
    try:
        rows = await asyncio.wait_for(metrics.queue_gauges_async(services(request).wire.db.pool), timeout=5)
        body = metrics.render(rows, scrape_error=False)
    except (TidebaseError, TimeoutError, OSError, Exception) as exc:  # noqa: BLE001 - reported as a gauge
        log.debug("metrics: the database gauges could not be read: %s", type(exc).__name__)
        metrics.METRICS.database_errors.inc((type(exc).__name__,))
        body = metrics.render(scrape_error=True)
    return Response(body, media_type=metrics.CONTENT_TYPE)


ROUTE = Route(PATH, serve_metrics, methods=["GET"])


def public(app: ASGIApp, inner: Any, enabled: bool) -> ASGIApp:
    """`app` (the middleware stack), answering GET /metrics from `inner` (the routed app) before authentication when
    `enabled`."""
    if not enabled:
        return app

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] in ("GET", "HEAD"):
            await inner(scope, receive, send)
            return
        await app(scope, receive, send)

    return dispatch
