"""Outbound webhooks of a real `tidebase serve` process (docs/http-api.md#webhooks): recovery webhooks and channel
deliveries leave after commit from the outbox, signed, verified by the upstream SDK's own function, and their outcome is
recorded, win or lose. Waits poll the API; nothing sleeps for a fixed time."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_proc import Server, start_server, stop_server, wait_for

SECRET = "whsec-test-7f3a"


class Receiver:
    """A local HTTP endpoint that records every POST and answers 200."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes, dict[str, str]]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append((self.path, body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "11")
                self.end_headers()
                self.wfile.write(b'{"ok":true}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path: str) -> list[tuple[bytes, dict[str, str]]]:
        return [(body, headers) for p, body, headers in self.received if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def hooked(dsn: str) -> Iterator[Server]:
    srv = start_server(dsn, env={"TIDEBASE_WEBHOOK_SECRET": SECRET, "TIDEBASE_RECONCILE_MS": "200",
                                 "TIDEBASE_WEBHOOK_MAX_ATTEMPTS": "2"})
    yield srv
    stop_server(srv)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_failed_run_is_resumed_through_its_recovery_webhook(hooked: Server, receiver: Receiver, sdk_at: Any,
                                                            tmp_path: Path) -> None:
    """One server process only: every replica's dispatcher delivers from the shared outbox, so a second process
    without TIDEBASE_WEBHOOK_SECRET would send some webhooks unsigned (replicas must share the secret)."""

    def sdk(name: str, *args: str) -> Any:
        return sdk_at(name, *args, url=hooked.url)

    with hooked.client() as http:
        run = http.post("/runs/healing", json={"recoveryWebhook": receiver.url + "/resume", "channels": [
            {"url": receiver.url + "/ch", "secret": "chan-secret", "events": ["run.failed", "run.completed"]}]}
                        ).json()["run"]
        owner = http.post(f"/runs/{run['id']}/begin").json()["leaseOwner"]
        failed = http.post(f"/runs/{run['id']}/fail", json={"error": {"message": "boom"}, "leaseOwner": owner})
        assert failed.json()["run"]["status"] == "failed"
        [(body, headers)] = wait_for(lambda: receiver.to("/resume"))
        assert json.loads(body) == {"type": "run.resume", "runId": run["id"], "workflowName": "healing",
                                    "reason": "run_failed", "attempt": 1}
        assert headers["x-tidebase-delivery"].startswith("rec_") and headers["x-tidebase-attempt"] == "1"
        assert headers["user-agent"].startswith("tidebase-python/")
        (tmp_path / "body").write_bytes(body)
        assert sdk("verify", str(tmp_path / "body"), headers["x-tidebase-signature"], SECRET) == {"valid": True}
        assert sdk("verify", str(tmp_path / "body"), headers["x-tidebase-signature"], "wrong") == {"valid": False}
        # the receiver's job: resume the run with the SDK (docs/http-api.md#recovery-webhooks: it runs the workflow
        # before answering)
        assert sdk("finish", run["id"]) == {"result": "healed"}
        detail = wait_for(lambda: (d := http.get(f"/runs/{run['id']}").json())["recoveryAttempts"][0]["status"]
                          == "delivered" and d)
    assert detail["run"]["status"] == "completed"
    [attempt] = detail["recoveryAttempts"]
    assert (attempt["httpStatus"], attempt["responseBody"], attempt["attempts"]) == (200, '{"ok":true}', 1)
    types = [e["type"] for e in detail["events"]]
    assert types.index("run.failed") < types.index("recovery.started") < types.index("recovery.delivered")
    deliveries = wait_for(lambda: len(receiver.to("/ch")) == 2 and receiver.to("/ch"))
    messages = [json.loads(b) for b, _ in deliveries]
    assert [m["type"] for m in messages] == ["run.failed", "run.completed"]
    assert all(set(m) == {"type", "runId", "gateId", "deliveryId", "payload"} for m in messages)
    failed_payload, completed_payload = (m["payload"] for m in messages)  # the objects of docs/http-api.md#channels
    assert (failed_payload["run"]["status"], failed_payload["error"]) == ("failed", {"message": "boom"})
    assert (completed_payload["run"]["status"], completed_payload["run"]["result"]) == ("completed", "healed")
    assert "chan-secret" not in json.dumps(messages)
    for (body, headers), message in zip(deliveries, messages, strict=True):
        assert headers["x-tidebase-delivery"] == message["deliveryId"]
        assert headers["x-tidebase-event-seq"] == str(next(
            e["seq"] for e in detail["events"] if e["type"] == message["type"]))
        (tmp_path / "ch").write_bytes(body)
        assert sdk("verify", str(tmp_path / "ch"), headers["x-tidebase-signature"], "chan-secret") == {"valid": True}


def test_unreachable_receiver_ends_failed_and_recorded(hooked: Server) -> None:
    url = f"http://127.0.0.1:{closed_port()}/nobody"
    with hooked.client() as http:
        run = http.post("/runs/wf", json={"recoveryWebhook": url}).json()["run"]
        accepted = http.post(f"/runs/{run['id']}/recover", json={"reason": "operator"})
        assert accepted.status_code == 202 and accepted.json()["recoveryAttempt"]["status"] == "pending"
        first = wait_for(lambda: (a := http.get(f"/runs/{run['id']}").json()["recoveryAttempts"][0])["errorText"]
                         and a)  # the first failed try is recorded
        if first["status"] == "pending":  # between the two tries: a retry is planned
            assert first["attempts"] >= 1 and first["nextAttemptAt"] is not None
        final = wait_for(lambda: (a := http.get(f"/runs/{run['id']}").json()["recoveryAttempts"][0])["status"]
                         == "failed" and a, timeout=20)
        events = [e for e in http.get(f"/runs/{run['id']}").json()["events"] if e["type"] == "recovery.failed"]
    assert final["attempts"] == 2 and final["httpStatus"] is None and "Error" in final["errorText"]
    assert final["completedAt"] is not None and final["nextAttemptAt"] is None
    assert [e["payload"]["recoveryAttemptId"] for e in events] == [final["id"]]
    assert "error" in events[0]["payload"]
