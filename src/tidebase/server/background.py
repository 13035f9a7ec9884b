"""The server's background duties: the reconciler tick and the webhook dispatcher (docs/http-api.md#background,
docs/http-api.md#delivery).

The reconciler runs in every server process, but only one process is active at a time across replicas (its tick
takes an advisory try-lock), and it does no network I/O while holding it: webhooks wait in the outbox, which the
dispatcher drains from its own thread and connection after commit. `TIDEBASE_RECONCILER=0` turns both off.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

from psycopg_pool import AsyncConnectionPool

from tidebase.core.engine_async import AsyncEngine
from tidebase.errors import TidebaseError
from tidebase.ops.reconciler_async import AsyncReconciler
from tidebase.ops.webhooks import Dispatcher
from tidebase.settings import Settings

logger = logging.getLogger("tidebase.server")


async def _reconcile_forever(reconciler: AsyncReconciler, period: float) -> None:
    while True:
        try:
            await reconciler.tick()
        except TidebaseError as exc:  # a database hiccup: the next tick retries
            logger.warning("reconciler tick failed: %s", exc)
        await asyncio.sleep(period)


@contextlib.asynccontextmanager
async def background(dsn: str, pool: AsyncConnectionPool[Any], settings: Settings) -> AsyncIterator[None]:
    """Runs the reconciler (every `settings.reconcile_interval_seconds`) and the webhook dispatcher while the server
    is up, unless `settings.reconciler` is off. The reconciler shares the server's pool (and never closes it); its
    lease is the HTTP clients' (`http_lease_seconds`), since the runs it requeues are theirs as much as workers'."""
    if not settings.reconciler:
        yield
        return
    engine = AsyncEngine(dataclasses.replace(settings, lease_seconds=settings.http_lease_seconds), pool=pool)
    period = settings.reconcile_interval_seconds
    task = asyncio.create_task(_reconcile_forever(AsyncReconciler(_Holder(engine), interval=period), period),
                               name="tidebase-reconciler")
    dispatcher = Dispatcher.from_settings(dsn, settings, poll_interval=0.5)
    dispatcher.start()
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(dispatcher.stop)


@dataclasses.dataclass
class _Holder:
    """What the reconciler takes: something with an engine."""

    engine: AsyncEngine
