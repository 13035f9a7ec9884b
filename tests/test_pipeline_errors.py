"""Errors raised inside a pipelined round trip leave the pooled connection usable, and make no noise on stderr.

psycopg prepares a statement on its fifth execution; a Parse queued in a pipeline behind a failing statement is
skipped by the server, and a connection that recorded it as prepared fails every later use ("prepared statement
_pg3_N does not exist"). These tests drive each error the pipelined run start can raise after n = 0..10 earlier
runs on a one-connection pool, then run fresh workflows on that same connection.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tidebase import InputMismatch, LeaseHeld, LeaseLost, RunCancelled, RunCompleted, Tidebase

PRIOR_RUNS = range(11)


def _quick(run: Any, input: Any) -> Any:
    return run.step("a", lambda: 1)


def _fresh_runs_succeed(tide: Tidebase) -> None:
    for _ in range(4):
        assert tide.run("wf", _quick) == 1


def _holding(dsn: str) -> tuple[Tidebase, threading.Thread, threading.Event, Callable[..., int]]:
    """Another instance holding the lease of run `held` until the returned event is set."""
    other = Tidebase(dsn)
    held, release = threading.Event(), threading.Event()

    def holder(run: Any, input: Any) -> int:
        held.set()
        release.wait(60)
        return 1

    thread = threading.Thread(target=lambda: other.run("wf", holder, run_id="held"))
    thread.start()
    assert held.wait(30)
    return other, thread, release, holder


def test_lease_held_in_a_pipeline_leaves_the_connection_usable(dsn: str) -> None:
    """For n = 0..10 earlier runs on a fresh one-connection pool, a LeaseHeld raised by the pipelined start leaves
    that connection able to run four fresh runs."""
    other, thread, release, holder = _holding(dsn)
    try:
        for prior in PRIOR_RUNS:
            with Tidebase(dsn, pool_min_size=1, pool_max_size=1) as single:
                for _ in range(prior):
                    single.run("wf", _quick)
                with pytest.raises(LeaseHeld):
                    single.run("wf", holder, run_id="held")
                _fresh_runs_succeed(single)
    finally:
        release.set()
        thread.join()
        other.close()


def _input_mismatch(tide: Tidebase) -> None:
    tide.run("wf", _quick, run_id="fixed", input={"a": 1})
    with pytest.raises(InputMismatch):
        tide.run("wf", _quick, run_id="fixed", input={"a": 2})


def _cancelled(tide: Tidebase) -> None:
    if not tide.runs.list(status="cancelled").runs:
        tide.enqueue("wf", run_id="gone")
        tide.runs.cancel("gone")
    with pytest.raises(RunCancelled):
        tide.run("wf", _quick, run_id="gone")


def _completed(tide: Tidebase) -> None:
    tide.run("wf", _quick, run_id="done")
    with pytest.raises(RunCompleted):
        tide.engine.require_database().pipeline([
            ("append_event", {"run_id": "done", "token": None, "type": "x", "payload": "{}"}),
            ("load_checkpoints", {"run_id": "done"}),
        ])


def _lease_lost(tide: Tidebase) -> None:
    tide.run("wf", _quick, run_id="stale")
    with pytest.raises(LeaseLost):
        tide.engine.require_database().pipeline([("renew_lease", {"run_id": "stale", "token": -1}),
                                     ("load_checkpoints", {"run_id": "stale"})])


@pytest.mark.parametrize("provoke", [_input_mismatch, _cancelled, _completed, _lease_lost],
                         ids=["InputMismatch", "RunCancelled", "RunCompleted", "LeaseLost"])
def test_every_pipeline_error_leaves_the_connection_usable(dsn: str, provoke: Callable[[Tidebase], None]) -> None:
    """For n = 0..10 earlier runs on a fresh one-connection pool, InputMismatch, RunCancelled, RunCompleted and
    LeaseLost raised in a pipeline (six times, so the statements around the failing one reach psycopg's prepare
    threshold) leave that connection able to run four fresh runs."""
    for prior in PRIOR_RUNS:
        with Tidebase(dsn, pool_min_size=1, pool_max_size=1) as single:
            for _ in range(prior):
                single.run("wf", _quick)
            for _ in range(6):
                provoke(single)
            _fresh_runs_succeed(single)


def test_lease_contention_prints_nothing_but_through_the_tidebase_logger(
    dsn: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Refused acquisitions under contention log nothing from psycopg and write nothing to stderr."""
    caplog.set_level(logging.DEBUG)
    other, thread, release, holder = _holding(dsn)
    try:
        with Tidebase(dsn, pool_min_size=1, pool_max_size=1) as single:
            for _ in range(30):
                with pytest.raises(LeaseHeld):
                    single.run("wf", holder, run_id="held")
                single.run("wf", _quick)
    finally:
        release.set()
        thread.join()
        other.close()
    noisy = [r for r in caplog.records if not r.name.startswith("tidebase") and r.levelno >= logging.INFO]
    assert noisy == []
    assert capfd.readouterr().err == ""
