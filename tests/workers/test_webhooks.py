"""Webhooks from the durable outbox: signed with HMAC-SHA256 over the exact body, delivered after commit from the
dispatcher's own threads, retried with backoff with every attempt recorded; a hanging endpoint delays no run; the
recovery handler verifies the signature and resumes the run it names. Endpoints are local HTTP servers."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from fix_probe import wait_until
from tidebase import Tidebase
from tidebase.ops.webhooks import Dispatcher, handle_recovery_webhook, sign, verify_webhook_signature
from tidebase.ops.worker import Worker


class Endpoint:
    """A local HTTP server: /ok answers 200, /fail answers 500, /hang waits until `release` is set (at most 20 s)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes, dict[str, str]]] = []
        self.release = threading.Event()
        self.hanging = threading.Event()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                endpoint.received.append((self.path, body, {k.lower(): v for k, v in self.headers.items()}))
                if self.path == "/hang":
                    endpoint.hanging.set()
                    endpoint.release.wait(20)
                self.send_response(500 if self.path == "/fail" else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    yield e
    e.close()


def test_signature_round_trip() -> None:
    """The header signs the exact bytes: any change to body, secret or header fails verification."""
    body = b'{"a":1}'
    header = sign(body, "s3cret")
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_webhook_signature(body, header, "s3cret")
    assert not verify_webhook_signature(b'{"a": 1}', header, "s3cret")
    assert not verify_webhook_signature(body, header, "other")
    assert not verify_webhook_signature(body, None, "s3cret")
    assert not verify_webhook_signature(body, header.replace("sha256=", "sha1="), "s3cret")


def test_channel_webhook_is_signed_and_delivered_after_commit(dsn: str, endpoint: Endpoint) -> None:
    """A run's channel webhook filtered to run.completed is delivered once the run completes, signed over the exact
    body; the delivery and its attempt are recorded."""
    tide = Tidebase(dsn, lease_seconds=1)
    tide.workflow("w")(lambda run, input: run.step("x", lambda: 42))
    run = tide.enqueue("w", webhooks=[{"url": endpoint.url + "/ok", "secret": "k", "events": ["run.completed"]}])
    tide.work(burst=True, poll_interval=0.02, reconcile=False)
    dispatcher = Dispatcher(tide.engine.database().pool.conninfo, poll_interval=0.02)  # type: ignore[arg-type]
    dispatcher.start()
    wait_until(lambda: len(endpoint.received) == 1, "the delivery")
    dispatcher.stop()
    _, body, headers = endpoint.received[0]
    assert verify_webhook_signature(body, headers["x-tidebase-signature"], "k")
    message = json.loads(body)
    assert message["type"] == "run.completed" and message["runId"] == run.id
    assert message["payload"]["run"]["result"] == 42
    with psycopg.connect(dsn) as conn:
        wait_until(lambda: conn.execute("SELECT status FROM tidebase.outbox").fetchall() == [("delivered",)],
                   "the outcome to be recorded")
        attempts = conn.execute("SELECT attempt, ok, status_code FROM tidebase.outbox_attempts").fetchall()
    assert attempts == [(1, True, 200)]
    tide.close()


def test_failing_endpoint_is_retried_with_backoff_and_every_attempt_recorded(dsn: str, endpoint: Endpoint) -> None:
    """A delivery answered 500 is retried (backoff doubling) until its max attempts, then `dead`; each attempt is a
    row with its status code."""
    tide = Tidebase(dsn)
    run = tide.enqueue("w", webhooks=[{"url": endpoint.url + "/fail", "events": ["run.cancelled"]}])
    tide.runs.cancel(run.id, reason="test")
    db = psycopg.connect(dsn, autocommit=True)
    assert db.execute("SELECT event_type FROM tidebase.outbox").fetchall() == [("run.cancelled",)]
    db.execute("UPDATE tidebase.outbox SET max_attempts = 3")
    dispatcher = Dispatcher(tide.engine.database().pool.conninfo, backoff=0.01)  # type: ignore[arg-type]
    with psycopg.connect(dsn, autocommit=True) as conn:
        wait_until(lambda: (dispatcher.deliver_once(conn), db.execute(
            "SELECT status FROM tidebase.outbox").fetchone() == ("dead",))[1], "the delivery to die")
    rows = db.execute("SELECT attempt, ok, status_code FROM tidebase.outbox_attempts ORDER BY attempt").fetchall()
    assert rows == [(1, False, 500), (2, False, 500), (3, False, 500)]
    [delivery] = tide.runs.deliveries(run.id)
    assert (delivery["status"], delivery["attempts"], delivery["last_error"]) == ("dead", 3, "HTTP 500")
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 500]
    starts = [r[0] for r in db.execute("SELECT started_at FROM tidebase.outbox_attempts ORDER BY attempt")]
    assert (starts[2] - starts[1]) >= (starts[1] - starts[0]) * 0.5
    assert len(endpoint.received) == 3
    dispatcher.stop()
    db.close()
    tide.close()


def test_a_hanging_endpoint_does_not_delay_other_runs(dsn: str, endpoint: Endpoint) -> None:
    """While a webhook endpoint hangs on a delivery of run A, the worker (with its dispatcher) completes run B and a
    further run; the hanging delivery is recorded once it ends."""
    tide = Tidebase(dsn, lease_seconds=1)
    tide.workflow("w")(lambda run, input: run.step("x", lambda: input["n"]))
    a = tide.enqueue("w", input={"n": 1}, webhooks=[{"url": endpoint.url + "/hang", "secret": "k"}])
    worker = Worker(tide, poll_interval=0.02, reconcile_interval=0.05, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert endpoint.hanging.wait(20), "the dispatcher reached the hanging endpoint"
        b = tide.enqueue("w", input={"n": 2})
        c = tide.enqueue("w", input={"n": 3}, webhooks=[{"url": endpoint.url + "/ok", "events": ["run.completed"]}])
        wait_until(lambda: tide.runs.get(c.id).status == "completed", "B and C to complete", timeout=10)
        assert tide.runs.get(b.id).status == "completed"
        wait_until(lambda: any(p == "/ok" for p, _, _ in endpoint.received), "C's delivery despite the hang")
        assert not endpoint.release.is_set()  # A's delivery is still hanging the whole time
        assert tide.runs.get(a.id).status == "completed"
    finally:
        endpoint.release.set()
        worker.stop()
        thread.join(30)
    tide.close()


def test_recovery_webhook_and_handler_resume_the_run(dsn: str, endpoint: Endpoint) -> None:
    """A run that fails for good with a recovery webhook gets one signed `run.resume` webhook (reason run_failed),
    recorded with recovery.started and recovery.delivered; the handler refuses a bad signature and, given the
    delivered body, resumes the run to completion."""
    tide = Tidebase(dsn)
    calls: list[int] = []

    def flaky(run: Any, input: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first try fails")
        return run.step("x", lambda: "resumed")

    tide.workflow("w")(flaky)
    run = tide.enqueue("w", recovery_webhook={"url": endpoint.url + "/ok", "secret": "rk"})
    Worker(tide, poll_interval=0.01, reconcile=False, handle_signals=False, burst=True).run()
    assert tide.runs.get(run.id).status == "failed"
    dispatcher = Dispatcher(tide.engine.database().pool.conninfo, poll_interval=0.02)  # type: ignore[arg-type]
    dispatcher.start()
    wait_until(lambda: len(endpoint.received) == 1, "the recovery webhook")
    wait_until(lambda: "recovery.delivered" in [e.type for e in tide.runs.events(run.id)], "its outcome recorded")
    dispatcher.stop()
    _, body, headers = endpoint.received[0]
    assert json.loads(body) == {"type": "run.resume", "runId": run.id, "workflowName": "w", "reason": "run_failed",
                                "attempt": 1}
    assert headers["x-tidebase-delivery"].startswith("rec_") and headers["x-tidebase-attempt"] == "1"
    started = [e.payload for e in tide.runs.events(run.id) if e.type == "recovery.started"]
    assert started == [{"recoveryAttemptId": headers["x-tidebase-delivery"], "reason": "run_failed"}]
    assert handle_recovery_webhook(tide, body, "sha256=00", "rk")[0] == 401
    assert handle_recovery_webhook(tide, b"{}", sign(b"{}", "rk"), "rk")[0] == 400
    status, answer = handle_recovery_webhook(tide, body, headers["x-tidebase-signature"], "rk")
    assert (status, answer) == (200, {"runId": run.id, "result": "resumed"})
    assert tide.runs.get(run.id).status == "completed"
    tide.close()
