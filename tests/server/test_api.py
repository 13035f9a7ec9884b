"""The routes, status codes and error codes of docs/http-api.md, in process (Starlette TestClient over the real app and
a real database)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from server_proc import expire_leases

with warnings.catch_warnings():  # starlette's test client touches a deprecated anyio alias at import
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient

from tidebase.server import Settings, create_app


@pytest.fixture
def client(dsn: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=dsn, http_lease_seconds=60.0, max_body_bytes=1024))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def new_run(c: TestClient, workflow: str = "wf", **body: Any) -> dict[str, Any]:
    r = c.post(f"/runs/{workflow}", json=body)
    assert r.status_code in (200, 201), r.text
    run: dict[str, Any] = r.json()["run"]
    return run


def begun(c: TestClient, run_id: str, owner: str | None = None) -> str:
    headers = {"x-tidebase-worker": owner} if owner else {}
    r = c.post(f"/runs/{run_id}/begin", headers=headers)
    assert r.status_code == 200, r.text
    lease: str = r.json()["leaseOwner"]
    return lease


def step(c: TestClient, run_id: str, owner: str | None, name: str = "s", h: str = "h", **kw: Any) -> Any:
    return c.post(f"/runs/{run_id}/steps/begin", json={"name": name, "inputHash": h, "leaseOwner": owner, **kw})


def test_create_list_detail(client: TestClient) -> None:
    r = client.post("/runs/a%2Fb", json={})
    assert r.status_code == 201
    run = r.json()["run"]
    assert run["id"].startswith("run_") and run["status"] == "pending" and run["attempt"] == 0
    assert run["input"] == {} and run["workflowName"] == "a/b"
    assert run["createdAt"].endswith("Z") and len(run["createdAt"]) == 24
    assert client.get("/runs").json()["runs"][0]["id"] == run["id"]
    detail = client.get(f"/runs/{run['id']}").json()
    assert set(detail) >= {"run", "steps", "state", "stateStreams", "stateVersions", "runEdges", "childRuns",
                           "recoveryAttempts", "channels", "channelDeliveries", "gates", "usage", "events"}
    assert client.get("/runs/nope").json()["code"] == "run_not_found"
    recover = client.post(f"/runs/{run['id']}/recover", json={"reason": "manual"})
    assert (recover.status_code, recover.json()["code"]) == (422, "no_recovery_webhook")
    assert client.post("/runs/nope/recover").json()["code"] == "run_not_found"
    assert client.get("/runs", params={"limit": "0"}).status_code == 400
    assert client.get("/runs", params={"status": "weird"}).json()["code"] == "invalid_request"


def test_an_invalid_body_is_worded_as_upstream_words_it(client: TestClient) -> None:
    """A malformed or invalid body answers 400 `invalid request body` (upstream's wording) with its issues; a bad
    query parameter, which upstream does not validate, answers `invalid request`."""
    for bad in (client.post("/runs/wf", content=b"{not json", headers={"content-type": "application/json"}),
                client.post("/runs/wf", json={"metadata": 3})):
        body = bad.json()
        assert (bad.status_code, body["error"], body["code"]) == (400, "invalid request body", "invalid_request")
        assert body["issues"]
    query = client.get("/runs", params={"limit": "0"}).json()
    assert (query["error"], query["issues"][0]["path"]) == ("invalid request", ["query", "limit"])


def test_client_chosen_run_id(client: TestClient) -> None:
    r1 = client.post("/runs/wf", json={"runId": "my-run:1", "input": {"a": 1}})
    r2 = client.post("/runs/wf", json={"runId": "my-run:1", "input": {"a": 1}})
    assert (r1.status_code, r2.status_code) == (201, 200)
    assert client.post("/runs/other", json={"runId": "my-run:1", "input": {"a": 1}}).json()["code"] == \
        "workflow_mismatch"
    bad = client.post("/runs/wf", json={"runId": "my-run:1", "input": {"a": 2}})
    assert bad.status_code == 409 and bad.json()["code"] == "input_mismatch" and bad.json()["run"]["id"] == "my-run:1"
    assert client.post("/runs/wf", json={"runId": "-bad"}).status_code == 400


def test_begin_lease_and_takeover(client: TestClient, dsn: str) -> None:
    run = new_run(client)
    w1 = begun(client, run["id"], "w1")
    r = client.post(f"/runs/{run['id']}/begin", headers={"x-tidebase-worker": "w2"})
    assert r.status_code == 409 and r.json()["code"] == "run_leased" and r.json()["leaseOwner"] == w1
    assert client.post(f"/runs/{run['id']}/heartbeat", json={"leaseOwner": "w1"}).status_code == 200
    assert client.post(f"/runs/{run['id']}/heartbeat", json={}).status_code == 400
    expire_leases(dsn, run["id"])
    assert client.post(f"/runs/{run['id']}/heartbeat", json={"leaseOwner": "w1"}).json()["code"] == "lease_lost"
    r = client.post(f"/runs/{run['id']}/begin", headers={"x-tidebase-worker": "w2"})
    assert r.status_code == 200 and r.json()["run"]["attempt"] == 2
    assert client.post(f"/runs/{run['id']}/complete", json={"result": 7}).status_code == 200
    again = client.post(f"/runs/{run['id']}/begin").json()
    assert again["run"]["leaseOwner"] is None and again["run"]["result"] == 7 and again["leaseOwner"]
    assert client.post(f"/runs/{run['id']}/heartbeat", json={"leaseOwner": "w2"}).json()["code"] == "lease_lost"


def test_step_protocol(client: TestClient) -> None:
    run = new_run(client)
    owner = begun(client, run["id"])
    ex = step(client, run["id"], owner).json()
    assert ex["action"] == "execute" and ex["leaseOwner"] == owner and ex["step"]["attempt"] == 1
    sid = ex["step"]["id"]
    done = client.post(f"/runs/{run['id']}/steps/{sid}/complete", json={"leaseOwner": owner, "output": [1]})
    assert done.status_code == 200
    assert step(client, run["id"], owner).json() == {**step(client, run["id"], owner).json(), "action": "return",
                                                      "output": [1]}
    mm = step(client, run["id"], owner, h="other").json()
    assert (mm["action"], mm["expectedInputHash"], mm["actualInputHash"]) == ("input_mismatch", "h", "other")
    same = client.post(f"/runs/{run['id']}/steps/{sid}/complete", json={"leaseOwner": owner, "output": [1]})
    assert same.status_code == 200
    diff = client.post(f"/runs/{run['id']}/steps/{sid}/complete", json={"leaseOwner": owner, "output": [2]})
    assert diff.json()["code"] == "step_completed" and diff.json()["step"]["output"] == [1]
    r = step(client, run["id"], owner, name="retry").json()
    failed = client.post(f"/runs/{run['id']}/steps/{r['step']['id']}/fail",
                         json={"leaseOwner": owner, "retryable": True, "resumeDecision": "auto_retry"}).json()
    assert failed["step"]["status"] == "failed_retryable"
    assert step(client, run["id"], owner, name="retry").json()["step"]["attempt"] == 2
    assert step(client, run["id"], "intruder").json()["action"] == "return"  # replay needs no lease
    assert step(client, run["id"], "intruder", name="new").json()["code"] == "lease_lost"
    assert client.post(f"/runs/{run['id']}/steps/step_x/complete", json={"leaseOwner": owner}).json()["code"] == \
        "step_not_found"


def test_locked_then_interrupted(client: TestClient, dsn: str) -> None:
    run = new_run(client)
    begun(client, run["id"], "w1")
    expire_leases(dsn, run["id"])  # w1's run lease expires; w1 is still the holder
    s = step(client, run["id"], "w1", options={"sideEffects": ["read"]}).json()
    assert s["action"] == "execute"
    begun(client, run["id"], "w2")  # take-over
    assert step(client, run["id"], "w2").json()["action"] == "locked"
    assert client.post(f"/runs/{run['id']}/steps/{s['step']['id']}/complete",
                       json={"leaseOwner": "w1"}).json()["code"] == "lease_lost"
    expire_leases(dsn, run["id"])  # w1's step lease runs out too: the step was interrupted
    assert step(client, run["id"], "w2").json()["action"] == "execute"  # replay auto: re-run


def test_interrupted_write_is_parked_then_reviewed(client: TestClient, dsn: str) -> None:
    run = new_run(client)
    begun(client, run["id"], "w1")
    s = step(client, run["id"], "w1", options={"sideEffects": ["email"]}).json()
    expire_leases(dsn, run["id"])
    begun(client, run["id"], "w2")
    parked = step(client, run["id"], "w2")
    assert parked.status_code == 409 and parked.json()["code"] == "step_needs_review"
    assert (parked.json()["step"]["id"], parked.json()["step"]["status"]) == (s["step"]["id"], "manual_review")
    again = step(client, run["id"], "w2").json()
    assert again["code"] == "step_needs_review" and again["step"]["id"] == s["step"]["id"]
    review = client.post(f"/runs/{run['id']}/steps/{s['step']['id']}/review", json={"action": "retry"})
    assert review.json()["step"]["status"] == "failed_retryable"
    assert client.post(f"/runs/{run['id']}/steps/{s['step']['id']}/review",
                       json={"action": "retry"}).json()["code"] == "step_not_in_review"
    assert step(client, run["id"], "w2").json()["action"] == "execute"


@pytest.mark.parametrize(("options", "decision", "status"), [
    ({}, "safe_replay", "failed"),
    ({"sideEffects": ["read"]}, "safe_replay", "failed"),
    ({"sideEffects": ["write"]}, "manual_review", "manual_review"),
    ({"sideEffects": ["write"], "idempotencyKey": "k"}, "safe_replay", "failed"),
    ({"replay": "never"}, "fail_hard", "failed"),
])
def test_failure_classification(client: TestClient, options: dict[str, Any], decision: str, status: str) -> None:
    run = new_run(client)
    owner = begun(client, run["id"])
    s = step(client, run["id"], owner, options=options).json()["step"]
    out = client.post(f"/runs/{run['id']}/steps/{s['id']}/fail", json={"leaseOwner": owner, "error": {"m": 1}})
    assert (out.json()["step"]["resumeDecision"], out.json()["step"]["status"]) == (decision, status)


def test_cancel_is_terminal(client: TestClient) -> None:
    run = new_run(client)
    owner = begun(client, run["id"])
    s = step(client, run["id"], owner).json()["step"]
    assert client.post(f"/runs/{run['id']}/cancel", json={"reason": "r1"}).status_code == 200
    assert step(client, run["id"], owner).json() == {"action": "cancelled"}
    for method, url, body in [
        ("post", "begin", None), ("post", "heartbeat", {"leaseOwner": owner}), ("post", "complete", {}),
        ("post", "gates/begin", {"name": "g", "prompt": "p"}), ("put", "state", {"value": 1}),
        ("post", f"steps/{s['id']}/complete", {"leaseOwner": owner}), ("post", "fail", {}), ("post", "recover", {}),
    ]:
        r = client.request(method.upper(), f"/runs/{run['id']}/{url}", json=body)
        assert (r.status_code, r.json()["code"]) == (409, "run_cancelled"), url
    assert client.post(f"/runs/{run['id']}/usage", json={"inputTokens": 1}).status_code == 200
    done = new_run(client)
    begun(client, done["id"])
    client.post(f"/runs/{done['id']}/complete", json={"result": 1})
    r = client.post(f"/runs/{done['id']}/cancel")
    assert r.json()["code"] == "run_completed"
    assert "run_cancelled" not in r.text


def test_complete_and_fail_are_fenced(client: TestClient) -> None:
    run = new_run(client)
    assert client.post(f"/runs/{run['id']}/complete", json={}).json()["code"] == "lease_lost"  # pending
    begun(client, run["id"], "w1")
    assert client.post(f"/runs/{run['id']}/complete", json={"leaseOwner": "stale"}).json()["code"] == "lease_lost"
    assert client.post(f"/runs/{run['id']}/complete", json={"result": {"x": 1}}).status_code == 200
    events = len(client.get(f"/runs/{run['id']}").json()["events"])
    assert client.post(f"/runs/{run['id']}/complete", json={"result": {"x": 1}}).status_code == 200
    assert len(client.get(f"/runs/{run['id']}").json()["events"]) == events
    assert client.post(f"/runs/{run['id']}/complete", json={"result": 2}).json()["code"] == "run_completed"
    assert client.post(f"/runs/{run['id']}/fail", json={}).json()["code"] == "run_completed"
    other = new_run(client)
    begun(client, other["id"])
    failed = client.post(f"/runs/{other['id']}/fail", json={"error": {"m": "x"}, "failureClass": "boom"}).json()
    assert failed["requeued"] is False and failed["run"]["status"] == "failed"
    assert failed["run"]["failureClass"] == "boom" and failed["run"]["completedAt"] is None


def test_gates(client: TestClient) -> None:
    run = new_run(client)
    first = client.post(f"/runs/{run['id']}/gates/begin", json={"name": "g", "prompt": "ok?"}).json()
    token = first["gate"]["resolveToken"]
    assert first["action"] == "wait" and len(token) == 32
    rejoin = client.post(f"/runs/{run['id']}/gates/begin", json={"name": "g", "prompt": "ok?"}).json()
    assert rejoin["gate"]["id"] == first["gate"]["id"] and rejoin["gate"]["resolveToken"] is None
    gid = first["gate"]["id"]
    polled = client.get(f"/runs/{run['id']}/gates/{gid}").json()
    assert polled["runStatus"] == "pending" and polled["gate"]["status"] == "pending"
    assert client.get(f"/runs/{run['id']}/gates/gate_x").json()["code"] == "gate_not_found"
    forged = client.post(f"/runs/{run['id']}/gates/{gid}/resolve", json={"decision": "approved", "token": "0" * 32})
    assert (forged.status_code, forged.json()["code"]) == (403, "invalid_token")
    ok = client.post(f"/runs/{run['id']}/gates/{gid}/resolve",
                     json={"decision": "canceled", "token": token, "payload": {"p": 1}})
    assert ok.json()["gate"]["decision"] == "canceled" and ok.json()["gate"]["decisionPayload"] == {"p": 1}
    assert client.post(f"/runs/{run['id']}/gates/{gid}/resolve", json={"decision": "canceled"}).status_code == 200
    lost = client.post(f"/runs/{run['id']}/gates/{gid}/resolve", json={"decision": "approved"}).json()
    assert lost["code"] == "gate_resolved" and lost["gate"]["decision"] == "canceled"
    assert lost["gate"]["resolveToken"] is None
    after = client.post(f"/runs/{run['id']}/gates/begin", json={"name": "g", "prompt": "ok?"}).json()
    assert after["action"] == "return" and after["gate"]["decision"] == "canceled"
    for url in [f"/runs/{run['id']}", f"/runs/{run['id']}/gates/{gid}", "/runs"]:
        assert token not in client.get(url).text


def test_children(client: TestClient) -> None:
    parent = new_run(client)
    body = {"name": "e", "workflowName": "kid", "input": {"n": 1}}
    a = client.post(f"/runs/{parent['id']}/children",
                    json={**body, "metadata": {"team": "x", "parentRunId": "forged"}}).json()
    assert a["run"]["metadata"] == {"team": "x", "parentRunId": parent["id"], "parentEdgeName": "e"}
    assert a["edge"]["createdAt"].endswith("Z") and a["edge"]["childRunId"] == a["run"]["id"]
    b = client.post(f"/runs/{parent['id']}/children", json=body).json()
    assert a["created"] is True and b["created"] is False and a["run"]["id"] == b["run"]["id"]
    assert a["run"]["metadata"]["parentRunId"] == parent["id"] and a["edge"]["edgeType"] == "child"
    clash = client.post(f"/runs/{parent['id']}/children", json={**body, "input": {"n": 2}})
    assert clash.json()["code"] == "child_conflict"
    assert client.post("/runs/nope/children", json=body).json()["code"] == "run_not_found"


def test_state_and_usage(client: TestClient) -> None:
    run = new_run(client)
    rid = run["id"]
    assert client.post(f"/runs/{rid}/state/save", json={"label": "x"}).json()["code"] == "state_not_found"
    assert client.put(f"/runs/{rid}/state", json={"value": {"a": 1}}).json()["state"]["version"] == 1
    patched = client.patch(f"/runs/{rid}/state", json={"value": {"b": 2}}).json()
    assert patched["state"]["value"] == {"a": 1, "b": 2} and patched["stateVersion"]["patch"] == {"b": 2}
    assert client.get(f"/runs/{rid}/state/versions", params={"labeled": "maybe"}).status_code == 400
    assert client.get("/runs/nope/state/versions").json()["code"] == "run_not_found"
    assert client.get("/runs/nope/snapshots").json()["code"] == "run_not_found"
    assert client.post(f"/runs/{rid}/usage", json={"inputTokens": -1}).json()["code"] == "invalid_request"
    assert client.post(f"/runs/{rid}/usage", json={"stepId": "step_nope"}).status_code == 400
    assert client.post(f"/runs/{rid}/usage", json={"outputTokens": 5}).json()["usage"]["totalTokens"] == 5
    assert client.post("/runs/nope/usage", json={}).json()["code"] == "run_not_found"


def test_concurrent_writers_keep_seqs_contiguous(client: TestClient) -> None:
    import concurrent.futures

    run = new_run(client)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client.put, f"/runs/{run['id']}/state", json={"value": i}) for i in range(4)]
        futures += [pool.submit(client.post, f"/runs/{run['id']}/usage", json={"inputTokens": i}) for i in range(4)]
        assert all(f.result().status_code == 200 for f in futures)
    seqs = [e["seq"] for e in client.get(f"/runs/{run['id']}").json()["events"]]
    assert seqs == list(range(1, 10))


def test_http_mistakes_are_4xx(client: TestClient) -> None:
    run = new_run(client)
    rid = run["id"]
    cases = [
        (client.post(f"/runs/{rid}/heartbeat", content=b"{", headers={"content-type": "application/json"}), 400),
        (client.post(f"/runs/{rid}/heartbeat", content=b"[]", headers={"content-type": "application/json"}), 400),
        (client.post(f"/runs/{rid}/heartbeat", content=b'{"leaseOwner": NaN}',
                     headers={"content-type": "application/json"}), 400),
        (client.post(f"/runs/{rid}/heartbeat", content=b'{"leaseOwner": "a\\u0000"}',
                     headers={"content-type": "application/json"}), 400),
        (client.post(f"/runs/{rid}/heartbeat", content=b'{"leaseOwner": "\\ud800"}',
                     headers={"content-type": "application/json"}), 400),
        (client.post(f"/runs/{rid}/heartbeat", content=b"x=1", headers={"content-type": "text/plain"}), 415),
        (client.post(f"/runs/{rid}/heartbeat", content=b"[" * 300 + b"]" * 300,
                     headers={"content-type": "application/json"}), 400),
        (client.post(f"/runs/{rid}/complete", content=b'{"result": "' + b"x" * 2000 + b'"}',
                     headers={"content-type": "application/json"}), 413),
        (client.delete(f"/runs/{rid}/begin"), 405),
        (client.get("/nothing/here"), 404),
        (client.post("/agents"), 404),
        (client.post(f"/runs/{rid}/usage", json={"totalTokens": 2**70}), 400),
        (client.post(f"/runs/{rid}/steps/begin", json={"name": "", "inputHash": "h"}), 400),
    ]
    for response, status in cases:
        assert response.status_code == status, (response.request.url, response.text)
        body = response.json()
        assert body["code"] and body["error"]
        if status == 400:
            assert isinstance(body["issues"], list) and body["issues"]
    assert client.delete(f"/runs/{rid}/begin").headers["allow"] == "POST"
    assert client.post(f"/runs/{rid}/heartbeat", json={"leaseOwner": "x", "unknown": 1}).json()["code"] == "lease_lost"


def test_health_and_openapi(client: TestClient) -> None:
    deadline = time.monotonic() + 10
    while client.get("/health").json() != {"ok": True, "database": True}:  # the doorbell connects at start
        assert time.monotonic() < deadline, client.get("/health").json()
        time.sleep(0.05)
    assert client.get("/health/ready").json()["ok"] is True
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert "/runs/{runId}/steps/begin" in doc["paths"]
    begin = doc["paths"]["/runs/{runId}/steps/begin"]["post"]["requestBody"]["content"]["application/json"]
    assert begin["schema"]["required"] == ["name", "inputHash"]


def test_event_payloads_are_public_forms(client: TestClient) -> None:  # docs/http-api.md#event-types
    run = new_run(client, channels=[{"url": "https://example.com/h", "secret": "s3cret-chan"}])
    rid = run["id"]
    owner = begun(client, rid)
    client.put(f"/runs/{rid}/state", json={"value": {"a": 1}})
    client.patch(f"/runs/{rid}/state", json={"value": {"b": 2}})
    client.post(f"/runs/{rid}/state/save", json={"label": "l"})
    s = step(client, rid, owner).json()["step"]
    client.post(f"/runs/{rid}/usage", json={"stepId": s["id"], "inputTokens": 2, "outputTokens": 3})
    gate = client.post(f"/runs/{rid}/gates/begin", json={"name": "g", "prompt": "ok?", "channels": [
        {"url": "https://example.com/g", "secret": "s3cret-gate"}]}).json()["gate"]
    token = gate["resolveToken"]
    client.post(f"/runs/{rid}/gates/{gate['id']}/resolve", json={"decision": "approved", "actor": "ann"})
    child = client.post(f"/runs/{rid}/children", json={"name": "e", "workflowName": "sub"}).json()
    text = client.get(f"/runs/{rid}").text
    assert token not in text and "s3cret" not in text
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in client.get(f"/runs/{rid}").json()["events"]:
        by_type.setdefault(e["type"], []).append(e["payload"])
    assert by_type["run.created"][0]["channels"] == [{"type": "webhook", "url": "https://example.com/h",
                                                      "events": []}]
    put, patch = by_type["state.updated"]
    assert put["value"] == {"a": 1} and set(put["stateVersion"]) == {
        "id", "streamId", "stream", "runId", "version", "label", "reason", "importance", "createdAt"}
    assert patch["value"] == {"a": 1, "b": 2} and patch["patch"] == {"b": 2} and patch["stateVersion"]["version"] == 2
    assert by_type["state.saved"][0]["stateVersion"]["label"] == "l"
    [usage] = by_type["usage.recorded"]
    assert (usage["usage"]["stepId"], usage["usage"]["totalTokens"]) == (s["id"], 5)
    created, resolved = by_type["gate.created"][0]["gate"], by_type["gate.resolved"][0]["gate"]
    assert (created["status"], created["resolveToken"], created["channels"][0]["hasSecret"]) == (
        "pending", None, True)
    assert (resolved["status"], resolved["decision"], resolved["actor"]) == ("approved", "approved", "ann")
    [made] = by_type["run.child.created"]
    assert made["childRun"]["id"] == child["run"]["id"] and made["edge"]["id"] == child["edge"]["id"]
    child_created = client.get(f"/runs/{child['run']['id']}").json()["events"][0]
    assert (child_created["type"], child_created["payload"]["parentRunId"], child_created["payload"]["edgeName"]) == (
        "run.created", rid, "e")
