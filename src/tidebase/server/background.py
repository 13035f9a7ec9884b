"""The server's background duties: the reconciler tick and the webhook dispatcher (wire §7.7, §6.3).

The reconciler runs in every server process, but only one process is active at a time across replicas (its tick
takes an advisory try-lock), and it does no network I/O while holding it: webhooks wait in the outbox, which the
dispatcher drains from its own thread and connection after commit. `TIDEBASE_RECONCILER=0` turns both off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from psycopg_pool import AsyncConnectionPool

from tidebase.client_async import AsyncTidebase
from tidebase.errors import TidebaseError
from tidebase.ops.reconciler_async import AsyncReconciler
from tidebase.ops.webhooks import Dispatcher

logger = logging.getLogger("tidebase.server")


async def _reconcile_forever(reconciler: AsyncReconciler, period: float) -> None:
    while True:
        try:
            await reconciler.tick()
        except TidebaseError as exc:  # a database hiccup: the next tick retries
            logger.warning("reconciler tick failed: %s", exc)
        await asyncio.sleep(period)


@contextlib.asynccontextmanager
async def background(dsn: str, pool: AsyncConnectionPool[Any], *, enabled: bool, period_ms: int,
                     lease_ms: int, webhook_secret: str | None = None,
                     webhook_timeout_ms: int = 10000, webhook_max_attempts: int = 10,
                     public_url: str | None = None) -> AsyncIterator[None]:
    """Runs the reconciler (every `period_ms`) and the webhook dispatcher while the server is up."""
    if not enabled:
        yield
        return
    tide = AsyncTidebase(pool, lease_seconds=lease_ms / 1000)  # shares the server's pool; never closes it
    task = asyncio.create_task(_reconcile_forever(AsyncReconciler(tide, interval=period_ms / 1000),
                                                  period_ms / 1000), name="tidebase-reconciler")
    dispatcher = Dispatcher(dsn, recovery_secret=webhook_secret, timeout=webhook_timeout_ms / 1000,
                            max_attempts=webhook_max_attempts, poll_interval=0.5, public_url=public_url)
    dispatcher.start()
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(dispatcher.stop)
