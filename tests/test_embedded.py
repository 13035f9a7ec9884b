"""The embedded PostgreSQL: a real server from the wheel, shared by local processes, gone with its last client.

Every test gets its own home folder and starts real servers in real processes; nothing is mocked. When the tests run
as root the server runs as an unprivileged user, so the home folder is made traversable for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from tidebase.core import embedded as _embedded

pytestmark = pytest.mark.embedded

IDLE_SECONDS = 1.0  # the watchdog's grace period in these tests
DEADLINE = 15.0  # how long a server may take to go away once nobody uses it
SRC = str(Path(_embedded.__file__).resolve().parents[1])
CLIENT = """
import sys, time
from pathlib import Path
from tidebase.core import embedded as _embedded
if len(sys.argv) > 1:  # wait at a starting line, so that several clients call at the same moment
    print("ready", flush=True)
    while not Path(sys.argv[1]).exists():
        time.sleep(0.001)
started = time.perf_counter()
dsn = _embedded.ensure_server()
print(dsn, time.perf_counter() - started, flush=True)
time.sleep(600)
"""

Spawn = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh home folder, world-traversable so that an unprivileged server user can reach its data."""
    # Not under tmp_path: as root, pytest's base folder is 0700, which the server user could not traverse.
    path = Path(tempfile.mkdtemp(prefix="tidebase-embedded-"))
    path.chmod(0o711)
    monkeypatch.setenv("TIDEBASE_HOME", str(path))
    monkeypatch.setenv("TIDEBASE_EMBEDDED_IDLE_SECONDS", str(IDLE_SECONDS))
    yield path
    _embedded.stop()
    wait_until(lambda: gone(path), "the server and its watchdog to be gone after stop()")
    shutil.rmtree(path)


@pytest.fixture
def spawn(home: Path) -> Iterator[Spawn]:
    """Start client processes that call ensure_server() and then sleep; all are killed at the end of the test."""
    procs: list[subprocess.Popen[str]] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", CLIENT, *args], env=env, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def dsn_of(proc: subprocess.Popen[str]) -> tuple[str, float]:
    """The DSN a client process printed, and how long its ensure_server() call took."""
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line, f"client {proc.pid} exited with {proc.wait()}"
    return line[0], float(line[1])


def processes(home: Path, kind: str) -> list[psutil.Process]:
    """The live postmasters ("postgres") or watchdogs ("watchdog") of this home folder."""
    marker = ["-D", str(home / "pg")] if kind == "postgres" else ["--watch", str(home)]
    found = []
    for proc in psutil.process_iter(["cmdline", "status", "ppid"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and all(part in cmdline for part in marker):
            found.append(proc)
    # A child the postmaster has just forked still shows its parent's command line for a moment: not a server.
    return [proc for proc in found if proc.info["ppid"] not in {other.pid for other in found}]


def wait_until(condition: Callable[[], bool], what: str) -> float:
    """Poll `condition` until it holds, failing after DEADLINE seconds; return the time it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < DEADLINE, f"still waiting after {DEADLINE}s for {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def gone(home: Path) -> bool:
    """Whether neither status() nor the process table shows a server or a watchdog for this home folder."""
    return not _embedded.status().running and not processes(home, "postgres") and not processes(home, "watchdog")


def test_ensure_server_runs_a_real_durable_server_as_an_unprivileged_user(home: Path) -> None:
    """ensure_server() returns a DSN to a real PostgreSQL with fsync on, bound to 127.0.0.1, not running as root."""
    dsn = _embedded.ensure_server()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SELECT current_database()").fetchone() == ("tidebase",)
    status = _embedded.status()
    assert status.running
    assert status.dsn == dsn
    assert status.port is not None
    assert status.port != 5432
    assert status.data_dir == home
    assert status.users == 1
    assert status.pid is not None
    assert psutil.Process(status.pid).uids().effective != 0
    if os.geteuid() == 0:
        assert psutil.Process(status.pid).username() == _embedded.RUN_AS_WHEN_ROOT
    assert [p.pid for p in processes(home, "postgres")] == [status.pid]


def test_a_second_process_reuses_the_server_quickly(home: Path, spawn: Spawn) -> None:
    """Another process gets the same DSN in well under 50 ms, and no second server is started."""
    dsn = _embedded.ensure_server()
    pid = _embedded.status().pid
    again, took = dsn_of(spawn())
    assert again == dsn
    assert took < 0.05
    assert _embedded.status().pid == pid
    assert len(processes(home, "postgres")) == 1
    assert _embedded.status().users == 2


def test_sigkill_of_the_only_client_stops_the_server(home: Path, spawn: Spawn) -> None:
    """When the only client is SIGKILLed, the server and its watchdog are gone within the deadline."""
    client = spawn()
    dsn_of(client)
    status = _embedded.status()
    assert status.running
    assert status.users == 1
    client.send_signal(signal.SIGKILL)
    client.wait()
    wait_until(lambda: gone(home), "the server to stop after its only client was killed")


def test_the_server_is_shared_until_its_last_client_is_killed(home: Path, spawn: Spawn) -> None:
    """With two clients, killing one leaves the server up and usable; killing the other stops it."""
    first, second = spawn(), spawn()
    dsn = dsn_of(first)[0]
    assert dsn_of(second)[0] == dsn
    pid = _embedded.status().pid
    first.kill()
    first.wait()
    wait_until(lambda: _embedded.status().users == 1, "the killed client to be seen as gone")
    time.sleep(IDLE_SECONDS + 1.5)  # longer than the grace period plus a watchdog check: it must have kept the server
    assert _embedded.status().pid == pid
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    second.kill()
    second.wait()
    wait_until(lambda: gone(home), "the server to stop after its last client was killed")


def test_concurrent_first_calls_start_exactly_one_server(home: Path, spawn: Spawn, tmp_path: Path) -> None:
    """Four processes calling ensure_server() at the same moment on a fresh home share one server."""
    go = tmp_path / "go"
    clients = [spawn(str(go)) for _ in range(4)]
    for client in clients:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "ready"
    go.touch()
    dsns = {dsn_of(client)[0] for client in clients}
    assert len(dsns) == 1
    assert len(processes(home, "postgres")) == 1
    assert len(processes(home, "watchdog")) == 1
    assert _embedded.status().users == 4


def test_stop_stops_the_server_and_a_restart_keeps_the_port(home: Path) -> None:
    """stop() stops a running server and reports it; status() then says not running; a new start reuses the port."""
    dsn = _embedded.ensure_server()
    assert _embedded.stop() is True
    assert not _embedded.status().running
    assert not processes(home, "postgres")
    wait_until(lambda: gone(home), "the watchdog to leave after stop()")
    assert _embedded.stop() is False
    assert _embedded.ensure_server() == dsn


def test_the_watchdog_leaves_when_postgres_dies_and_the_next_call_restarts_it(home: Path, spawn: Spawn) -> None:
    """If postgres dies under a live client, the watchdog exits and the next ensure_server() starts a new server."""
    dsn = dsn_of(spawn())[0]
    pid = _embedded.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGQUIT)  # immediate shutdown, as if it had crashed
    wait_until(lambda: gone(home), "the watchdog to leave after postgres died")
    assert _embedded.ensure_server() == dsn
    assert _embedded.status().pid != pid


def test_a_killed_watchdog_takes_postgres_down_with_it(home: Path, spawn: Spawn) -> None:
    """SIGKILL of the watchdog itself still leaves no orphan postgres behind."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux only")
    dsn_of(spawn())
    [watchdog] = processes(home, "watchdog")
    watchdog.kill()
    wait_until(lambda: not processes(home, "postgres"), "postgres to stop after its watchdog was killed")


def test_a_server_that_cannot_start_raises_with_the_end_of_its_log(home: Path) -> None:
    """A start failure raises EmbeddedError quoting the server log, here a bad setting in postgresql.conf."""
    _embedded.ensure_server()
    _embedded.stop()
    with open(home / "pg" / "postgresql.conf", "a") as conf:
        conf.write("max_connections = 'many'\n")
    with pytest.raises(_embedded.EmbeddedError, match="max_connections"):
        _embedded.ensure_server()
    assert not processes(home, "postgres")


def test_the_first_start_says_what_it_is_doing(home: Path) -> None:
    """`tidebase migrate` on a fresh home says on stderr that it is creating the embedded PostgreSQL, and when it is
    ready; a later command that reuses the running server says nothing of it."""
    env = {k: v for k, v in os.environ.items() if k not in ("TIDEBASE_DATABASE_URL", "DATABASE_URL")}
    env["PYTHONPATH"] = os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])
    first = subprocess.run([sys.executable, "-m", "tidebase", "migrate"], env=env, capture_output=True, text=True,
                           timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    assert "tidebase: creating and starting the embedded PostgreSQL in" in first.stderr
    assert "the embedded PostgreSQL is ready on 127.0.0.1:" in first.stderr
    keep = subprocess.Popen([sys.executable, "-c", CLIENT], env=env, stdout=subprocess.PIPE, text=True)
    try:
        dsn_of(keep)  # a client keeps the server up between the two commands
        again = subprocess.run([sys.executable, "-m", "tidebase", "migrate"], env=env, capture_output=True,
                               text=True, timeout=120, check=False)
        assert again.returncode == 0 and "embedded PostgreSQL" not in again.stderr
    finally:
        keep.kill()
        keep.wait()
        assert keep.stdout is not None
        keep.stdout.close()
