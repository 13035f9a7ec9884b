"""A decided gate answers GateAlreadyResolved naming its decision and actor, whatever its run did since: for the losers
of a race who were still queued when the winner's decision resumed and completed the run, for later resolvers of a
completed, failed, cancelled or forked run, and for the resolvers of a gate canceled with its run.

Hand-written per flavour: threads (sync API) and tasks (async API). In the probes, the test holds the run row while
the run's completion and then the losers queue on it, each proven by lock waits seen in pg_stat_activity, so the
losers get the row only after the run completed. Deadlines only turn a hang into a failure; no sleep decides an
outcome.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from fix_probe import wait_for_lock_waiters, wait_until
from tidebase import GateAlreadyResolved, RunCompleted, RunSuspended, Tidebase
from tidebase.aio import AsyncTidebase

LOSERS = 24
DECISIONS = ("approved", "rejected", "canceled")
SINCE = ("completed", "failed", "cancelled", "forked")


def named(dsn: str, application_name: str) -> str:
    return conninfo.make_conninfo(dsn, application_name=application_name)


def resolutions(db: psycopg.Connection[Any], run_id: str) -> int:
    row = db.execute("SELECT count(*) FROM tidebase.events WHERE run_id = %s AND type = 'gate.resolved'",
                     (run_id,)).fetchone()
    assert row is not None
    return int(row[0])


def opened(conn: psycopg.Connection[Any], run_id: str) -> str | None:
    """The id of the run's gate once it exists."""
    row = conn.execute("SELECT id FROM tidebase.gates WHERE run_id = %s", (run_id,)).fetchone()
    return None if row is None else str(row[0])


def check_losers(outcomes: list[Any], decision: str, actor: str) -> None:
    """Every outcome is GateAlreadyResolved carrying the winner's decision and actor."""
    assert len(outcomes) == LOSERS
    assert [type(o).__name__ for o in outcomes] == ["GateAlreadyResolved"] * LOSERS
    assert {(o.decision, o.actor) for o in outcomes} == {(decision, actor)}


# -- after the run moved on ------------------------------------------------------------------------------------------


def gated(run: Any, input: Any) -> Any:
    """Suspends at gate `approve`; once decided, publishes it as a step, then fails if the input says so."""
    decision = run.gate("approve", "ok?", suspend=True)
    published = run.step("publish", lambda: [decision.decision, decision.actor])
    if input.get("fail"):
        raise RuntimeError("failed after the gate")
    return published


async def agated(run: Any, input: Any) -> Any:
    decision = await run.gate("approve", "ok?", suspend=True)
    published = await run.step("publish", lambda: [decision.decision, decision.actor])
    if input.get("fail"):
        raise RuntimeError("failed after the gate")
    return published


@pytest.mark.parametrize("since", SINCE)
def test_a_decided_gate_names_its_decision_whatever_the_run_did_since(
    tide: Tidebase, db: psycopg.Connection[Any], since: str
) -> None:
    """Once its gate is decided and the run then completed, failed, was cancelled or forked, a resolve with any
    decision raises GateAlreadyResolved with the recorded decision and actor (also for the fork's copy of the gate),
    and writes nothing."""
    with pytest.raises(RunSuspended) as info:
        tide.run("review", gated, run_id="r-1", input={"fail": since == "failed"})
    gate_ids = [str(info.value.gate_id)]
    tide.gates.resolve(gate_ids[0], "approved", actor="alice")
    if since == "cancelled":
        tide.runs.cancel("r-1", actor="ops")
    elif since == "failed":
        with pytest.raises(RuntimeError):
            tide.run("review", gated, run_id="r-1", input={"fail": True})
    else:
        assert tide.run("review", gated, run_id="r-1", input={"fail": False}) == ["approved", "alice"]
    if since == "forked":
        tide.runs.fork("r-1", at_step="publish", new_run_id="r-1-fork")
        gate_ids += [g.id for g in tide.gates.list(None, run_id="r-1-fork")]
    assert tide.runs.get("r-1").status == ("completed" if since == "forked" else since)
    for gate_id in gate_ids:
        for decision in DECISIONS:
            with pytest.raises(GateAlreadyResolved) as lost:
                tide.gates.resolve(gate_id, decision, actor="bob")
            assert (lost.value.decision, lost.value.actor) == ("approved", "alice")
    assert len(gate_ids) == (2 if since == "forked" else 1)
    assert resolutions(db, "r-1") == 1


@pytest.mark.parametrize("since", SINCE)
async def test_async_a_decided_gate_names_its_decision_whatever_the_run_did_since(
    atide: AsyncTidebase, db: psycopg.Connection[Any], since: str
) -> None:
    """The asyncio flavour: after the run completed, failed, was cancelled or forked, resolving its decided gate
    raises GateAlreadyResolved with the recorded decision and actor."""
    with pytest.raises(RunSuspended) as info:
        await atide.run("review", agated, run_id="ar-1", input={"fail": since == "failed"})
    gate_ids = [str(info.value.gate_id)]
    await atide.gates.resolve(gate_ids[0], "rejected", actor="alice")
    if since == "cancelled":
        await atide.runs.cancel("ar-1", actor="ops")
    elif since == "failed":
        with pytest.raises(RuntimeError):
            await atide.run("review", agated, run_id="ar-1", input={"fail": True})
    else:
        assert await atide.run("review", agated, run_id="ar-1", input={"fail": False}) == ["rejected", "alice"]
    if since == "forked":
        await atide.runs.fork("ar-1", at_step="publish", new_run_id="ar-1-fork")
        gate_ids += [g.id for g in await atide.gates.list(None, run_id="ar-1-fork")]
    assert len(gate_ids) == (2 if since == "forked" else 1)
    for gate_id in gate_ids:
        with pytest.raises(GateAlreadyResolved) as lost:
            await atide.gates.resolve(gate_id, "approved", actor="bob")
        assert (lost.value.decision, lost.value.actor) == ("rejected", "alice")
    assert resolutions(db, "ar-1") == 1


def test_a_gate_canceled_with_its_run_answers_canceled(tide: Tidebase, db: psycopg.Connection[Any]) -> None:
    """Cancelling a run cancels its pending gate; resolving that gate then raises GateAlreadyResolved with decision
    `canceled` and the cancel's actor, saying the gate was canceled with its run."""
    with pytest.raises(RunSuspended) as info:
        tide.run("review", gated, run_id="c-1", input={})
    tide.runs.cancel("c-1", reason="not needed", actor="ops")
    with pytest.raises(GateAlreadyResolved, match="canceled with its run") as lost:
        tide.gates.resolve(str(info.value.gate_id), "approved", actor="alice")
    assert (lost.value.decision, lost.value.actor) == ("canceled", "ops")
    assert resolutions(db, "c-1") == 1  # the cancellation's, and no other


async def test_async_a_gate_canceled_with_its_run_answers_canceled(atide: AsyncTidebase) -> None:
    """The asyncio flavour: a gate canceled with its run answers GateAlreadyResolved with decision `canceled` and the
    cancel's actor."""
    with pytest.raises(RunSuspended) as info:
        await atide.run("review", agated, run_id="ac-1", input={})
    await atide.runs.cancel("ac-1", actor="ops")
    with pytest.raises(GateAlreadyResolved, match="canceled with its run") as lost:
        await atide.gates.resolve(str(info.value.gate_id), "rejected")
    assert (lost.value.decision, lost.value.actor) == ("canceled", "ops")


def test_a_gate_canceled_by_a_resolver_is_not_reported_as_canceled_with_its_run(tide: Tidebase) -> None:
    """A gate a resolver canceled before its run was cancelled names that resolver, not the run's cancellation."""
    with pytest.raises(RunSuspended) as info:
        tide.run("review", gated, run_id="c-2", input={})
    gate_id = str(info.value.gate_id)
    tide.gates.resolve(gate_id, "canceled", actor="alice")
    tide.runs.cancel("c-2", actor="ops")
    with pytest.raises(GateAlreadyResolved, match="already resolved") as lost:
        tide.gates.resolve(gate_id, "approved")
    assert (lost.value.decision, lost.value.actor) == ("canceled", "alice")


def test_a_gate_still_pending_when_its_run_completed_refuses_with_run_completed(tide: Tidebase) -> None:
    """A gate that was never decided before its run completed has no decision to report: resolving it raises
    RunCompleted and leaves it pending."""

    def opens_and_finishes(run: Any, input: Any) -> Any:
        return run.gates.begin("optional", "feedback?").id

    gate_id = tide.run("review", opens_and_finishes, run_id="p-1")
    with pytest.raises(RunCompleted):
        tide.gates.resolve(gate_id, "approved")
    assert tide.gates.get(gate_id).status == "pending"


# -- losers queued while the winner's decision completes the run ------------------------------------------------------


@pytest.mark.probe
def test_thread_losers_queued_while_the_run_completes_get_gate_already_resolved(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """The winner's decision wakes the run blocked at the gate; its completion, then 24 loser threads queue on the
    run row the test holds; released, the run completes first, and every loser gets GateAlreadyResolved naming the
    winner's decision and actor, none RunCompleted."""
    holder = Tidebase(named(dsn, "gate-holder"), lease_seconds=300)  # no heartbeat during the test
    resolver = Tidebase(dsn)
    losers = Tidebase(named(dsn, "gate-loser"), pool_max_size=LOSERS + 2)
    decided, proceed = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    def wf(run: Any, input: Any) -> Any:
        decision = run.gate("approve", "ok?")
        decided.set()
        assert proceed.wait(30)
        return [decision.decision, decision.actor]

    runner = threading.Thread(target=lambda: result.setdefault("r", holder.run("w", wf, run_id="race-1")),
                              daemon=True)
    runner.start()
    wait_until(lambda: opened(observer, "race-1") is not None, "the gate to be opened")
    gate_id = opened(observer, "race-1")
    assert gate_id is not None
    losers.gates.get(gate_id)  # open the losers' pool before the race
    resolver.gates.resolve(gate_id, "approved", actor="winner")
    assert decided.wait(30)  # the run has the decision and holds its completion until `proceed`
    outcomes: list[Any] = [None] * LOSERS

    def lose(i: int) -> None:
        try:
            outcomes[i] = losers.gates.resolve(gate_id, DECISIONS[i % 3], actor=f"loser-{i}")
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=lose, args=(i,), daemon=True) for i in range(LOSERS)]
    with db.transaction():
        db.execute("SELECT 1 FROM tidebase.runs WHERE id = 'race-1' FOR UPDATE")
        proceed.set()
        wait_for_lock_waiters(observer, "gate-holder", 1)  # the completion is first in the queue
        for t in threads:
            t.start()
        wait_for_lock_waiters(observer, "gate-loser", LOSERS)  # every loser behind it
    runner.join(30)
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert result["r"] == ["approved", "winner"]
    assert resolver.runs.get("race-1").status == "completed"
    check_losers(outcomes, "approved", "winner")
    assert resolutions(db, "race-1") == 1
    for tide in (holder, resolver, losers):
        tide.close()


@pytest.mark.probe
async def test_task_losers_queued_while_the_run_completes_get_gate_already_resolved(
    dsn: str, db: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> None:
    """The asyncio flavour: the run's completion and then 24 loser tasks queue on the run row the test holds;
    released, the run completes first, and every loser gets GateAlreadyResolved naming the winner."""
    holder = AsyncTidebase(named(dsn, "gate-aholder"), lease_seconds=300)
    resolver = AsyncTidebase(dsn)
    losers = AsyncTidebase(named(dsn, "gate-aloser"), pool_max_size=LOSERS + 2)
    decided, proceed = asyncio.Event(), asyncio.Event()

    async def wf(run: Any, input: Any) -> Any:
        decision = await run.gate("approve", "ok?")
        decided.set()
        await proceed.wait()
        return [decision.decision, decision.actor]

    runner = asyncio.create_task(holder.run("w", wf, run_id="arace-1"))
    await asyncio.to_thread(wait_until, lambda: opened(observer, "arace-1") is not None, "the gate to be opened")
    gate_id = opened(observer, "arace-1")
    assert gate_id is not None
    await losers.gates.get(gate_id)
    await resolver.gates.resolve(gate_id, "rejected", actor="winner")
    await asyncio.wait_for(decided.wait(), 30)
    with db.transaction():
        db.execute("SELECT 1 FROM tidebase.runs WHERE id = 'arace-1' FOR UPDATE")
        proceed.set()
        await asyncio.to_thread(wait_for_lock_waiters, observer, "gate-aholder", 1)
        tasks = [asyncio.create_task(losers.gates.resolve(gate_id, DECISIONS[i % 3], actor=f"aloser-{i}"))
                 for i in range(LOSERS)]
        await asyncio.to_thread(wait_for_lock_waiters, observer, "gate-aloser", LOSERS)
    assert await asyncio.wait_for(runner, 30) == ["rejected", "winner"]
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    assert (await resolver.runs.get("arace-1")).status == "completed"
    check_losers(list(outcomes), "rejected", "winner")
    assert resolutions(db, "arace-1") == 1
    for tide in (holder, resolver, losers):
        await tide.close()
