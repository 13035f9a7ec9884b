"""The SSE stream's own logic, in process: a stream unsubscribes when its consumer goes away, the shared per-run
tail serves subscribers with one query per ring, and a subscriber behind the shared window catches up alone."""

from __future__ import annotations

from typing import Any

import psycopg

from tidebase.core.db_async import AsyncDatabase
from tidebase.server import sse
from tidebase.server.http_engine import AsyncWire


class CountingWire(AsyncWire):
    def __init__(self, db: AsyncDatabase) -> None:
        super().__init__(db)
        self.queries = 0

    async def events_after(self, run_id: str, after: int, limit: int = 500) -> list[dict[str, Any]]:
        self.queries += 1
        return await super().events_after(run_id, after, limit)


async def make_run(wire: AsyncWire, events: int) -> str:
    row, _ = await wire.create_run("run-sse", "wf", {}, {})
    for i in range(events - 1):
        await wire.write_state(row["id"], "set", "run", i)
    return str(row["id"])


async def test_stream_unsubscribes_when_the_consumer_goes_away(dsn: str) -> None:
    db = await AsyncDatabase.connect(dsn, min_size=1, max_size=2)
    try:
        wire = AsyncWire(db)
        run_id = await make_run(wire, 3)
        bell = sse.Doorbell(dsn)
        body = sse.stream(wire, bell, run_id, 0, keepalive_s=15, public_url="http://t")
        assert await anext(body) == b": connected\n\n"
        frames = await anext(body)
        assert frames.count(b"data: ") == 3 and frames.startswith(b"id: 1\n")
        assert set(bell.waiters) == {run_id} and set(bell.tails) == {run_id}
        await body.aclose()
        assert bell.waiters == {} and bell.tails == {}
    finally:
        await db.close()


async def test_tail_serves_many_subscribers_with_one_query_per_ring(dsn: str) -> None:
    db = await AsyncDatabase.connect(dsn, min_size=1, max_size=2)
    try:
        wire = CountingWire(db)
        run_id = await make_run(wire, 5)
        tail = sse.Tail()
        first = [await tail.after(wire, run_id, 2) for _ in range(10)]
        assert all([r["seq"] for r in rows] == [3, 4, 5] for rows in first)
        assert wire.queries == 1
        await wire.write_state(run_id, "set", "run", "new")
        assert [r["seq"] for r in await tail.after(wire, run_id, 5)] == []  # not rung yet: served from the tail
        tail.gen += 1  # the doorbell rings
        again = [await tail.after(wire, run_id, 5) for _ in range(10)]
        assert all([r["seq"] for r in rows] == [6] for rows in again)
        assert wire.queries == 2
        behind = await tail.after(wire, run_id, 0)  # before the shared window: its own query
        assert [r["seq"] for r in behind] == [1, 2, 3, 4, 5, 6]
        assert wire.queries == 3
    finally:
        await db.close()


async def test_doorbell_rings_on_commit(dsn: str) -> None:
    import asyncio

    bell = sse.Doorbell(dsn)
    bell.start()
    try:
        await asyncio.wait_for(bell.connected.wait(), 10)
        wake = bell.subscribe("r1")
        other = bell.subscribe("r2")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_notify('tidebase_events', 'r1')")
        await asyncio.wait_for(wake.wait(), 5)
        assert not other.is_set()
        assert bell.tails["r1"].gen == 1 and bell.tails["r2"].gen == 0
    finally:
        await bell.stop()
