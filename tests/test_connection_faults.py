"""Nothing hangs and nothing fails silently: wrong DSNs fail fast and say why, stalled connections surface.

The faults are real: a closed port, a role and a database that do not exist, an unresolvable host, and a TCP proxy
(tests/netfault.py) that accepts connections but forwards nothing, which is what a stalled proxy or a silently
dropping network path looks like to a client.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import conninfo

from netfault import FaultProxy
from tidebase import ConfigurationError, DatabaseUnavailable, Tidebase
from tidebase.core.connect import Timeouts, tuned_conninfo

FAST = 5.0  # the promise: a wrong DSN raises within this many seconds
SLACK = 1.5  # process and scheduling overhead on a loaded machine


@pytest.fixture
def proxy(server_dsn: str) -> Iterator[FaultProxy]:
    p = FaultProxy.for_dsn(server_dsn)
    yield p
    p.close()


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again at once: nothing listens there


def _bad_dsns(server_dsn: str) -> list[tuple[str, str, list[str]]]:
    """(id, dsn, words the error must contain)."""
    port = _refused_port()
    return [
        ("refused", f"postgresql://nobody:s3cret-pw@127.0.0.1:{port}/x", [f"127.0.0.1:{port}", 'database "x"',
                                                                        "refused", "What to do"]),
        ("no-role", conninfo.make_conninfo(server_dsn, user="no_such_role_x", password="s3cret-pw", dbname="x"),
         ['user "no_such_role_x"', "does not exist", "createuser"]),
        ("no-database", conninfo.make_conninfo(server_dsn, dbname="no_such_db_x", password="s3cret-pw"),
         ['database "no_such_db_x"', "does not exist", "createdb"]),
        ("no-host", "postgresql://u:s3cret-pw@no-such-host.invalid:5432/x",
         ["no-such-host.invalid:5432", "does not resolve"]),
    ]


@pytest.mark.parametrize("case", range(4), ids=["refused", "no-role", "no-database", "no-host"])
def test_a_wrong_dsn_fails_fast_naming_the_target_and_the_reason(server_dsn: str, case: int) -> None:
    """Opening Tidebase on an unreachable or refusing server raises DatabaseUnavailable within 5 s, naming host,
    port, database and the reason with what to do, and never the password."""
    _, dsn, words = _bad_dsns(server_dsn)[case]
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as info:
        Tidebase(dsn).runs.list()
    assert time.monotonic() - started < FAST
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)
    assert "s3cret-pw" not in message


def test_a_malformed_dsn_is_a_configuration_error_without_the_password() -> None:
    """A DSN that cannot be parsed raises ConfigurationError saying so, with the password masked."""
    with pytest.raises(ConfigurationError) as info:
        Tidebase("host=127.0.0.1 password=s3cret-pw dbname").runs.list()
    assert "malformed" in str(info.value) and "s3cret-pw" not in str(info.value)


def test_a_host_that_never_answers_fails_within_the_connect_timeout(server_dsn: str, proxy: FaultProxy) -> None:
    """A server behind a path that accepts TCP and then forwards nothing fails on first use within the connect
    timeout (5 s by default), saying the host did not answer."""
    proxy.set_mode("blackhole")
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as info:
        Tidebase(proxy.dsn(server_dsn)).runs.list()
    assert time.monotonic() - started < FAST + SLACK
    assert f"127.0.0.1:{proxy.port}" in str(info.value)


@pytest.mark.parametrize("command", [["runs", "ls"], ["migrate"], ["gates", "ls"]])
def test_every_cli_command_fails_fast_on_a_wrong_dsn(command: list[str]) -> None:
    """`tidebase <command> --dsn <wrong>` exits 2 within 5 s with the target and the reason on stderr, never the
    password."""
    port = _refused_port()
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "tidebase", *command, "--dsn",
                           f"postgresql://u:s3cret-pw@127.0.0.1:{port}/appdb"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert time.monotonic() - started < FAST + SLACK
    assert proc.returncode == 2
    assert f"127.0.0.1:{port}" in proc.stderr and 'database "appdb"' in proc.stderr and "refused" in proc.stderr
    assert "s3cret-pw" not in proc.stderr + proc.stdout


def test_defaults_bound_every_wait_within_a_minute() -> None:
    """By default a connection attempt gives up after 5 s and a silent connection is abandoned after 45 s (under
    the 60 s promise), with TCP keepalives and a server-side statement timeout set unless the DSN says otherwise."""
    timeouts = Timeouts()
    assert timeouts.connect == 5.0 and timeouts.deadline is not None and timeouts.deadline <= 60
    params = conninfo.conninfo_to_dict(tuned_conninfo("postgresql://u@h/db", timeouts))
    assert params["keepalives"] == "1" and int(params["keepalives_idle"]) <= 30
    assert params["connect_timeout"] == "5" and params["tcp_user_timeout"] == "45000"
    assert "statement_timeout=30000" in str(params["options"])
    own = conninfo.conninfo_to_dict(tuned_conninfo("postgresql://u@h/db?connect_timeout=9&options=-c%20x%3D1",
                                                   timeouts))
    assert own["connect_timeout"] == "9" and str(own["options"]).endswith("-c x=1")


def test_a_server_side_statement_timeout_is_applied(dsn: str) -> None:
    """The pool's sessions run with the configured statement timeout, which a lock held elsewhere makes fire as
    DatabaseUnavailable rather than an endless wait."""
    tide = Tidebase(dsn, statement_timeout=1.0)
    try:
        tide.run("wf", lambda run, input: run.step("a", lambda: 1), run_id="locked")
        with psycopg.connect(dsn, autocommit=True) as blocker, blocker.transaction():
            blocker.execute("SELECT 1 FROM tidebase.runs WHERE id = 'locked' FOR UPDATE")
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable):
                tide.runs.cancel("locked")
            assert time.monotonic() - started < 5
    finally:
        tide.close()


def test_a_stalled_connection_mid_run_surfaces_as_database_unavailable(
    server_dsn: str, dsn: str, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """When the path to the database stalls while a step runs, the step's checkpoint write gives up after the
    client deadline with DatabaseUnavailable (no hang), the run is not recorded as failed, and the heartbeat says
    that renewals fail."""
    caplog.set_level(logging.WARNING, logger="tidebase")
    tide = Tidebase(proxy.dsn(dsn), statement_timeout=1.0, lease_seconds=1.5)
    entered, go = threading.Event(), threading.Event()

    def wf(run: Any, input: Any) -> Any:
        run.step("first", lambda: 1)

        def slow() -> int:
            entered.set()
            go.wait(30)
            return 2

        return run.step("second", slow)

    outcome: list[BaseException | Any] = []
    thread = threading.Thread(target=lambda: _capture(outcome, lambda: tide.run("wf", wf, run_id="stall")))
    thread.start()
    try:
        assert entered.wait(30)
        proxy.set_mode("blackhole")
        started = time.monotonic()
        go.set()
        thread.join(30)
        assert not thread.is_alive()
        elapsed = time.monotonic() - started
        assert isinstance(outcome[0], DatabaseUnavailable) and "no answer" in str(outcome[0])
        assert elapsed < 1.5 + 2.0  # the deadline (1 s + 0.5 s margin), a watchdog tick and scheduling
    finally:
        go.set()
        proxy.set_mode("pass")
        tide.close()
    assert any("lease renewal failed" in r.getMessage() for r in caplog.records)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT status, failure_class FROM tidebase.runs WHERE id = 'stall'").fetchone()
    assert row == ("running", None)  # not failed: it resumes once the database answers again


def _capture(out: list[Any], fn: Any) -> None:
    try:
        out.append(fn())
    except BaseException as exc:
        out.append(exc)
