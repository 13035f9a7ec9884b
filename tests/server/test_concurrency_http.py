"""Races over real HTTP against a real `tidebase serve` process: every guarantee comes from the run row lock in SQL,
so N concurrent callers see exactly one winner."""

from __future__ import annotations

import concurrent.futures
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from server_proc import Server, start_server, stop_server

from fix_probe import wait_until

N = 8


def race(server: Server, calls: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]]) -> list[Any]:
    def one(call: tuple[str, str, dict[str, Any] | None, dict[str, str]]) -> Any:
        method, url, body, headers = call
        with server.client() as http:
            return http.request(method, url, json=body, headers=headers)

    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


def test_concurrent_begins_one_owner_wins(server: Server) -> None:
    with server.client() as http:
        run = http.post("/runs/race", json={}).json()["run"]
    answers = race(server, [("POST", f"/runs/{run['id']}/begin", None, {"x-tidebase-worker": f"w{i}"})
                            for i in range(N)])
    assert Counter(a.status_code for a in answers) == {200: 1, 409: N - 1}
    winner = next(a.json()["leaseOwner"] for a in answers if a.status_code == 200)
    assert {a.json()["leaseOwner"] for a in answers if a.status_code == 409} == {winner}


def test_concurrent_first_step_begins_create_one_step(server: Server) -> None:
    with server.client() as http:
        run = http.post("/runs/race", json={}).json()["run"]
        owner = http.post(f"/runs/{run['id']}/begin").json()["leaseOwner"]
    answers = race(server, [("POST", f"/runs/{run['id']}/steps/begin",
                             {"name": "s", "inputHash": "h", "leaseOwner": owner}, {}) for _ in range(N)])
    assert {a.json()["step"]["id"] for a in answers} == {answers[0].json()["step"]["id"]}
    with server.client() as http:
        assert len(http.get(f"/runs/{run['id']}").json()["steps"]) == 1


def test_concurrent_children_create_one_child(server: Server) -> None:
    with server.client() as http:
        parent = http.post("/runs/race", json={}).json()["run"]
    body = {"name": "only", "workflowName": "kid", "input": {"x": 1}}
    answers = race(server, [("POST", f"/runs/{parent['id']}/children", body, {}) for _ in range(N)])
    assert {a.json()["run"]["id"] for a in answers} == {answers[0].json()["run"]["id"]}
    assert sum(a.json()["created"] for a in answers) == 1


def test_concurrent_gate_resolves_one_decision_wins(server: Server) -> None:
    with server.client() as http:
        run = http.post("/runs/race", json={}).json()["run"]
        begun = race(server, [("POST", f"/runs/{run['id']}/gates/begin", {"name": "g", "prompt": "p"}, {})
                              for _ in range(N)])
        assert len({b.json()["gate"]["id"] for b in begun}) == 1
        assert sum(b.json()["gate"]["resolveToken"] is not None for b in begun) == 1
        gate_id = begun[0].json()["gate"]["id"]
    decisions = ["approved", "rejected"] * (N // 2)
    answers = race(server, [("POST", f"/runs/{run['id']}/gates/{gate_id}/resolve", {"decision": d}, {})
                            for d in decisions])
    winners = {a.json()["gate"]["decision"] for a in answers if a.status_code == 200}
    assert len(winners) == 1
    losers = [a for a in answers if a.status_code != 200]
    assert losers and all(a.status_code == 409 and a.json()["code"] == "gate_resolved" for a in losers)
    assert sum(a.status_code == 200 for a in answers) == N // 2  # the winner and its same-decision retries


# Queues ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def calm_server(dsn: str) -> Iterator[Server]:
    """A server whose leases (10 min) cannot run out during a test. The caps count running runs, so a lease that the
    reconciler expired mid-test (the default test lease is 1.5 s) would requeue a run and free a slot behind the
    test's back."""
    srv = start_server(dsn, env={"TIDEBASE_LEASE_MS": "600000"})
    yield srv
    stop_server(srv)


def enqueue_many(server: Server, queue: str, n: int) -> list[str]:
    with server.client() as http:
        answers = [http.post(f"/queues/{queue}/enqueue", json={"workflowName": "wf", "input": {"i": i}})
                   for i in range(n)]
    assert [a.status_code for a in answers] == [200] * n
    return [a.json()["run"]["id"] for a in answers]


def configure(server: Server, queue: str, config: dict[str, Any]) -> None:
    with server.client() as http:
        r = http.put(f"/queues/{queue}/config", json=config)
    assert r.status_code == 200, r.text


def claim_calls(queue: str, limit: int) -> list[tuple[str, str, dict[str, Any] | None, dict[str, str]]]:
    return [("POST", "/queues/claim", {"queues": [queue], "limit": limit, "leaseOwner": f"w{i}"}, {})
            for i in range(N)]


def claimed(answers: list[Any]) -> list[tuple[str, str]]:
    """(run id, claimer) of every run handed out, duplicates kept; every answer must be a 200."""
    assert [a.status_code for a in answers] == [200] * len(answers), [a.text for a in answers]
    return [(run["id"], a.json()["leaseOwner"]) for a in answers for run in a.json()["runs"]]


def runs_of(server: Server, queue: str, status: str | None = None) -> list[dict[str, Any]]:
    params = {"queue": queue, **({"status": status} if status else {})}
    with server.client() as http:
        r = http.get("/runs", params=params)
    assert r.status_code == 200, r.text
    runs: list[dict[str, Any]] = r.json()["runs"]
    return runs


def test_concurrent_enqueues_one_dedupe_key_create_one_run(server: Server) -> None:
    body = {"workflowName": "wf", "input": {"x": 1}, "dedupeKey": "once"}
    answers = race(server, [("POST", "/queues/dd/enqueue", body, {}) for _ in range(N)])
    assert [a.status_code for a in answers] == [200] * N, [a.text for a in answers]
    ids = {a.json()["run"]["id"] for a in answers}
    assert len(ids) == 1
    assert sorted(a.json()["deduplicated"] for a in answers) == [False] + [True] * (N - 1)
    assert [r["id"] for r in runs_of(server, "dd")] == list(ids)


@pytest.mark.parametrize(("queue", "config", "cap"), [("capped", {"concurrency": 5}, 5),
                                                     ("rated", {"ratePerMinute": 4}, 4)])
def test_concurrent_claims_take_disjoint_runs_up_to_the_cap(calm_server: Server, queue: str,
                                                            config: dict[str, int], cap: int) -> None:
    """8 claims of up to 3 runs race on 20 ready runs: they get disjoint runs, exactly `cap` in all, whether the cap
    is the queue's concurrency or its rate."""
    server = calm_server
    configure(server, queue, config)
    enqueue_many(server, queue, 20)
    taken = claimed(race(server, claim_calls(queue, 3)))
    ids = [run_id for run_id, _ in taken]
    assert len(ids) == len(set(ids)) == cap
    running = runs_of(server, queue, "running")
    assert sorted((r["id"], r["leaseOwner"]) for r in running) == sorted(taken)
    assert len(runs_of(server, queue, "queued")) == 20 - cap
    assert claimed(race(server, claim_calls(queue, 3)[:1])) == []  # the cap still holds afterwards


CLAIM_SESSIONS = """
SELECT pid, backend_xid::text AS xid, wait_event_type, pg_blocking_pids(pid) AS blockers
  FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%%tidebase.claim_runs(%%'
 ORDER BY pid
"""


def waiting_claims(observer: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """The server's sessions inside tidebase.claim_runs that are blocked on a heavyweight lock."""
    with observer.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(CLAIM_SESSIONS).fetchall()
    return [r for r in rows if r["wait_event_type"] == "Lock"]


def test_claims_of_overlapping_queues_in_opposite_orders_cannot_deadlock(calm_server: Server) -> None:
    """Proves that claim_runs locks the queues' config rows in one canonical (sorted) order, whatever order the
    caller lists them in, by building the one interleaving where per-request order deadlocks.

    A test transaction holds queue b's config row. Claim 1 lists ["b", "a"] and is started first; only once it is
    seen blocked is claim 2, listing ["a", "b"], started, and then it is seen blocked too.

    - With canonical order, claim 1 locks a, then blocks on b (held by the test); claim 2 blocks on a (held by
      claim 1) holding nothing. The lock graph is a chain: claim 2 -> claim 1 -> test. Asserted exactly, from
      pg_stat_activity and the rows' xmax: claim 1 is blocked by the test only, claim 2 by claim 1 only, a is
      locked by claim 1 and b by the test, so claim 2 holds no config row. When the test rolls back, claim 1 takes
      b, claims both runs (b first: the caller's order) and commits; then claim 2 locks a and b and finds nothing.
    - With per-request order, claim 1 would block on b holding nothing, and claim 2 would lock a and then queue on
      b behind claim 1 (claim 1 waits first, so it holds b's tuple lock and is granted b first). On rollback claim 1
      gets b and asks for a, held by claim 2, which waits for b: a cycle, and Postgres aborts one of them with
      40P01. The lock state before the rollback differs too: a's xmax is claim 2's. (pg_blocking_pids alone would
      not tell: claim 2, queued on b's tuple lock behind claim 1, is reported blocked by claim 1 either way, so the
      xmax of the rows is what tells the two orders apart.)

    Both answers being 200 is necessary but not sufficient: the server retries a 40P01 (three tries) before it
    answers 503, so a deadlock that a retry absorbs still answers 200. That is why the lock graph is asserted
    before the rollback: a chain that ends at the test's transaction has no cycle to close. No sleeps: every wait
    polls pg_stat_activity, and its deadline only turns a hang into a failure."""
    server = calm_server
    configure(server, "a", {})
    configure(server, "b", {})
    [run_a] = enqueue_many(server, "a", 1)
    [run_b] = enqueue_many(server, "b", 1)

    def claim(queues: list[str], owner: str) -> httpx.Response:
        with server.client() as http:
            return http.post("/queues/claim", json={"queues": queues, "limit": 2, "leaseOwner": owner})

    with psycopg.connect(server.dsn, autocommit=True, application_name="test-observer") as observer, \
            psycopg.connect(server.dsn, application_name="test-blocker") as blocker, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        blocker.execute("SELECT 1 FROM tidebase.queue_config WHERE queue = 'b' FOR UPDATE")
        row = blocker.execute("SELECT pg_backend_pid(), pg_current_xact_id()::text").fetchone()
        assert row is not None
        blocker_pid, blocker_xid = row
        try:
            first = pool.submit(claim, ["b", "a"], "claim-ba")
            wait_until(lambda: len(waiting_claims(observer)) == 1, "claim 1 to block")
            [c1] = waiting_claims(observer)
            second = pool.submit(claim, ["a", "b"], "claim-ab")
            wait_until(lambda: len(waiting_claims(observer)) == 2, "claim 2 to block")
            [c2] = [c for c in waiting_claims(observer) if c["pid"] != c1["pid"]]
            assert c1["blockers"] == [blocker_pid]
            assert c2["blockers"] == [c1["pid"]]
            lockers: dict[str, str] = dict(observer.execute(
                "SELECT queue, xmax::text FROM tidebase.queue_config WHERE queue IN ('a', 'b')").fetchall())
            assert lockers == {"a": c1["xid"], "b": blocker_xid}
            assert c2["xid"] not in lockers.values()
        finally:
            blocker.rollback()
        answer_1, answer_2 = first.result(timeout=60), second.result(timeout=60)
    assert (answer_1.status_code, answer_2.status_code) == (200, 200), (answer_1.text, answer_2.text)
    assert [r["id"] for r in answer_1.json()["runs"]] == [run_b, run_a]
    assert answer_2.json()["runs"] == []
    for queue, run_id in (("a", run_a), ("b", run_b)):
        assert [(r["id"], r["status"], r["leaseOwner"], r["attempt"]) for r in runs_of(server, queue)] == [
            (run_id, "running", "claim-ba", 1)]
