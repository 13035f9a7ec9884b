"""Crashed runs resume without a human: a dead holder's lease is taken over at once, a live one is explained, a
registered workflow is resumed by a worker, and an operator can recover any run nobody executes.

The crash is real: a process running a plain `tide.run` (tests/crash_proc.py) is killed with SIGKILL inside a step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

from fix_probe import wait_until
from tidebase import Conflict, LeaseHeld, Reconciler, Tidebase, Worker
from tidebase.core.owners import describe_holder, holder_exited, new_owner, parse_owner

CRASH = Path(__file__).with_name("crash_proc.py")


@pytest.fixture
def executions(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    db.execute("CREATE TABLE executions (id bigserial PRIMARY KEY, run_id text, key text)")
    return db


def _crash_inside_s2(dsn: str, run_id: str, lease: float, register: bool = False) -> int:
    """Starts crash_proc.py, waits until it is inside step s2, kills it with SIGKILL; returns its pid."""
    args = [sys.executable, str(CRASH), dsn, run_id, str(lease)] + (["register"] if register else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "in s2"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    return proc.pid


def _keys(db: psycopg.Connection[Any], run_id: str) -> list[str]:
    return [r[0] for r in db.execute("SELECT key FROM executions WHERE run_id = %s ORDER BY id", (run_id,))]


def _crashy(db: psycopg.Connection[Any]) -> Any:
    def crashy(run: Any, input: Any) -> Any:
        def record(key: str) -> str:
            db.execute("INSERT INTO executions (run_id, key) VALUES (%s, %s)", (run.run_id, key))
            return key

        run.step("s1", lambda: record("s1"))
        return run.step("s2", lambda: record("s2"))

    return crashy


def test_a_run_whose_holder_was_killed_is_taken_over_at_once(
    dsn: str, executions: psycopg.Connection[Any]
) -> None:
    """After SIGKILL of the process running it, invoking the run again (its 30 s lease still live) takes it over at
    once, replays s1, re-runs the interrupted s2, and records the takeover as a recovery and in run.started."""
    pid = _crash_inside_s2(dsn, "crashed", lease=30.0)
    tide = Tidebase(dsn)
    try:
        before = tide.runs.get("crashed")
        assert before.status == "running" and before.lease_owner is not None
        holder = parse_owner(before.lease_owner)
        assert holder is not None and holder.pid == pid
        started = time.monotonic()
        assert tide.run("crashy", _crashy(executions), run_id="crashed") == "s2"
        assert time.monotonic() - started < 2.0
        assert _keys(executions, "crashed") == ["s1", "s2", "s2"]
        (recovery,) = tide.runs.recoveries("crashed")
        assert (recovery["reason"], recovery["previous_owner"], recovery["outcome"]) == (
            "owner_exited", before.lease_owner, "resumed")
        takeover = [e.payload["takeover"] for e in tide.runs.events("crashed")
                    if e.type == "run.started" and "takeover" in e.payload]
        assert takeover == [{"previousOwner": before.lease_owner, "reason": "owner_exited",
                             "recoveryId": recovery["id"], "interruptedSteps": []}]
    finally:
        tide.close()


def test_a_live_holder_is_named_in_lease_held(dsn: str) -> None:
    """LeaseHeld names the holding process, its host and start time, when the lease expires, and what to do."""
    tide = Tidebase(dsn)
    held, release = threading.Event(), threading.Event()

    def holder(run: Any, input: Any) -> int:
        held.set()
        release.wait(30)
        return 1

    thread = threading.Thread(target=lambda: tide.run("wf", holder, run_id="busy"))
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(LeaseHeld) as info:
            tide.run("wf", holder, run_id="busy")
        message = str(info.value)
        assert f"process {os.getpid()} on host" in message and "s from now" in message
        assert "wait=" in message and "tidebase runs cancel" in message
        assert info.value.expires_at is not None and info.value.owner is not None
    finally:
        release.set()
        thread.join()
        tide.close()


def test_a_reused_pid_is_never_taken_for_the_dead_holder() -> None:
    """An owner naming a live process is alive; the same pid with another start time (a reused pid) or a pid that
    does not exist is gone; an owner of another host or of no known form is never judged."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = _owner_of(sleeper.pid)
        assert not holder_exited(live)
        host, pid, start, rest = live.split(":", 3)
        reused = ":".join([host, pid, str(int(start.partition(".")[0]) - 100) + start[len(start.partition(".")[0]):],
                           rest])
        assert reused != live and holder_exited(reused)
        assert not holder_exited(":".join(["some-other-host", pid, start, rest]))
        assert not holder_exited("an-http-client-42")
        assert describe_holder(live).startswith(f"process {sleeper.pid} on host {host} (started ")
        assert describe_holder("an-http-client-42") == "'an-http-client-42'"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert holder_exited(live)  # the pid is gone now


def _owner_of(pid: int) -> str:
    """An owner string for process `pid` of this host, as that process would have written it (same namespace)."""
    mine = new_owner()
    host, _, stamp, nonce = mine.split(":")
    namespace = stamp.partition(".")[2]
    theirs = round(psutil.Process(pid).create_time() * 100)
    return f"{host}:{pid}:{theirs}" + (f".{namespace}" if namespace else "") + f":{nonce}"


@pytest.fixture
def worker(dsn: str, executions: psycopg.Connection[Any]) -> Iterator[tuple[Tidebase, Worker]]:
    tide = Tidebase(dsn, lease_seconds=1.0)
    tide.workflow("crashy")(_crashy(executions))
    w = Worker(tide, queues=["default"], poll_interval=0.05, reconcile_interval=0.2, handle_signals=False)
    yield tide, w
    w.stop()
    tide.close()


def test_a_registered_workflow_started_by_tide_run_is_resumed_by_a_worker(
    dsn: str, executions: psycopg.Connection[Any], worker: tuple[Tidebase, Worker]
) -> None:
    """A registered workflow started with plain tide.run in a process that is then killed goes to the default queue
    when its lease expires, and a worker resumes it from its checkpoints."""
    tide, w = worker
    _crash_inside_s2(dsn, "orphan", lease=1.0, register=True)
    thread = threading.Thread(target=w.run)
    thread.start()
    try:
        wait_until(lambda: tide.runs.get("orphan").status == "completed", "the worker completed the run", 30)
    finally:
        w.stop()
        thread.join(30)
    assert _keys(executions, "orphan") == ["s1", "s2", "s2"]
    reasons = [r["reason"] for r in tide.runs.recoveries("orphan")]
    assert reasons == ["lease_expired"]


def test_an_unregistered_plain_run_is_left_for_its_caller(dsn: str, executions: psycopg.Connection[Any]) -> None:
    """A crashed plain run of a workflow nobody registered stays off the queues once its lease expires (the reconciler
    does not hand it to workers that cannot run it), and `recover` puts it on a queue on request."""
    _crash_inside_s2(dsn, "adhoc", lease=1.0)
    tide = Tidebase(dsn)
    try:
        executions.execute("UPDATE tidebase.runs SET lease_expires_at = now() - interval '1 s' WHERE id = 'adhoc'")
        assert "adhoc" not in Reconciler(tide).tick().recovered
        assert tide.runs.get("adhoc").status == "running"
        run = tide.runs.recover("adhoc", actor="ops")
        assert (run.status, run.queue) == ("queued", "default")
        assert [(r["reason"], r["detected_by"]) for r in tide.runs.recoveries("adhoc")] == [("operator", "ops")]
    finally:
        tide.close()


def test_recover_explains_every_refusal(dsn: str) -> None:
    """`recover` refuses a live lease (naming holder and expiry), parked steps (naming them) and finished runs, each
    with a Conflict that says why and what to do."""
    tide = Tidebase(dsn)
    held, release = threading.Event(), threading.Event()

    def holding(run: Any, input: Any) -> int:
        held.set()
        release.wait(30)
        return 1

    thread = threading.Thread(target=lambda: tide.run("wf", holding, run_id="live"))
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(Conflict, match=r"is running: .* holds its lease until .* s from now"):
            tide.runs.recover("live")
    finally:
        release.set()
        thread.join()
    with pytest.raises(Conflict, match="is completed and cannot be recovered"):
        tide.runs.recover("live")
    tide.enqueue("wf", run_id="gone")
    tide.runs.cancel("gone")
    with pytest.raises(Conflict, match="is cancelled and cannot be recovered"):
        tide.runs.recover("gone")
    tide.engine.require_database().fetchone("create_run", {
        "run_id": "parked", "workflow": "wf", "input": "{}", "input_hash": "x", "check_input": False,
        "metadata": "{}", "parent_id": None, "lease_ms": 1000})
    with psycopg.connect(tide.engine.require_database().pool.conninfo, autocommit=True) as conn:
        conn.execute("UPDATE tidebase.runs SET status = 'manual_review' WHERE id = 'parked'")
        conn.execute("INSERT INTO tidebase.steps (run_id, key, id, name, input_hash, status) "
                     "VALUES ('parked', 'send', 'step_1', 'send', 'h', 'manual_review')")
    with pytest.raises(Conflict, match=r"parked for manual review at step\(s\) send: release or skip"):
        tide.runs.recover("parked")
    tide.close()
