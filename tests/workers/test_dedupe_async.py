"""Dedupe under concurrent enqueues from asyncio tasks (the threaded twin is in test_queues.py): 32 tasks enqueue one
(queue, dedupe key) while a competing insert of the key is uncommitted; it commits; all 32 get that run back."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg import conninfo

from fix_probe import wait_for_lock_waiters
from tidebase.aio import AsyncTidebase


async def test_dedupe_under_32_concurrent_async_enqueues(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """The 32 tasks all wait on the uncommitted duplicate; once it commits, each returns it and none creates
    another run."""
    tide = AsyncTidebase(conninfo.make_conninfo(dsn, application_name="aenq-"), pool_min_size=32, pool_max_size=40)
    await tide.runs.list()
    with db.transaction():
        db.execute("INSERT INTO tidebase.runs (id, workflow, status, input_hash, queue, dedupe_key, available_at) "
                   "VALUES ('first', 'report', 'queued', 'x', 'reports', 'k', now())")
        tasks = [asyncio.create_task(tide.enqueue("report", queue="reports", dedupe_key="k")) for _ in range(32)]
        await asyncio.to_thread(wait_for_lock_waiters, observer, "aenq-", 32)
    runs = await asyncio.gather(*tasks)
    assert {r.id for r in runs} == {"first"}
    assert db.execute("SELECT count(*) FROM tidebase.runs").fetchone() == (1,)
    await tide.close()
