"""Gate resolves over real HTTP once the gate is decided (docs/http-api.md#gate-resolve): a decided gate answers `409
gate_resolved` with the gate, its decision and actor, whatever its run did since; only a gate still pending when its run
ended answers with the run's state."""

from __future__ import annotations

from typing import Any

import httpx
from server_proc import Server


def gated_run(http: httpx.Client) -> tuple[str, str, str]:
    """A begun run with a pending gate: (run id, lease owner, gate id)."""
    run = http.post("/runs/review", json={}).json()["run"]
    owner = http.post(f"/runs/{run['id']}/begin").json()["leaseOwner"]
    gate = http.post(f"/runs/{run['id']}/gates/begin", json={"name": "approve", "prompt": "ok?"}).json()["gate"]
    return run["id"], owner, gate["id"]


def resolve(http: httpx.Client, run_id: str, gate_id: str, decision: str, actor: str | None = None) -> Any:
    return http.post(f"/runs/{run_id}/gates/{gate_id}/resolve", json={"decision": decision, "actor": actor})


def test_resolve_after_the_run_completed_is_409_gate_resolved_with_the_decision(server: Server) -> None:
    """After the decision resumed and completed the run, another decision gets 409 gate_resolved with the gate
    naming the recorded decision and actor, and the same decision again is still the safe retry (200, unchanged)."""
    with server.client() as http:
        run_id, owner, gate_id = gated_run(http)
        assert resolve(http, run_id, gate_id, "approved", "alice").status_code == 200
        assert http.post(f"/runs/{run_id}/complete", json={"leaseOwner": owner, "result": 1}).status_code == 200
        lost = resolve(http, run_id, gate_id, "rejected", "bob")
        assert (lost.status_code, lost.json()["code"]) == (409, "gate_resolved")
        assert (lost.json()["gate"]["decision"], lost.json()["gate"]["actor"]) == ("approved", "alice")
        retry = resolve(http, run_id, gate_id, "approved", "bob")
        assert retry.status_code == 200 and retry.json()["gate"]["actor"] == "alice"
        assert http.get(f"/runs/{run_id}").json()["run"]["status"] == "completed"


def test_resolve_of_a_gate_canceled_with_its_run_is_409_gate_resolved(server: Server) -> None:
    """A pending gate canceled with its run answers 409 gate_resolved naming decision `canceled` and the cancel's
    actor, not run_cancelled."""
    with server.client() as http:
        run_id, _, gate_id = gated_run(http)
        assert http.post(f"/runs/{run_id}/cancel", json={"actor": "ops"}).status_code == 200
        lost = resolve(http, run_id, gate_id, "approved", "alice")
        assert (lost.status_code, lost.json()["code"]) == (409, "gate_resolved")
        assert (lost.json()["gate"]["decision"], lost.json()["gate"]["actor"]) == ("canceled", "ops")


def test_resolve_of_a_gate_pending_when_its_run_completed_is_409_run_completed(server: Server) -> None:
    """A gate that was still pending when its run completed has no decision to report: 409 run_completed."""
    with server.client() as http:
        run_id, owner, gate_id = gated_run(http)
        assert http.post(f"/runs/{run_id}/complete", json={"leaseOwner": owner, "result": 1}).status_code == 200
        late = resolve(http, run_id, gate_id, "approved", "alice")
        assert (late.status_code, late.json()["code"]) == (409, "run_completed")
        assert http.get(f"/runs/{run_id}/gates/{gate_id}").json()["gate"]["status"] == "pending"
