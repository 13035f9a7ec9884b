"""Helpers of the Studio's browser suite: a real `tidebase serve` process, a local webhook receiver, a background
workflow runner, and the Chromium launch settings."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LIVE_MS = 2000  # a write from another process must show on an open page within this, with no reload


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Studio:
    """A running `tidebase serve`: its base URL, process, database and settings."""

    url: str
    process: subprocess.Popen[bytes]
    dsn: str
    api_key: str | None
    home: Path
    port: int

    @property
    def studio(self) -> str:
        return self.url + "/studio"


def start(dsn: str, home: Path, *, api_key: str | None = None, port: int | None = None,
          env: dict[str, str] | None = None) -> Studio:
    """Starts `tidebase serve` on `dsn` (its Studio secret kept in `home`) and waits until it answers."""
    port = port or free_port()
    full_env = {**{k: v for k, v in os.environ.items() if not k.startswith("TIDEBASE_")},
                "TIDEBASE_DATABASE_URL": dsn, "TIDEBASE_HOME": str(home), "TIDEBASE_RECONCILE_MS": "300",
                "TIDEBASE_WEBHOOK_MAX_ATTEMPTS": "2", **(env or {})}
    if api_key:
        full_env["TIDEBASE_API_KEY"] = api_key
    proc = subprocess.Popen([sys.executable, "-m", "tidebase", "serve", "--port", str(port)], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return Studio(url, proc, dsn, api_key, home, port)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


def stop(server: Studio) -> str:
    """Stops the server; returns what it printed (for checks that nothing secret was logged)."""
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    out = server.process.stdout.read().decode(errors="replace") if server.process.stdout else ""
    if server.process.stdout:
        server.process.stdout.close()
    return out


class Receiver:
    """A local webhook endpoint: records every POST and answers 200 with a body that echoes a token-like value (the
    Studio must redact it)."""

    ANSWER = b'{"ok":true,"echo":"resolveToken=0123456789abcdef0123456789abcdef"}'

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append((self.path, body))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(Receiver.ANSWER)))
                self.end_headers()
                self.wfile.write(Receiver.ANSWER)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Background:
    """A workflow invocation running in a thread of the test process (another process than the server): its result
    or exception once it returns."""

    thread: threading.Thread
    outcome: dict[str, Any] = field(default_factory=dict)

    def join(self, timeout: float = 30) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the workflow did not finish"
        if "error" in self.outcome:
            raise self.outcome["error"]
        return self.outcome["result"]

    def error(self, timeout: float = 30) -> BaseException:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the workflow did not finish"
        return self.outcome["error"]  # type: ignore[no-any-return]


def in_background(call: Callable[[], Any]) -> Background:
    bg = Background(threading.Thread(target=lambda: None, daemon=True))

    def target() -> None:
        try:
            bg.outcome["result"] = call()
        except BaseException as exc:  # the test inspects it
            bg.outcome["error"] = exc

    bg.thread = threading.Thread(target=target, daemon=True)
    bg.thread.start()
    return bg


def wait_for(probe: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Polls `probe` (a database read) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.03)
    raise AssertionError("condition not reached in time")


def one(sql: Any, query: str, *args: Any) -> Any:
    """The first column of the first row of a query."""
    row = sql.execute(query, args).fetchone()
    return None if row is None else row[0]


def sign_in_as(page: Any, server: Studio, name: str) -> None:
    """Sets the name recorded with this browser's decisions (open mode asks only for a name)."""
    from playwright.sync_api import expect

    page.goto(f"{server.studio}/login")
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".who")).to_contain_text(name)
