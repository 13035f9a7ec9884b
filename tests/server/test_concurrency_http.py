"""Races over real HTTP against a real `tidebase serve` process: every guarantee comes from the run row lock in SQL,
so N concurrent callers see exactly one winner."""

from __future__ import annotations

import concurrent.futures
from collections import Counter
from typing import Any

from server_proc import Server

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
