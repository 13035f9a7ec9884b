"""The server never hangs on a stalled database path: requests answer 503 within the client deadline, and the
server serves again once the path is back.

The fault is real: `tidebase serve` reaches PostgreSQL through a TCP proxy (tests/netfault.py) that is switched to
forward nothing while keeping every connection open.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from server_proc import Server, start_server, stop_server

from netfault import FaultProxy


@pytest.fixture
def proxied(server_dsn: str, dsn: str) -> Iterator[tuple[Server, FaultProxy]]:
    proxy = FaultProxy.for_dsn(server_dsn)
    srv = start_server(proxy.dsn(dsn), env={"TIDEBASE_STATEMENT_TIMEOUT_MS": "1000", "TIDEBASE_RECONCILE_MS": "200"})
    yield srv, proxy
    proxy.set_mode("pass")
    stop_server(srv)
    proxy.close()


def test_a_stalled_database_path_answers_503_in_bounded_time_and_recovers(proxied: tuple[Server, FaultProxy]) -> None:
    """While the path to PostgreSQL forwards nothing, a request answers 503 `unavailable` within the deadline
    (1 s statement timeout + 0.5 s) plus slack; after the path is back, the same request succeeds."""
    srv, proxy = proxied
    with srv.client() as client:
        created = client.post("/runs/wf", json={"runId": "r1", "input": {}})
        assert created.status_code == 201
        proxy.set_mode("blackhole")
        started = time.monotonic()
        answer = client.get("/runs/r1")
        elapsed = time.monotonic() - started
        assert answer.status_code == 503 and answer.json()["code"] == "unavailable"
        assert elapsed < 1.5 + 2.0
        proxy.set_mode("pass")
        deadline = time.monotonic() + 10
        while True:
            try:
                again = client.get("/runs/r1")
            except httpx.HTTPError:
                again = None
            if again is not None and again.status_code == 200:
                break
            assert time.monotonic() < deadline, "the server did not recover after the path came back"
            time.sleep(0.1)
        assert again.json()["run"]["id"] == "r1"
