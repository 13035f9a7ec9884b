"""Helpers of the server tests: a real `tidebase serve` process on a free port, and the SDK flow runner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg

HERE = Path(__file__).parent
FLOWS = HERE / "sdk" / "flows.py"
SDK_VERSION = "0.7.0"


def expire_leases(dsn: str, run_id: str, *, steps: bool = True) -> None:
    """Ends the run's lease (and its steps' leases) by the database clock, as if the holder had stalled past it:
    deterministic, where waiting for the lease to run out would be a sleep."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE tidebase.runs SET lease_expires_at = tidebase.now() - interval '1 millisecond' "
                     "WHERE id = %s AND lease_expires_at IS NOT NULL", (run_id,))
        if steps:
            conn.execute("UPDATE tidebase.steps SET lease_expires_at = tidebase.now() - interval '1 millisecond' "
                         "WHERE run_id = %s AND lease_expires_at IS NOT NULL", (run_id,))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    dsn: str
    api_key: str | None
    log_path: Path | None = None

    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far (kept in a file: a pipe nobody reads would
        fill up and freeze the server)."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def client(self, **kw: Any) -> httpx.Client:
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)


def start_server(dsn: str, *, env: dict[str, str] | None = None, api_key: str | None = None) -> Server:
    port = free_port()
    full_env = {**os.environ, "TIDEBASE_DATABASE_URL": dsn, "TIDEBASE_LEASE_MS": "1500",
                "TIDEBASE_SSE_KEEPALIVE_MS": "15000", **(env or {})}
    full_env.pop("TIDEBASE_API_KEY", None)
    if api_key:
        full_env["TIDEBASE_API_KEY"] = api_key
    log_path = Path(tempfile.mkstemp(prefix="tidebase-serve-", suffix=".log")[1])
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tidebase", "serve", "--port", str(port)],
                                env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text(errors='replace')}")
        try:
            ready = httpx.get(url + "/health/ready", timeout=1,
                              headers={"authorization": f"Bearer {api_key}"} if api_key else None)
            if ready.status_code == 200:
                return Server(url, proc, dsn, api_key, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    if server.log_path is not None:
        server.log_path.unlink(missing_ok=True)


def spawn_sdk(sdk_path: Path, url: str, name: str, *args: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEBASE_")}
    env["PYTHONPATH"] = str(sdk_path)
    return subprocess.Popen([sys.executable, str(FLOWS), name, url, *args], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Polls `probe` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")
