"""The asyncio flavour of the contention probes: many tasks on one run context, and zombie fencing."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from fix_probe import wait_for_lock_waiters
from tidebase import LeaseLost
from tidebase.aio import AsyncTidebase

pytestmark = pytest.mark.probe
WRITERS = 32


async def test_32_concurrent_tasks_get_gap_free_seqs(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """32 tasks emitting on one run while its row is locked all queue on the lock, then commit seq 1..N in order."""
    tide = AsyncTidebase(conninfo.make_conninfo(dsn, application_name="atask"), pool_max_size=WRITERS + 2)
    ready, go = asyncio.Event(), asyncio.Event()

    async def wf(run: Any, input: Any) -> Any:
        ready.set()
        await go.wait()
        return await asyncio.gather(*(run.emit("agent.tick", {"i": i}) for i in range(WRITERS)))

    task = asyncio.create_task(tide.run("fan", wf, run_id="alog-1"))
    await ready.wait()
    with db.transaction():
        db.execute("SELECT 1 FROM tidebase.runs WHERE id = 'alog-1' FOR UPDATE")
        go.set()
        await asyncio.to_thread(wait_for_lock_waiters, observer, "atask", WRITERS, 60)
    seqs = await asyncio.wait_for(task, 60)
    assert sorted(seqs) == list(range(3, 3 + WRITERS))
    events = await tide.runs.events("alog-1")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    await tide.close()


async def test_async_zombie_is_fenced(dsn: str, db: psycopg.Connection[Any]) -> None:
    """An async holder whose lease was taken over gets LeaseLost on its next write and runs no further step."""
    a, b = AsyncTidebase(dsn), AsyncTidebase(dsn)
    in_step, resume = asyncio.Event(), asyncio.Event()
    ran = []

    async def slow(run: Any, input: Any) -> Any:
        async def block() -> int:
            in_step.set()
            await resume.wait()
            return 1

        await run.step("one", block)
        await run.step("two", lambda: ran.append(2))
        return "zombie"

    task = asyncio.create_task(a.run("z", slow, run_id="az-1"))
    await in_step.wait()
    db.execute("UPDATE tidebase.runs SET lease_expires_at = now() - interval '1 second' WHERE id = 'az-1'")
    assert await b.run("z", lambda run, input: "new holder", run_id="az-1") == "new holder"
    resume.set()
    with pytest.raises(LeaseLost):
        await task
    assert ran == []
    assert (await b.runs.get("az-1")).result == "new holder"
    await a.close()
    await b.close()
