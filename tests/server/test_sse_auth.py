"""The SSE stream (resume, keep-alive, doorbell reconnect, 404) and authentication/CORS, over real HTTP against a
real `tidebase serve` process."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from server_proc import Server, start_server, stop_server, wait_for

from tidebase.server.serve import RedactTokens

KEY = "s3cret-key-for-tests"
DOORBELL = "application_name = 'tidebase-doorbell' AND datname = current_database()"


def data_lines(lines: Iterator[str], n: int) -> list[dict[str, Any]]:
    got = []
    for line in lines:
        if line.startswith("data:"):
            got.append(json.loads(line[5:]))
            if len(got) == n:
                break
    return got


@pytest.fixture
def fast_keepalive(dsn: str) -> Iterator[Server]:
    srv = start_server(dsn, env={"TIDEBASE_SSE_KEEPALIVE_MS": "300"})
    yield srv
    stop_server(srv)


def test_resume_after_and_last_event_id(server: Server) -> None:
    with server.client() as http:
        run = http.post("/runs/x", json={}).json()["run"]
        for i in range(5):
            http.put(f"/runs/{run['id']}/state", json={"value": i})
        with http.stream("GET", f"/runs/{run['id']}/events", params={"after": 2}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert resp.headers["cache-control"] == "no-cache"
            assert [e["seq"] for e in data_lines(resp.iter_lines(), 4)] == [3, 4, 5, 6]
        with http.stream("GET", f"/runs/{run['id']}/events", headers={"last-event-id": "4"},
                         params={"after": 1}) as resp:
            lines = resp.iter_lines()
            assert [e["seq"] for e in data_lines(lines, 2)] == [5, 6]
            http.put(f"/runs/{run['id']}/state", json={"value": "live"})
            live = data_lines(lines, 1)[0]
            assert (live["seq"], live["type"], live["payload"]["value"]) == (7, "state.updated", "live")
        assert http.get("/runs/nope/events").json()["code"] == "run_not_found"
        assert http.get(f"/runs/{run['id']}/events", params={"after": "-1"}).status_code == 400
        assert http.get(f"/runs/{run['id']}/events", headers={"last-event-id": "x"}).status_code == 400


def test_keepalive_comments_while_idle(fast_keepalive: Server) -> None:
    with fast_keepalive.client() as http:
        run = http.post("/runs/x", json={}).json()["run"]
        with http.stream("GET", f"/runs/{run['id']}/events") as resp:
            lines = resp.iter_lines()
            assert data_lines(lines, 1)[0]["seq"] == 1
            t0 = time.monotonic()
            assert next(line for line in lines if line.startswith(":")) == ": keep-alive"
            assert 0.2 < time.monotonic() - t0 < 3


def test_doorbell_reconnects_after_its_connection_dies(server: Server) -> None:
    with server.client() as http, psycopg.connect(server.dsn, autocommit=True) as admin:
        run = http.post("/runs/x", json={}).json()["run"]
        with http.stream("GET", f"/runs/{run['id']}/events") as resp:
            lines = resp.iter_lines()
            data_lines(lines, 1)
            killed = admin.execute(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {DOORBELL}"
                                   ).fetchone()
            assert killed == (1,)
            reconnected = (f"SELECT count(*) FROM tidebase.listeners l JOIN pg_stat_activity a USING (pid) "
                           f"WHERE {DOORBELL}")
            wait_for(lambda: admin.execute(reconnected).fetchone() == (1,) or None)  # registered again
            t0 = time.monotonic()
            http.put(f"/runs/{run['id']}/state", json={"value": 1})
            assert data_lines(lines, 1)[0]["seq"] == 2
            assert time.monotonic() - t0 < 2.0  # rung by the reconnected doorbell, not the 5 s poll
            listening = admin.execute(f"SELECT count(*) FROM pg_stat_activity WHERE {DOORBELL}").fetchone()
            assert listening == (1,)


@pytest.fixture
def keyed(dsn: str) -> Iterator[Server]:
    srv = start_server(dsn, api_key=KEY, env={"TIDEBASE_CORS_ORIGIN": "https://a.example, https://b.example"})
    yield srv
    stop_server(srv)


def test_api_key(keyed: Server) -> None:
    url = keyed.url
    assert httpx.get(url + "/health").json()["ok"] is True
    denied = httpx.get(url + "/runs")
    assert denied.status_code == 401 and denied.json()["code"] == "unauthorized"
    assert denied.headers["www-authenticate"] == "Bearer"
    assert httpx.get(url + "/no/such/path").status_code == 401  # before routing
    assert httpx.get(url + "/runs", headers={"authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url + "/runs", headers={"authorization": f"Bearer {KEY}x"}).status_code == 401
    assert httpx.get(url + "/runs", headers={"authorization": f"bearer {KEY}"}).status_code == 200
    run = httpx.post(url + "/runs/x", json={}, headers={"authorization": f"Bearer {KEY}"}).json()["run"]
    assert httpx.get(url + "/runs", params={"token": KEY}).status_code == 401  # ?token= only on the SSE route
    with httpx.stream("GET", f"{url}/runs/{run['id']}/events", params={"token": KEY}) as resp:
        assert resp.status_code == 200
        assert data_lines(resp.iter_lines(), 1)[0]["type"] == "run.created"
    wrong_header = httpx.get(f"{url}/runs/{run['id']}/events", params={"token": KEY},
                             headers={"authorization": "Bearer nope"})
    assert wrong_header.status_code == 401


def test_cors(keyed: Server) -> None:
    pre = httpx.options(keyed.url + "/runs", headers={"origin": "https://b.example",
                                                     "access-control-request-method": "POST"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "https://b.example"
    assert "x-tidebase-worker" in pre.headers["access-control-allow-headers"]
    assert pre.headers["access-control-max-age"] == "600"
    other = httpx.get(keyed.url + "/health", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers and other.headers["vary"] == "Origin"


def test_sdk_subscribe_with_key_sends_token_query(sdk_path: Path, keyed: Server, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from server_proc import FLOWS

    with keyed.client() as http:
        run = http.post("/runs/x", json={}).json()["run"]
        http.put(f"/runs/{run['id']}/state", json={"value": 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEBASE_")}
    env.update(PYTHONPATH=str(sdk_path), TB_TEST_API_KEY=KEY)
    done = subprocess.run([sys.executable, str(FLOWS), "subscribe", keyed.url, run["id"], "2"], env=env,
                          cwd=tmp_path, capture_output=True, timeout=60, check=True)
    events = json.loads(done.stdout.decode().splitlines()[-1])["events"]
    assert [e["type"] for e in events] == ["run.created", "state.updated"]


def test_open_mode_warns_and_binds_loopback(server: Server) -> None:
    """Without an API key the server says it runs in open mode and binds the loopback address only."""
    server.process.terminate()
    server.process.wait(10)
    out = server.log()
    assert "open mode" in out and "127.0.0.1" in out


def test_access_log_redacts_tokens() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("1.2.3.4", "GET", "/runs/r/events?after=0&token=abc123", "1.1", 200), None)
    RedactTokens().filter(record)
    assert "abc123" not in record.getMessage()
    assert "token=[redacted]" in record.getMessage()
