"""The upstream Python SDK (PyPI `tidebase` 0.7.0, installed in isolation) drives a real `tidebase serve` process
over real HTTP: every flow of the compatibility checklist the SDK can exercise (docs/http-api.md#sdk-compatibility)."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
from server_proc import Server, expire_leases, spawn_sdk, start_server, stop_server, wait_for


def test_sdk_is_the_upstream_package(sdk: Any, sdk_path: Path) -> None:
    assert sdk("which")["file"].startswith(str(sdk_path))


def test_crash_then_resume_replays_completed_steps(sdk: Any, server: Server, tmp_path: Path) -> None:
    run = sdk("create", "crashy", json.dumps({"n": 41}))
    log = tmp_path / "executed.log"
    crashed = sdk("crash", run["id"], str(log), check=False)
    assert crashed == {"returncode": 3}
    assert log.read_text().split() == ["a", "b"]
    expire_leases(server.dsn, run["id"])  # the crashed worker's lease runs out
    out = sdk("resume", run["id"], str(log))
    assert out["result"] == {"a": 42, "b": "B", "c": "C"}
    assert log.read_text().split() == ["a", "b", "c"]  # a and b replayed, not re-executed
    with server.client() as http:
        detail = http.get(f"/runs/{run['id']}").json()
    assert detail["run"]["status"] == "completed"
    assert detail["run"]["attempt"] == 2
    assert [s["status"] for s in detail["steps"]] == ["completed"] * 3


def test_retries_end_completed_at_attempt_three(sdk: Any, server: Server) -> None:
    out = sdk("retries")
    assert out == {"result": "ok", "calls": 3}
    with server.client() as http:
        runs = http.get("/runs", params={"workflowName": "retry-wf"}).json()["runs"]
        steps = http.get(f"/runs/{runs[0]['id']}").json()["steps"]
    assert steps[0]["attempt"] == 3
    assert steps[0]["status"] == "completed"


def test_input_mismatch_is_refused(sdk: Any, server: Server) -> None:
    run = sdk("create", "mm", "{}")
    assert sdk("mismatch", run["id"], "1") == {"result": 1}
    with server.client() as http:  # reopen the completed run's step under another input: a new run, same step name
        other = http.post("/runs/mm", json={}).json()["run"]
    assert sdk("mismatch", other["id"], "1") == {"result": 1}
    with server.client() as http:
        owner = http.post(f"/runs/{other['id']}/begin").json()  # completed: no lease
        assert owner["run"]["leaseOwner"] is None
        third = http.post("/runs/mm", json={}).json()["run"]
        lease = http.post(f"/runs/{third['id']}/begin").json()["leaseOwner"]
        begun = http.post(f"/runs/{third['id']}/steps/begin",
                          json={"name": "s", "inputHash": "h1", "leaseOwner": lease}).json()
        assert begun["action"] == "execute"
        http.post(f"/runs/{third['id']}/steps/{begun['step']['id']}/fail", json={"leaseOwner": lease})
        http.post(f"/runs/{third['id']}/fail", json={"error": {"m": 1}})
    out = sdk("mismatch", third["id"], "2")
    assert out["error"] == "ValueError"
    assert "h1" in out["message"]


def test_gate_resolved_by_another_client(sdk_path: Path, server: Server, tmp_path: Path) -> None:
    with server.client() as http:
        run = http.post("/runs/gated", json={}).json()["run"]
        proc = spawn_sdk(sdk_path, server.url, "gate", run["id"], cwd=tmp_path)
        gate = wait_for(lambda: (http.get(f"/runs/{run['id']}").json()["gates"] or [None])[0])
        assert gate["resolveToken"] is None  # never in a GET
        resolved = http.post(f"/runs/{run['id']}/gates/{gate['id']}/resolve",
                             json={"decision": "approved", "actor": "alice", "payload": {"ok": True}})
        assert resolved.status_code == 200
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        result = json.loads(out.decode().splitlines()[-1])["result"]
        assert result == {"approved": True, "decision": "approved", "actor": "alice", "payload": {"ok": True}}
        late = http.post(f"/runs/{run['id']}/gates/{gate['id']}/resolve", json={"decision": "rejected"})
        assert late.json()["code"] == "gate_resolved"  # the run finished, and the gate reports its decision first
        assert (late.json()["gate"]["decision"], late.json()["gate"]["actor"]) == ("approved", "alice")


def test_children_and_fanout(sdk: Any, server: Server) -> None:
    out = sdk("children")
    assert out["one"] == 2
    assert out["again"] == 2
    assert out["fan"] == [0, 2, 4, 6]
    with server.client() as http:
        detail = http.get(f"/runs/{out['run_id']}").json()
    edges = {e["name"]: e for e in detail["runEdges"]}
    assert set(edges) == {"first", "f0", "f1", "f2", "f3"}
    assert {edges[f"f{i}"]["edgeType"] for i in range(4)} == {"fanout"}
    assert edges["first"]["edgeType"] == "child"
    assert all(c["metadata"]["parentRunId"] == out["run_id"] for c in detail["childRuns"])
    assert all(c["status"] == "completed" for c in detail["childRuns"])


def test_state_snapshots_usage(sdk: Any) -> None:
    out = sdk("state")
    assert out["result"] == "done"
    assert out["set"]["state"]["value"] == {"a": 1}
    assert out["set"]["state"]["version"] == 1
    assert out["patch"]["state"]["value"] == {"a": 1, "b": 2}
    assert out["save"]["stateVersion"]["importance"] == "milestone"
    assert out["save"]["stateVersion"]["label"] == "milestone-1"
    assert [v["version"] for v in out["versions"]] == [1, 2, 3]
    assert [v["label"] for v in out["labeled"]] == ["milestone-1"]
    assert out["snapshot"]["snapshot"]["stream"] == f"run:{out['run_id']}"
    assert {s["label"] for s in out["snapshots"]} == {"milestone-1", "snap"}
    assert out["usage"]["usage"]["totalTokens"] == 150
    assert out["usage_explicit"]["usage"]["totalTokens"] == 7


def test_cancel_raises_run_cancelled_in_the_sdk(sdk_path: Path, server: Server, tmp_path: Path) -> None:
    flag = tmp_path / "go"
    with server.client() as http:
        run = http.post("/runs/cancel-wf", json={}).json()["run"]
        proc = spawn_sdk(sdk_path, server.url, "cancel", run["id"], str(flag), cwd=tmp_path)
        wait_for(lambda: [s for s in http.get(f"/runs/{run['id']}").json()["steps"] if s["status"] == "completed"])
        first = http.post(f"/runs/{run['id']}/cancel", json={"reason": "stop", "actor": "ops"})
        second = http.post(f"/runs/{run['id']}/cancel", json={"reason": "other"})
        flag.write_text("go")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        assert json.loads(out.decode().splitlines()[-1])["raised"] == "RunCancelled"
        assert first.status_code == second.status_code == 200
        assert second.json()["run"]["cancelReason"] == "stop"
        events = http.get(f"/runs/{run['id']}").json()["events"]
        assert [e["type"] for e in events].count("run.cancelled") == 1
        assert http.post(f"/runs/{run['id']}/begin").json()["code"] == "run_cancelled"


def test_session_keeps_its_lease_with_heartbeats(sdk: Any, server: Server) -> None:
    out = sdk("session", "3.0")  # twice the 1.5 s lease
    assert out["status"] == "completed"
    assert out["lost"] == []
    assert out["heartbeat_after_complete"] == 409


def test_subscribe_receives_events_in_order(sdk: Any, server: Server) -> None:
    out = sdk("state")
    got = sdk("subscribe", out["run_id"], "5")["events"]
    assert [e["seq"] for e in got] == [1, 2, 3, 4, 5]
    assert [e["type"] for e in got[:3]] == ["run.created", "run.started", "state.updated"]
    rest = sdk("subscribe", out["run_id"], "2", "5")["events"]
    assert [e["seq"] for e in rest] == [6, 7]


def test_library_resumes_an_http_run_and_the_sdk_resumes_a_library_run(
    sdk: Any, server: Server, tmp_path: Path
) -> None:
    from tidebase import Tidebase

    run = sdk("create", "crashy", json.dumps({"n": 1}))
    log = tmp_path / "executed.log"
    assert sdk("crash", run["id"], str(log), check=False) == {"returncode": 3}
    expire_leases(server.dsn, run["id"])
    executed = []

    def wf(ctx: Any, input: Any) -> Any:
        a = ctx.step("a", lambda: executed.append("a") or -1)
        b = ctx.step("b", lambda: executed.append("b") or "X")
        c = ctx.step("c", lambda: executed.append("c") or "lib")
        return {"a": a, "b": b, "c": c}

    with Tidebase(server.dsn) as tide:
        assert tide.run("crashy", wf, run_id=run["id"]) == {"a": 2, "b": "B", "c": "lib"}
        assert executed == ["c"]

        # The other way: the library checkpoints two steps and fails; the SDK resumes over HTTP.
        def lib_wf(ctx: Any, input: Any) -> Any:
            ctx.step("a", lambda: 100)
            ctx.step("b", lambda: "from-lib")
            raise RuntimeError("stop here")

        with contextlib.suppress(RuntimeError):
            tide.run("crashy", lib_wf, run_id="lib-run-1", input={"n": 0})
    log2 = tmp_path / "executed2.log"
    out = sdk("resume", "lib-run-1", str(log2))
    assert out["result"] == {"a": 100, "b": "from-lib", "c": "C"}
    assert log2.read_text().split() == ["c"]


def test_events_arrive_from_another_server_process(server: Server) -> None:
    other = start_server(server.dsn)
    try:
        with server.client() as http, httpx.Client(base_url=other.url, timeout=30) as http2:
            run = http.post("/runs/x", json={}).json()["run"]
            with http.stream("GET", f"/runs/{run['id']}/events") as resp:
                lines = resp.iter_lines()
                first = next(line for line in lines if line.startswith("data:"))
                assert json.loads(first[5:])["seq"] == 1
                t0 = time.monotonic()
                http2.put(f"/runs/{run['id']}/state", json={"value": {"v": 1}})
                second = next(line for line in lines if line.startswith("data:"))
                assert json.loads(second[5:])["type"] == "state.updated"
                assert time.monotonic() - t0 < 2.0  # the doorbell, not the 5 s poll
    finally:
        stop_server(other)


def test_queue_enqueue_dedupe_config_and_pull_worker(sdk: Any, server: Server) -> None:
    out = sdk("queue")
    assert out["deduplicated"] == [False, True] and out["same"]
    assert out["config"]["config"] == {"name": "q1", "concurrency": 2, "ratePerMinute": 100, "invokeUrl": None}
    # the SDK's work() executes a claimed run without calling begin: its steps run under the claim's lease
    assert (out["status"], out["result"], out["attempt"]) == ("completed", 42, 1)
    [q1] = [q for q in out["queues"] if q["name"] == "q1"]
    assert (q1["queued"], q1["running"], q1["completed"]) == (0, 0, 1)
    with server.client() as http:
        run_id = http.get("/runs", params={"queue": "q1"}).json()["runs"][0]["id"]
        types = [e["type"] for e in http.get(f"/runs/{run_id}").json()["events"]]
    assert types == ["run.enqueued", "run.claimed", "step.started", "step.completed", "run.completed"]


def test_schedules_set_list_delete(sdk: Any) -> None:
    out = sdk("schedules")
    made = out["made"]
    assert (made["name"], made["cron"], made["workflowName"], made["input"], made["maxAttempts"]) == (
        "nightly", "0 3 * * *", "digest", {"x": 1}, 2)
    assert made["nextRunAt"].endswith("T03:00:00.000Z") and made["lastEnqueuedAt"] is None
    assert [s["name"] for s in out["listed"]] == ["nightly"]
    assert out["deleted"] == {"deleted": "nightly"}
    assert "schedule_not_found" in out["again"] and "404" in out["again"]
    assert "invalid_request" in out["bad"] and "minute" in out["bad"]
