"""Queues, schedules, recovery webhooks and channels over HTTP (docs/http-api.md#recover, docs/http-api.md#queues,
docs/http-api.md#webhooks, docs/http-api.md#background), in process over the real app and a real database. The
reconciler is off: each test runs the background transitions it needs itself (the same SQL functions the reconciler
calls), so nothing happens behind its back."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

with warnings.catch_warnings():  # starlette's test client touches a deprecated anyio alias at import
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient

from tidebase import Tidebase
from tidebase.ops.reconciler import Reconciler
from tidebase.server import Settings, create_app


@pytest.fixture
def client(dsn: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=dsn, http_lease_seconds=60.0, reconciler=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def sql(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def enqueue(c: TestClient, queue: str = "q", **body: Any) -> dict[str, Any]:
    r = c.post(f"/queues/{queue}/enqueue", json={"workflowName": "wf", **body})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def claim(c: TestClient, *queues: str, limit: int = 1, owner: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"queues": list(queues), "limit": limit}
    if owner:
        body["leaseOwner"] = owner
    r = c.post("/queues/claim", json=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def events(c: TestClient, run_id: str) -> list[dict[str, Any]]:
    evs: list[dict[str, Any]] = c.get(f"/runs/{run_id}").json()["events"]
    return evs


def test_enqueue_fields_and_event(client: TestClient) -> None:
    out = enqueue(client, "mail%2Fout", input={"to": "a"}, dedupeKey="k1", priority=5, maxAttempts=3,
                  deadlineMs=3_600_000, metadata={"m": 1})
    run = out["run"]
    assert out["deduplicated"] is False
    assert (run["status"], run["queue"], run["dedupeKey"], run["priority"], run["maxAttempts"]) == (
        "queued", "mail/out", "k1", 5, 3)
    assert run["input"] == {"to": "a"} and run["metadata"] == {"m": 1} and run["attempt"] == 0
    assert run["runAt"] <= run["createdAt"] < run["deadlineAt"]
    [ev] = events(client, run["id"])
    assert ev["type"] == "run.enqueued" and ev["payload"]["queue"] == "mail/out"
    again = enqueue(client, "mail%2Fout", dedupeKey="k1", input={"other": True})
    assert again == {"run": again["run"], "deduplicated": True} and again["run"]["id"] == run["id"]
    later = enqueue(client, runAt="2100-01-01T02:00:00.5+02:00")["run"]
    assert later["runAt"] == "2100-01-01T00:00:00.500Z"
    for bad in ({"runAt": "2100-01-01T00:00:00"}, {"delayMs": -1}, {"maxAttempts": 0}, {"deadlineMs": 0},
                {"dedupeKey": ""}, {"channels": [{"url": "ftp://x"}]}, {"recoveryWebhook": "nope"}):
        r = client.post("/queues/q/enqueue", json={"workflowName": "wf", **bad})
        assert (r.status_code, r.json()["code"]) == (400, "invalid_request"), bad
        assert r.json()["issues"][0]["path"][0] == next(iter(bad))
    assert client.post("/queues/q/enqueue", json={}).json()["issues"] == [
        {"path": ["workflowName"], "message": "is required"}]


def test_claim_executes_without_begin_and_respects_delay(client: TestClient) -> None:
    delayed = enqueue(client, delayMs=60000)["run"]
    ready = enqueue(client)["run"]
    got = claim(client, "q", limit=10)
    assert [r["id"] for r in got["runs"]] == [ready["id"]]  # the delayed run is not claimable yet
    owner = got["leaseOwner"]
    run = got["runs"][0]
    assert (run["status"], run["leaseOwner"], run["attempt"]) == ("running", owner, 1)
    begun = client.post(f"/runs/{run['id']}/steps/begin", json={"name": "s", "inputHash": "h", "leaseOwner": owner})
    assert begun.json()["action"] == "execute"
    assert [e["type"] for e in events(client, run["id"])][:2] == ["run.enqueued", "run.claimed"]
    assert events(client, run["id"])[1]["payload"]["leaseOwner"] == owner
    assert claim(client, "q")["runs"] == []
    assert client.get(f"/runs/{delayed['id']}").json()["run"]["status"] == "queued"
    for bad in ({"queues": []}, {"queues": "q"}, {"queues": ["q"], "limit": 101}, {"queues": ["q"], "limit": 0}):
        r = client.post("/queues/claim", json=bad)
        assert (r.status_code, r.json()["code"]) == (400, "invalid_request"), bad


def test_claim_serves_queues_in_request_order_by_priority(client: TestClient) -> None:
    a = enqueue(client, "qa")["run"]
    low = enqueue(client, "qb", priority=0)["run"]
    high = enqueue(client, "qb", priority=9)["run"]
    got = claim(client, "qb", "qa", "qb", limit=2)["runs"]
    assert [r["id"] for r in got] == [high["id"], low["id"]]
    assert [r["id"] for r in claim(client, "qa", limit=5)["runs"]] == [a["id"]]


def test_queue_caps_and_config_upsert(client: TestClient) -> None:
    r = client.put("/queues/q/config", json={"concurrency": 1})
    assert r.json() == {"config": {"name": "q", "concurrency": 1, "ratePerMinute": None, "invokeUrl": None}}
    for _ in range(3):
        enqueue(client)
    first = claim(client, "q", limit=5)
    assert len(first["runs"]) == 1 and claim(client, "q", limit=5)["runs"] == []  # concurrency 1 holds
    run_id = first["runs"][0]["id"]
    client.post(f"/runs/{run_id}/complete", json={"result": 1, "leaseOwner": first["leaseOwner"]})
    # absent keeps, null clears, a new value replaces
    r = client.put("/queues/q/config", json={"ratePerMinute": 2})
    assert r.json()["config"] == {"name": "q", "concurrency": 1, "ratePerMinute": 2, "invokeUrl": None}
    r = client.put("/queues/q/config", json={"concurrency": None, "invokeUrl": "https://app.example/invoke"})
    assert r.json()["config"] == {"name": "q", "concurrency": None, "ratePerMinute": 2,
                                  "invokeUrl": "https://app.example/invoke"}
    # the rate counts claims in the last 60 s: one was made, so one more is admitted
    assert len(claim(client, "q", limit=5)["runs"]) == 1 and claim(client, "q", limit=5)["runs"] == []
    stats = {q["name"]: q for q in client.get("/queues").json()["queues"]}
    assert {k: stats["q"][k] for k in ("queued", "running", "completed", "failed", "cancelled")} == {
        "queued": 1, "running": 1, "completed": 1, "failed": 0, "cancelled": 0}
    assert stats["q"]["config"]["ratePerMinute"] == 2
    client.put("/queues/only-config/config", json={"concurrency": 3})
    assert stats.get("only-config") is None
    stats = {q["name"]: q for q in client.get("/queues").json()["queues"]}
    assert stats["only-config"]["queued"] == 0 and stats["only-config"]["config"]["concurrency"] == 3
    for bad in ({"concurrency": 0}, {"ratePerMinute": 1.5}, {"invokeUrl": "javascript:x"}):
        assert client.put("/queues/q/config", json=bad).status_code == 400


def test_fail_requeues_then_fails_with_max_retries(client: TestClient, sql: psycopg.Connection[Any]) -> None:
    run = enqueue(client, maxAttempts=2)["run"]
    owner = claim(client, "q")["leaseOwner"]
    r = client.post(f"/runs/{run['id']}/fail", json={"error": {"message": "x"}, "leaseOwner": owner})
    assert r.json()["requeued"] is True and r.json()["run"]["status"] == "queued"
    assert r.json()["run"]["runAt"] > r.json()["run"]["updatedAt"]
    assert claim(client, "q")["runs"] == []  # backoff: not ready yet
    sql.execute("UPDATE tidebase.runs SET available_at = tidebase.now() WHERE id = %s", (run["id"],))
    owner = claim(client, "q")["leaseOwner"]
    r = client.post(f"/runs/{run['id']}/fail", json={"error": {"message": "y"}, "leaseOwner": owner})
    assert r.json()["requeued"] is False
    assert (r.json()["run"]["status"], r.json()["run"]["failureClass"]) == ("failed", "max_retries")
    requeued = [e for e in events(client, run["id"]) if e["type"] == "run.requeued"]
    assert [(e["payload"]["attempt"], e["payload"]["maxAttempts"]) for e in requeued] == [(1, 2)]


def test_overdue_ready_run_is_cancelled_not_claimed(client: TestClient, sql: psycopg.Connection[Any]) -> None:
    run = enqueue(client, deadlineMs=3_600_000)["run"]
    sql.execute("UPDATE tidebase.runs SET deadline_at = tidebase.now() - interval '1 second' WHERE id = %s",
                (run["id"],))
    assert claim(client, "q")["runs"] == []
    after = client.get(f"/runs/{run['id']}").json()["run"]
    assert (after["status"], after["cancelReason"], after["cancelActor"]) == ("cancelled", "deadline", "reconciler")


def test_begin_and_steps_begin_cancel_an_overdue_run(client: TestClient, sql: psycopg.Connection[Any]) -> None:
    first = enqueue(client, deadlineMs=3_600_000)["run"]
    second = enqueue(client, deadlineMs=3_600_000)["run"]
    owner = claim(client, "q", limit=1)["leaseOwner"]
    sql.execute("UPDATE tidebase.runs SET deadline_at = tidebase.now() - interval '1 ms'")
    begun = client.post(f"/runs/{second['id']}/begin")  # the queued one: cancelled, then refused
    assert (begun.status_code, begun.json()["code"], begun.json()["run"]["cancelReason"]) == (
        409, "run_cancelled", "deadline")
    step = client.post(f"/runs/{first['id']}/steps/begin", json={"name": "s", "inputHash": "h", "leaseOwner": owner})
    assert step.json() == {"action": "cancelled"}  # the running one, met by its own holder
    run = client.get(f"/runs/{first['id']}").json()["run"]
    assert (run["status"], run["cancelReason"], run["cancelActor"]) == ("cancelled", "deadline", "reconciler")


def test_schedules(client: TestClient, dsn: str, sql: psycopg.Connection[Any]) -> None:
    r = client.put("/schedules/nightly", json={"cron": "*/15 * * * *", "workflowName": "digest", "queue": "cron"})
    schedule = r.json()["schedule"]
    assert (schedule["cron"], schedule["queue"], schedule["input"], schedule["enabled"]) == (
        "*/15 * * * *", "cron", {}, True)
    assert schedule["nextRunAt"][14:16] in ("00", "15", "30", "45")
    for cron in ("61 * * * *", "* * * *", "0 0 31 2 *", "*/0 * * * *", "@daily", "0 0 * JAN *"):
        bad = client.put("/schedules/x", json={"cron": cron, "workflowName": "w"})
        assert (bad.status_code, bad.json()["issues"][0]["path"]) == (400, ["cron"]), cron
    again = client.put("/schedules/nightly", json={"cron": "0 3 * * *", "workflowName": "digest2"}).json()
    assert again["schedule"]["createdAt"] == schedule["createdAt"] and again["schedule"]["queue"] == "default"
    # a due schedule fires once: one run per fire time, deduplicated by name and fire time
    # the latest 03:00 UTC that has passed, by the database clock
    row = sql.execute("UPDATE tidebase.schedules SET next_fire_at = date_trunc('day', tidebase.now() - interval "
                      "'3 hours') + interval '3 hours' RETURNING to_char(next_fire_at AT TIME ZONE 'UTC', "
                      "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')").fetchone()
    assert row is not None
    fire = row[0]
    with Tidebase(dsn) as tide:
        assert len(Reconciler(tide).tick().fired) == 1
        assert Reconciler(tide).tick().fired == []
    [run] = client.get("/runs", params={"queue": "default"}).json()["runs"]
    assert run["workflowName"] == "digest2" and run["dedupeKey"] == f"sched:nightly:{fire}"
    assert run["metadata"] == {"schedule": "nightly", "fireTime": fire}
    assert events(client, run["id"])[0]["payload"]["fireTime"] == fire
    listed = client.get("/schedules").json()["schedules"]
    assert [s["name"] for s in listed] == ["nightly"] and listed[0]["lastEnqueuedAt"] is not None
    assert listed[0]["nextRunAt"] > run["createdAt"]
    assert client.delete("/schedules/nightly").json() == {"deleted": "nightly"}
    gone = client.delete("/schedules/nightly")
    assert (gone.status_code, gone.json()["code"]) == (404, "schedule_not_found")


def test_recover_and_channels(client: TestClient, sql: psycopg.Connection[Any]) -> None:
    r = client.post("/runs/wf", json={"recoveryWebhook": "http://127.0.0.1:9/resume", "channels": [
        {"type": "webhook", "url": "http://127.0.0.1:9/ch", "secret": "chan-secret-42", "events": ["run.completed"]},
        {"url": "https://example.com/all"}]})
    run = r.json()["run"]
    assert run["recoveryWebhook"] == "http://127.0.0.1:9/resume"
    rec = client.post(f"/runs/{run['id']}/recover", json={})
    assert rec.status_code == 202
    attempt = rec.json()["recoveryAttempt"]
    assert attempt["id"].startswith("rec_") and len(attempt["id"]) == 36
    assert (attempt["type"], attempt["reason"], attempt["status"], attempt["webhookUrl"]) == (
        "run.resume", "manual", "pending", "http://127.0.0.1:9/resume")
    owner = client.post(f"/runs/{run['id']}/begin").json()["leaseOwner"]
    client.post(f"/runs/{run['id']}/complete", json={"result": 7, "leaseOwner": owner})
    detail_text = client.get(f"/runs/{run['id']}").text
    assert "chan-secret-42" not in detail_text
    detail = json.loads(detail_text)
    assert [(c["config"], c["hasSecret"], c["events"]) for c in detail["channels"]] == [
        ({"url": "http://127.0.0.1:9/ch"}, True, ["run.completed"]),
        ({"url": "https://example.com/all"}, False, [])]
    created = detail["events"][0]
    assert created["type"] == "run.created" and created["payload"]["channels"][0] == {
        "type": "webhook", "url": "http://127.0.0.1:9/ch", "events": ["run.completed"]}
    assert [(d["eventType"], d["status"]) for d in detail["channelDeliveries"]] == [
        ("run.completed", "pending"), ("run.completed", "pending")]
    assert [a["id"] for a in detail["recoveryAttempts"]] == [attempt["id"]]
    assert [e["payload"] for e in detail["events"] if e["type"] == "recovery.started"] == [
        {"recoveryAttemptId": attempt["id"], "reason": "manual"}]
    # the run completed before the webhook left: the dispatcher's claim closes it as superseded, unsent
    assert sql.execute("SELECT count(*) FROM tidebase.claim_deliveries(100, 60000) WHERE kind = 'recovery'"
                       ).fetchone() == (0,)
    [closed] = client.get(f"/runs/{run['id']}").json()["recoveryAttempts"]
    assert (closed["status"], closed["errorText"], closed["completedAt"] is not None) == (
        "failed", "superseded: run is completed", True)
    assert events(client, run["id"])[-1]["type"] == "recovery.failed"
    done = client.post(f"/runs/{run['id']}/recover", json={})
    assert (done.status_code, done.json()["code"]) == (409, "run_completed")
    plain = client.post("/runs/wf", json={}).json()["run"]
    assert client.post(f"/runs/{plain['id']}/recover").json()["code"] == "no_recovery_webhook"
    assert client.post("/runs/nope/recover").status_code == 404


def test_automatic_recoveries_are_spaced_and_single(client: TestClient, sql: psycopg.Connection[Any]) -> None:
    run = client.post("/runs/wf", json={"recoveryWebhook": "http://127.0.0.1:9/r"}).json()["run"]
    owner = client.post(f"/runs/{run['id']}/begin").json()["leaseOwner"]
    client.post(f"/runs/{run['id']}/fail", json={"error": {"message": "x"}, "leaseOwner": owner})
    owner = client.post(f"/runs/{run['id']}/begin").json()["leaseOwner"]  # failed runs re-open
    client.post(f"/runs/{run['id']}/fail", json={"error": {"message": "y"}, "leaseOwner": owner})
    [first] = client.get(f"/runs/{run['id']}").json()["recoveryAttempts"]  # one pending at a time
    assert first["reason"] == "run_failed"
    sql.execute("UPDATE tidebase.outbox SET status = 'dead' WHERE run_id = %s", (run["id"],))
    owner = client.post(f"/runs/{run['id']}/begin").json()["leaseOwner"]
    client.post(f"/runs/{run['id']}/fail", json={"error": {"message": "z"}, "leaseOwner": owner})
    attempts = client.get(f"/runs/{run['id']}").json()["recoveryAttempts"]
    assert len(attempts) == 2
    # the second waits 60 s after the first was created
    spaced = sql.execute("SELECT extract(epoch FROM o2.next_attempt_at - o1.created_at) FROM tidebase.outbox o1, "
                         "tidebase.outbox o2 WHERE o1.run_id = %s AND o2.run_id = o1.run_id AND o2.id > o1.id",
                         (run["id"],)).fetchone()
    assert spaced is not None and spaced[0] >= 60


def test_the_automatic_recovery_cap_is_the_servers_setting(dsn: str, sql: psycopg.Connection[Any]) -> None:
    """`max_auto_recoveries` reaches the failure decided by the server's door: with a cap of 1, a second final failure
    schedules no second automatic recovery, though the first is long dead."""
    with TestClient(create_app(Settings(database_url=dsn, reconciler=False, max_auto_recoveries=1))) as capped:
        run = capped.post("/runs/wf", json={"recoveryWebhook": "http://127.0.0.1:9/r"}).json()["run"]
        for message in ("x", "y"):
            owner = capped.post(f"/runs/{run['id']}/begin").json()["leaseOwner"]
            capped.post(f"/runs/{run['id']}/fail", json={"error": {"message": message}, "leaseOwner": owner})
            sql.execute("UPDATE tidebase.outbox SET status = 'dead' WHERE run_id = %s", (run["id"],))
        assert len(capped.get(f"/runs/{run['id']}").json()["recoveryAttempts"]) == 1


def test_lease_expiry_of_a_run_with_webhook_schedules_one_recovery(client: TestClient,
                                                                   sql: psycopg.Connection[Any]) -> None:
    run = client.post("/runs/wf", json={"recoveryWebhook": "http://127.0.0.1:9/r"}).json()["run"]
    other = client.post("/runs/wf", json={}).json()["run"]
    for r in (run, other):
        client.post(f"/runs/{r['id']}/begin")
    sql.execute("UPDATE tidebase.runs SET lease_expires_at = tidebase.now() - interval '1 ms'")
    ids = [r[0] for r in sql.execute("SELECT * FROM tidebase.recover_expired_webhooks(100, 10)")]
    assert ids == [run["id"]]
    assert [r[0] for r in sql.execute("SELECT * FROM tidebase.recover_expired_webhooks(100, 10)")] == []  # pending
    [attempt] = client.get(f"/runs/{run['id']}").json()["recoveryAttempts"]
    assert attempt["reason"] == "lease_expired"
    assert client.get(f"/runs/{run['id']}").json()["run"]["status"] == "running"  # anyone may take it over


def test_push_dispatch_offers_runs_to_the_invoke_url(client: TestClient, sql: psycopg.Connection[Any]) -> None:
    client.put("/queues/push/config", json={"invokeUrl": "http://127.0.0.1:9/invoke", "concurrency": 5})
    runs = [enqueue(client, "push")["run"] for _ in range(2)]
    created = [r[0] for r in sql.execute("SELECT public_id FROM tidebase.dispatch_push(100)")]
    assert len(created) == 2
    for run in runs:
        detail = client.get(f"/runs/{run['id']}").json()
        [attempt] = detail["recoveryAttempts"]
        assert (attempt["type"], attempt["reason"], attempt["webhookUrl"]) == (
            "run.invoke", "queue_dispatch", "http://127.0.0.1:9/invoke")
        assert detail["run"]["status"] == "queued" and detail["run"]["runAt"] > detail["run"]["createdAt"]
        body = json.loads(sql.execute("SELECT body FROM tidebase.outbox WHERE public_id = %s",
                                      (attempt["id"],)).fetchone()[0])  # type: ignore[index]
        assert body == {"type": "run.invoke", "runId": run["id"], "workflowName": "wf", "reason": "queue_dispatch",
                        "attempt": 0}
    assert [r[0] for r in sql.execute("SELECT public_id FROM tidebase.dispatch_push(100)")] == []  # offered once
    # a run the application began is no longer queued: its invoke webhook is superseded
    client.post(f"/runs/{runs[0]['id']}/begin")
    sql.execute("SELECT * FROM tidebase.claim_deliveries(100, 60000)")
    statuses = {a["status"] for a in client.get(f"/runs/{runs[0]['id']}").json()["recoveryAttempts"]}
    assert statuses == {"failed"}


def test_first_tries_go_out_in_event_order_per_url(client: TestClient, sql: psycopg.Connection[Any]) -> None:
    """Two deliveries of one run to one URL: the second is not handed to any dispatcher before the first has had its
    first try recorded, however many dispatchers claim (docs/http-api.md#delivery)."""
    run = client.post("/runs/wf", json={"channels": [{"url": "http://127.0.0.1:9/ch"}]}).json()["run"]
    client.put(f"/runs/{run['id']}/state", json={"value": 1})
    client.put(f"/runs/{run['id']}/state", json={"value": 2})
    ids = [r[0] for r in sql.execute("SELECT id FROM tidebase.outbox WHERE run_id = %s ORDER BY id", (run["id"],))]
    assert len(ids) == 2
    claim_sql = "SELECT id, attempts FROM tidebase.claim_deliveries(10, 60000)"
    assert sql.execute(claim_sql).fetchall() == [(ids[0], 1)]
    assert sql.execute(claim_sql).fetchall() == []  # the first is in flight: the second waits
    sql.execute("SELECT tidebase.record_delivery(%s, 1, now(), 5, 503, 'HTTP 503', false, true, 0, '', NULL)",
                (ids[0],))
    assert sorted(sql.execute(claim_sql).fetchall()) == [(ids[0], 2), (ids[1], 1)]  # retries may reorder
