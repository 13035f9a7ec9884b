"""Worker tests: real worker processes (worker_proc.py) against real Postgres, and the tables they log to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

WORKER = Path(__file__).with_name("worker_proc.py")


class Workers:
    """Starts worker processes (logging to files under tmp_path) and makes sure none outlives the test."""

    def __init__(self, dsn: str, folder: Path) -> None:
        self.dsn = dsn
        self.folder = folder
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, concurrency: int = 2, lease: float = 1.0, grace: float = 5.0) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen([sys.executable, str(WORKER), self.dsn, name, str(concurrency), str(lease),
                                     str(grace)],
                                    stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.procs[name].send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.procs[name].wait(timeout=30)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture
def workers(dsn: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(dsn, tmp_path)
    yield w
    w.close()


@pytest.fixture
def logtables(db: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """Creates the `executions` and `flags` tables the worker processes write to."""
    db.execute("CREATE TABLE executions (id bigserial PRIMARY KEY, run_id text, key text, worker text, "
               "at timestamptz DEFAULT clock_timestamp())")
    db.execute("CREATE TABLE flags (name text PRIMARY KEY)")
    return db
