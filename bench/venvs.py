"""The systems compared, and the virtualenv each one runs in.

The floor and Tidebase run from the current (main) virtualenv. Each peer gets its own virtualenv, created on first
use and installed from PyPI by name with pinned versions, so no peer's dependencies meet Tidebase's or another
peer's. Every peer virtualenv is also given the main virtualenv's psycopg version, so all systems talk to
PostgreSQL through the same client library. Virtualenvs are kept in a cache folder outside the repository
(`$TIDEBASE_BENCH_VENVS`, else the user cache folder, e.g. `~/.cache/tidebase-bench/venvs`), one folder per peer
and per exact requirement set: changing a pin creates a new one.

The `upstream` system is the upstream Tidebase server at `$TIDEBASE_URL`, driven over HTTP by its published Python
SDK (PyPI `tidebase`, whose import name is this project's too, hence its own virtualenv). It talks to no PostgreSQL
itself, so its virtualenv gets no psycopg; it runs only when `$TIDEBASE_URL` is set (see `bench.compare`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import psycopg

PEERS_DIR = Path(__file__).resolve().parent / "peers"
_COMPLETE = ".bench-complete"


@dataclass(frozen=True)
class SystemSpec:
    """One compared system: its label, its script under `bench/peers/`, and, for a peer, its pinned requirements
    (None: runs from the main virtualenv). `over_http`: the system is a server reached over HTTP, whose own
    PostgreSQL connections are out of the benchmark's reach (no psycopg pin, no SQL counting, no goal line)."""

    name: str
    label: str
    script: str
    requirements: tuple[str, ...] | None = None
    over_http: bool = False

    @property
    def is_peer(self) -> bool:
        return self.requirements is not None

    @property
    def script_path(self) -> Path:
        return PEERS_DIR / self.script


FLOOR = SystemSpec("floor", "floor: psycopg INSERT + COMMIT", "run_floor.py")
TIDEBASE = SystemSpec("tidebase", "tidebase run.step", "run_tidebase.py")
DBOS = SystemSpec("dbos", "DBOS Transact @DBOS.step", "run_dbos.py", ("dbos==3.4.0",))
LANGGRAPH = SystemSpec("langgraph", "LangGraph + PostgresSaver", "run_langgraph.py",
                       ("langgraph==1.2.24", "langgraph-checkpoint-postgres==3.2.0"))
UPSTREAM = SystemSpec("upstream", "upstream server, SDK run.step", "run_upstream.py", ("tidebase==0.7.0",),
                      over_http=True)
FLOOR_NOTIFY = SystemSpec("floor_notify", "diagnostic: floor INSERT + pg_notify", "run_floor_notify.py")
SYSTEMS = {spec.name: spec for spec in (FLOOR, TIDEBASE, DBOS, LANGGRAPH, UPSTREAM)}
PEERS = tuple(name for name, spec in SYSTEMS.items() if spec.is_peer)
DIAGNOSTICS = {FLOOR_NOTIFY.name: FLOOR_NOTIFY}  # extra rows of the concurrent-workers table only
LABELS = {name: spec.label for name, spec in (SYSTEMS | DIAGNOSTICS).items()}


def default_venv_root() -> Path:
    """`$TIDEBASE_BENCH_VENVS`, else `<user cache folder>/tidebase-bench/venvs`."""
    if root := os.environ.get("TIDEBASE_BENCH_VENVS"):
        return Path(root).expanduser()
    return platformdirs.user_cache_path("tidebase-bench") / "venvs"


def requirements(spec: SystemSpec) -> list[str]:
    """The peer's pinned packages plus the main virtualenv's exact psycopg (binary build); an HTTP system's pinned
    packages only."""
    assert spec.requirements is not None
    if spec.over_http:
        return [*spec.requirements]
    return [*spec.requirements, f"psycopg[binary]=={psycopg.__version__}"]


def venv_dir(spec: SystemSpec, root: Path) -> Path:
    """One folder per peer, Python version and requirement set."""
    key = "\n".join([sys.version, *requirements(spec)])
    return root / f"{spec.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def ensure_venv(spec: SystemSpec, root: Path, log: Callable[[str], None]) -> Path:
    """The Python interpreter of the peer's virtualenv, creating and installing it first if needed."""
    folder = venv_dir(spec, root)
    python = folder / "bin" / "python"
    if (folder / _COMPLETE).exists() and python.exists():
        return python
    log(f"installing {spec.name} into {folder}: {' '.join(requirements(spec))}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    *requirements(spec)], check=True)
    (folder / _COMPLETE).write_text("\n".join(requirements(spec)) + "\n", encoding="utf-8")
    return python


def interpreter(spec: SystemSpec, root: Path, log: Callable[[str], None]) -> Path:
    """The interpreter that runs the system's script: the main one, or the peer's own virtualenv."""
    return ensure_venv(spec, root, log) if spec.is_peer else Path(sys.executable)
