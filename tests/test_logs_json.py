"""Structured log lines (tidebase.ops.logs): one line per run transition on `tidebase.runs` with run id, workflow and
attempt as fields; the JSON format prints one object per line with time, level, logger, message and those fields,
for the library's handler, `tidebase worker` and `tidebase serve` (`--log-format json` / TIDEBASE_LOG_FORMAT)."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tidebase import RunSuspended, Tidebase
from tidebase.ops.logs import configure_logging

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "server"))
from server_proc import start_server, stop_server


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("INFO", "json", stream)
    yield stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_transition_is_one_json_line_with_its_fields(tide: Tidebase, json_log: io.StringIO) -> None:
    """created, started, failed, started, completed, and suspended, each one JSON object with time, level, logger,
    message, event, run_id, workflow and attempt; a failure names its error type."""
    fail = [True]

    def wf(run: Any, input: Any) -> Any:
        if fail[0]:
            raise KeyError("first time")
        return run.step("s", lambda: 1)

    with pytest.raises(KeyError):
        tide.run("logged", wf, run_id="l-1")
    fail[0] = False
    tide.run("logged", wf, run_id="l-1")

    def waits(run: Any, input: Any) -> Any:
        run.gates.begin("g", "Go?")
        return run.gate("g", suspend=True)

    with pytest.raises(RunSuspended):
        tide.run("waits", waits, run_id="l-2")
    docs = [d for d in lines(json_log) if d["logger"] == "tidebase.runs"]
    assert [(d["event"], d["run_id"], d["attempt"]) for d in docs] == [
        ("run.created", "l-1", None), ("run.started", "l-1", 1), ("run.failed", "l-1", 1),
        ("run.started", "l-1", 2), ("run.completed", "l-1", 2),
        ("run.created", "l-2", None), ("run.started", "l-2", 1), ("run.suspended", "l-2", 1)]
    assert all({"time", "level", "logger", "message", "workflow"} <= set(d) for d in docs)
    failed = docs[2]
    assert failed["level"] == "INFO" and failed["error_type"] == "KeyError" and failed["workflow"] == "logged"
    assert failed["message"].startswith("run l-1: failed")


def test_enqueue_and_worker_transitions_are_logged(tide: Tidebase, json_log: io.StringIO) -> None:
    """A queued run: created (with its queue), started and completed by a worker."""

    @tide.workflow("queued")
    def wf(run: Any, input: Any) -> Any:
        return 1

    tide.enqueue("queued", queue="lq", run_id="l-3")
    tide.work(["lq"], burst=True, poll_interval=0.05, handle_signals=False, webhooks=False)
    events = [(d["event"], d.get("queue")) for d in lines(json_log)
              if d["logger"] == "tidebase.runs" and d["run_id"] == "l-3"]
    assert events == [("run.created", "lq"), ("run.started", None), ("run.completed", None)]


def test_a_traceback_in_json_is_cut_to_first_lines(json_log: io.StringIO) -> None:
    """A record's exception is printed with each message cut to its first line (a database DETAIL may quote a row)."""
    secret = "-".join(["secret", "value"])  # not in the source line the traceback quotes
    try:
        raise RuntimeError(f"first line\nDETAIL: Failing row contains ({secret})")
    except RuntimeError:
        logging.getLogger("tidebase.test").exception("it failed")
    [doc] = lines(json_log)
    assert "first line" in doc["exception"] and secret not in doc["exception"]


def test_tidebase_serve_logs_json_lines(dsn: str) -> None:
    """With TIDEBASE_LOG_FORMAT=json every line `tidebase serve` prints is one JSON object."""
    server = start_server(dsn, env={"TIDEBASE_LOG_FORMAT": "json"})
    try:
        with server.client() as http:
            assert http.post("/runs/logged-http").status_code in (200, 201)
            assert httpx.get(server.url + "/health", timeout=5).status_code == 200
    finally:
        log = server.log()
        stop_server(server)
    docs = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert any("listening on" in d["message"] for d in docs)
    assert all({"time", "level", "logger", "message"} <= set(d) for d in docs)
