"""The event doorbell: writers NOTIFY `tidebase_events` at commit while a listener is registered, and only then."""

from __future__ import annotations

from typing import Any

import psycopg

from fix_probe import wait_until
from tidebase import Tidebase
from tidebase.sql import load_queries


def _notes(conn: psycopg.Connection[Any]) -> list[str]:
    return [n.payload for n in conn.notifies(timeout=0.5)]


def test_registered_listener_is_rung_at_commit(dsn: str, tide: Tidebase) -> None:
    """A session registered with listen_events receives the run id of every committed event write."""
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(load_queries()["listen_events"])
        tide.run("w", lambda run, input: run.step("s", lambda: 1), run_id="bell-1")
        assert set(_notes(listener)) == {"bell-1"}
        listener.execute(load_queries()["unlisten_events"])
        assert listener.execute("SELECT count(*) FROM tidebase.listeners").fetchone() == (0,)


def test_without_a_registered_listener_writers_do_not_notify(dsn: str, tide: Tidebase) -> None:
    """A bare LISTEN without registration hears nothing: writers skip the NOTIFY (and its commit-serializing lock)
    when nobody is registered."""
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN tidebase_events")
        tide.run("w", lambda run, input: run.step("s", lambda: 1), run_id="bell-2")
        assert _notes(listener) == []


def test_listeners_of_ended_sessions_are_pruned(dsn: str, db: psycopg.Connection[Any]) -> None:
    """A registration left by a session that ended is removed by the next registration."""
    with psycopg.connect(dsn, autocommit=True) as gone:
        gone.execute("SELECT tidebase.register_listener('tidebase_events')")
        pid = gone.info.backend_pid
    assert db.execute("SELECT count(*) FROM tidebase.listeners").fetchone() == (1,)
    wait_until(lambda: db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (0,),
               "the closed session's backend to exit")
    db.execute("SELECT tidebase.register_listener('tidebase_events')")
    assert db.execute("SELECT count(*) FROM tidebase.listeners").fetchone() == (1,)  # only the live one
