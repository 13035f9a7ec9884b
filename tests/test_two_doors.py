"""Both doors leave the same rows: each case is driven once through the library (the sync API) and once through the
HTTP door (`AsyncWire`, the engine under `tidebase serve`) over the same real database, and the rows each leaves (the
run and its children, steps, events, state versions, gates, edges) must be equal once ids, lease owners, token hashes
and timestamps are replaced by placeholders (numbered by first appearance, so equal ids must stay equal).

Steps go through the marker in both doors (the library's pure steps skip it: they have no HTTP twin), so the
library's steps here have side effects or a non-auto replay mode, and the HTTP side sends the same three options. An
error the library records (a Python traceback) is sent as is by the HTTP side. What the HTTP side does is what an
upstream SDK does: begin, steps/begin, complete or fail each step, complete or fail the run.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tidebase import ManualReviewRequired, RunCancelled, Tidebase
from tidebase.core import serde
from tidebase.core.db_async import AsyncDatabase
from tidebase.server.http_engine import AsyncWire, input_hash

KEYED = {"side_effects": ["crm.write"], "idempotency_key": "crm:1"}
UNKEYED = {"side_effects": ["email.send"]}
NEVER = {"side_effects": ["crm.write"], "idempotency_key": "crm:1", "replay": "never"}
OPTIONS = {  # what an SDK sends for the library's arguments above
    "keyed": {"sideEffects": ["crm.write"], "idempotencyKey": "crm:1", "replay": "auto"},
    "unkeyed": {"sideEffects": ["email.send"], "idempotencyKey": None, "replay": "manual"},
    "never": {"sideEffects": ["crm.write"], "idempotencyKey": "crm:1", "replay": "never"},
}
NULL_HASH = serde.NULL_HASH
GENERATED_ID = re.compile(r"^(run|step|gate|edge|ver|stream|chan|use|rec|del)_[0-9a-f]{32}$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


class Crash(BaseException):
    """A process dying in the middle of a step: not a failure of the step, nothing catches it."""


@dataclass
class Recorded:
    """What the library door recorded that the HTTP side must send as is: the run.failed errors, in order, and the
    step.failed errors."""

    run_errors: list[Any]
    step_errors: list[Any]


Library = Callable[[Tidebase, str], None]
Http = Callable[[AsyncWire, str, Recorded], Awaitable[None]]


def attempt(fn: Callable[[], Any], *errors: type[BaseException]) -> None:
    """Calls fn, expecting it to raise one of `errors` (a run the library ends by raising)."""
    with pytest.raises(errors):
        fn()


# -- the cases ---------------------------------------------------------------------------------------------------------

def lib_execute(tide: Tidebase, run_id: str) -> None:
    tide.run("wf", lambda run, input: run.step("s", lambda: {"ok": 1}, **KEYED), run_id=run_id)


async def http_execute(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    await wire.create_run(run_id, "wf", None, {})
    await wire.begin(run_id, "w1")
    _, step = await wire.begin_step(run_id, "w1", "s", NULL_HASH, None, OPTIONS["keyed"])
    assert step is not None
    await wire.complete_step(run_id, step["id"], "w1", {"ok": 1})
    await wire.complete(run_id, "w1", {"ok": 1})


def lib_replay(tide: Tidebase, run_id: str) -> None:
    def first(run: Any, input: Any) -> Any:
        run.step("s", lambda: 1, **KEYED)
        raise RuntimeError("crash after s")

    attempt(lambda: tide.run("wf", first, run_id=run_id), RuntimeError)
    ran: list[int] = []
    tide.run("wf", lambda run, input: run.step("s", lambda: ran.append(2) or 2, **KEYED), run_id=run_id)
    assert ran == []  # replayed, not run


async def http_replay(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    await wire.create_run(run_id, "wf", None, {})
    await wire.begin(run_id, "w1")
    _, step = await wire.begin_step(run_id, "w1", "s", NULL_HASH, None, OPTIONS["keyed"])
    assert step is not None
    await wire.complete_step(run_id, step["id"], "w1", 1)
    await wire.fail(run_id, "w1", rec.run_errors[0], None)
    await wire.begin(run_id, "w2")
    assert (await wire.begin_step(run_id, "w2", "s", NULL_HASH, None, OPTIONS["keyed"]))[0] == "return"
    await wire.complete(run_id, "w2", 1)


def lib_input_mismatch(tide: Tidebase, run_id: str) -> None:
    def first(run: Any, input: Any) -> Any:
        run.step("s", lambda: 1, input={"q": "a"}, **KEYED)
        raise RuntimeError("crash after s")

    attempt(lambda: tide.run("wf", first, run_id=run_id), RuntimeError)
    attempt(lambda: tide.run("wf", lambda run, input: run.step("s", lambda: 2, input={"q": "b"}, **KEYED),
                             run_id=run_id), Exception)


async def http_input_mismatch(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    hash_a, hash_b = serde.canonical_hash({"q": "a"}, serde.JsonSerializer()), input_hash({"q": "b"})
    await wire.create_run(run_id, "wf", None, {})
    await wire.begin(run_id, "w1")
    _, step = await wire.begin_step(run_id, "w1", "s", hash_a, None, OPTIONS["keyed"])
    assert step is not None
    await wire.complete_step(run_id, step["id"], "w1", 1)
    await wire.fail(run_id, "w1", rec.run_errors[0], None)
    await wire.begin(run_id, "w2")
    assert (await wire.begin_step(run_id, "w2", "s", hash_b, None, OPTIONS["keyed"]))[0] == "input_mismatch"
    await wire.fail(run_id, "w2", rec.run_errors[1], None)


def lib_failure_retryable(tide: Tidebase, run_id: str) -> None:
    def flaky() -> Any:
        raise ConnectionError("down")

    attempt(lambda: tide.run("wf", lambda run, input: run.step("s", flaky, retries=1, backoff=0, **KEYED),
                             run_id=run_id), ConnectionError)


async def http_failure_retryable(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    await wire.create_run(run_id, "wf", None, {})
    await wire.begin(run_id, "w1")
    for error, decision in zip(rec.step_errors, ("auto_retry", "safe_replay"), strict=True):
        _, step = await wire.begin_step(run_id, "w1", "s", NULL_HASH, None, OPTIONS["keyed"])
        assert step is not None
        await wire.fail_step(run_id, step["id"], "w1", error, True, decision)
    await wire.fail(run_id, "w1", rec.run_errors[0], None)


def lib_failure_final(tide: Tidebase, run_id: str) -> None:
    def broken() -> Any:
        raise ValueError("no")

    attempt(lambda: tide.run("wf", lambda run, input: run.step("s", broken, **NEVER), run_id=run_id), ValueError)


async def http_failure_final(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    await wire.create_run(run_id, "wf", None, {})
    await wire.begin(run_id, "w1")
    _, step = await wire.begin_step(run_id, "w1", "s", NULL_HASH, None, OPTIONS["never"])
    assert step is not None
    await wire.fail_step(run_id, step["id"], "w1", rec.step_errors[0], False, "fail_hard")
    await wire.fail(run_id, "w1", rec.run_errors[0], None)


def _crash() -> Any:
    raise Crash


def lib_park(tide: Tidebase, run_id: str) -> None:
    def wf(run: Any, input: Any) -> Any:
        return run.step("send", _crash, **UNKEYED)

    attempt(lambda: tide.run("wf", wf, run_id=run_id), Crash)
    attempt(lambda: tide.run("wf", wf, run_id=run_id), ManualReviewRequired)


async def http_park(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    await wire.create_run(run_id, "wf", None, {})
    await wire.begin(run_id, "w1")
    assert (await wire.begin_step(run_id, "w1", "send", NULL_HASH, None, OPTIONS["unkeyed"]))[0] == "execute"
    await wire.fail(run_id, "w1", rec.run_errors[0], None)
    await wire.begin(run_id, "w2")
    assert (await wire.begin_step(run_id, "w2", "send", NULL_HASH, None, OPTIONS["unkeyed"]))[0] == "parked"
    await wire.fail(run_id, "w2", rec.run_errors[1], None)


def lib_release(tide: Tidebase, run_id: str) -> None:
    lib_park(tide, run_id)
    tide.runs.release_step(run_id, "send", actor="ops", reason="checked: not sent")
    tide.run("wf", lambda run, input: run.step("send", lambda: "sent", **UNKEYED), run_id=run_id)


async def http_release(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    await http_park(wire, run_id, rec)
    step = await wire.step_by_name(run_id, "send")
    assert step is not None
    await wire.review_step(run_id, step["id"], "retry", None, "ops", "checked: not sent")
    await wire.begin(run_id, "w3")
    assert (await wire.begin_step(run_id, "w3", "send", NULL_HASH, None, OPTIONS["unkeyed"]))[0] == "execute"
    await wire.complete_step(run_id, step["id"], "w3", "sent")
    await wire.complete(run_id, "w3", "sent")


def lib_skip(tide: Tidebase, run_id: str) -> None:
    lib_park(tide, run_id)
    tide.runs.skip_step(run_id, "send", {"sent": "by hand"}, actor="ops", reason="sent by hand")
    tide.run("wf", lambda run, input: run.step("send", _crash, **UNKEYED), run_id=run_id)


async def http_skip(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    await http_park(wire, run_id, rec)
    step = await wire.step_by_name(run_id, "send")
    assert step is not None
    await wire.review_step(run_id, step["id"], "complete", {"sent": "by hand"}, "ops", "sent by hand")
    await wire.begin(run_id, "w3")
    assert (await wire.begin_step(run_id, "w3", "send", NULL_HASH, None, OPTIONS["unkeyed"]))[0] == "return"
    await wire.complete(run_id, "w3", {"sent": "by hand"})


def lib_interrupted(tide: Tidebase, run_id: str) -> None:
    attempt(lambda: tide.run("wf", lambda run, input: run.step("s", _crash, **KEYED), run_id=run_id), Crash)
    tide.run("wf", lambda run, input: run.step("s", lambda: "again", **KEYED), run_id=run_id)


async def http_interrupted(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    await wire.create_run(run_id, "wf", None, {})
    await wire.begin(run_id, "w1")
    assert (await wire.begin_step(run_id, "w1", "s", NULL_HASH, None, OPTIONS["keyed"]))[0] == "execute"
    await wire.fail(run_id, "w1", rec.run_errors[0], None)
    await wire.begin(run_id, "w2")
    _, step = await wire.begin_step(run_id, "w2", "s", NULL_HASH, None, OPTIONS["keyed"])
    assert step is not None and step["attempt"] == 2
    await wire.complete_step(run_id, step["id"], "w2", "again")
    await wire.complete(run_id, "w2", "again")


def lib_state(tide: Tidebase, run_id: str) -> None:
    def wf(run: Any, input: Any) -> Any:
        run.state.set({"status": "drafting", "progress": 0.5})
        run.state.patch({"progress": 0.9}, label="almost", reason="reviewed")
        return None

    tide.run("wf", wf, run_id=run_id)


async def http_state(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    await wire.create_run(run_id, "wf", None, {})
    await wire.begin(run_id, "w1")
    await wire.write_state(run_id, "set", "run", {"status": "drafting", "progress": 0.5}, created_by="w1")
    await wire.write_state(run_id, "patch", "run", {"progress": 0.9}, label="almost", reason="reviewed",
                           created_by="w1")
    await wire.complete(run_id, "w1", None)


def lib_event(tide: Tidebase, run_id: str) -> None:
    tide.run("wf", lambda run, input: run.emit("agent.note", {"n": 1}) and None, run_id=run_id)


async def http_event(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    await wire.create_run(run_id, "wf", None, {})
    await wire.begin(run_id, "w1")
    await wire.append_event(run_id, "w1", "agent.note", {"n": 1})
    await wire.complete(run_id, "w1", None)


def lib_gate(tide: Tidebase, run_id: str) -> None:
    def wf(run: Any, input: Any) -> Any:
        gate = run.gates.begin("approve", "Ship it?", data={"to": "cfo"})
        tide.gates.resolve(gate.id, "approved", actor="alice", payload={"note": "ok"})
        return "shipped"

    tide.run("wf", wf, run_id=run_id)


async def http_gate(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    await wire.create_run(run_id, "wf", None, {})
    await wire.begin(run_id, "w1")
    gate, created, _ = await wire.begin_gate(run_id, "approve", "Ship it?", {"to": "cfo"}, None, [])
    assert created
    await wire.resolve_gate(run_id, gate["id"], "approved", None, "alice", {"note": "ok"})
    await wire.complete(run_id, "w1", "shipped")


def lib_child(tide: Tidebase, run_id: str) -> None:
    def kid(run: Any, input: Any) -> Any:
        return {"got": input["k"]}

    tide.run("wf", lambda run, input: run.child("kid", kid, name="c1", input={"k": 1}), run_id=run_id)


async def http_child(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    await wire.create_run(run_id, "wf", None, {})
    await wire.begin(run_id, "w1")
    child, _, created = await wire.create_child(run_id, "c1", "kid", {"k": 1}, "child", {}, "run_" + "c" * 32, {})
    assert created
    await wire.begin(child["id"], "w2")
    await wire.complete(child["id"], "w2", {"got": 1})
    await wire.complete(run_id, "w1", {"got": 1})


def lib_fail(tide: Tidebase, run_id: str) -> None:
    def wf(run: Any, input: Any) -> Any:
        run.step("s", lambda: 1, **KEYED)
        raise ValueError("the model said no")

    attempt(lambda: tide.run("wf", wf, run_id=run_id), ValueError)


async def http_fail(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    await wire.create_run(run_id, "wf", None, {})
    await wire.begin(run_id, "w1")
    _, step = await wire.begin_step(run_id, "w1", "s", NULL_HASH, None, OPTIONS["keyed"])
    assert step is not None
    await wire.complete_step(run_id, step["id"], "w1", 1)
    await wire.fail(run_id, "w1", rec.run_errors[0], None)


def lib_cancel(tide: Tidebase, run_id: str) -> None:
    def wf(run: Any, input: Any) -> Any:
        run.step("s1", lambda: 1, **KEYED)
        tide.runs.cancel(run_id, reason="stop", actor="ops")
        return run.step("s2", lambda: 2, **KEYED)

    attempt(lambda: tide.run("wf", wf, run_id=run_id), RunCancelled)


async def http_cancel(wire: AsyncWire, run_id: str, rec: Recorded) -> None:
    await wire.create_run(run_id, "wf", None, {})
    await wire.begin(run_id, "w1")
    _, step = await wire.begin_step(run_id, "w1", "s1", NULL_HASH, None, OPTIONS["keyed"])
    assert step is not None
    await wire.complete_step(run_id, step["id"], "w1", 1)
    await wire.cancel(run_id, "stop", "ops")
    assert (await wire.begin_step(run_id, "w1", "s2", NULL_HASH, None, OPTIONS["keyed"]))[0] == "cancelled"


CASES: dict[str, tuple[Library, Http]] = {
    "execute": (lib_execute, http_execute),
    "replay": (lib_replay, http_replay),
    "input_mismatch": (lib_input_mismatch, http_input_mismatch),
    "failure_retryable": (lib_failure_retryable, http_failure_retryable),
    "failure_final": (lib_failure_final, http_failure_final),
    "manual_review_park": (lib_park, http_park),
    "release": (lib_release, http_release),
    "skip": (lib_skip, http_skip),
    "interrupted_with_contract": (lib_interrupted, http_interrupted),
    "state_set_patch": (lib_state, http_state),
    "custom_event": (lib_event, http_event),
    "gate_begin_resolve": (lib_gate, http_gate),
    "child": (lib_child, http_child),
    "run_fail": (lib_fail, http_fail),
    "cancel": (lib_cancel, http_cancel),
}


# -- reading and comparing -----------------------------------------------------------------------------------------

TABLES = {  # table: (the statement reading the rows of the runs %s, in an order that does not depend on ids)
    "runs": "SELECT * FROM tidebase.runs WHERE id = ANY(%s) ORDER BY array_position(%s, id)",
    "steps": "SELECT * FROM tidebase.steps WHERE run_id = ANY(%s) ORDER BY array_position(%s, run_id), key",
    "events": "SELECT run_id, seq, type, payload, created_at FROM tidebase.events WHERE run_id = ANY(%s) "
              "ORDER BY array_position(%s, run_id), seq",
    "state_versions": "SELECT * FROM tidebase.state_versions WHERE run_id = ANY(%s) "
                      "ORDER BY array_position(%s, run_id), stream, version",
    "gates": "SELECT * FROM tidebase.gates WHERE run_id = ANY(%s) ORDER BY array_position(%s, run_id), name",
    "run_edges": "SELECT * FROM tidebase.run_edges WHERE parent_run_id = ANY(%s) "
                 "ORDER BY array_position(%s, parent_run_id), name",
}


class Placeholders:
    """Replaces ids, lease owners and timestamps by placeholders: an identity becomes `<n>` by order of first
    appearance (so a reference to an id stays equal to the id), a time `<time>`, a token hash `<hash>`."""

    def __init__(self, identities: set[str]) -> None:
        self.identities = identities
        self.seen: dict[str, str] = {}

    def __call__(self, value: Any, column: str = "") -> Any:
        if column == "token_hash":
            return "<hash>"
        if isinstance(value, datetime):
            return "<time>"
        if isinstance(value, dict):
            return {k: self(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, str):
            if value in self.identities or GENERATED_ID.match(value):
                return self.seen.setdefault(value, f"<{len(self.seen)}>")
            if TIMESTAMP.match(value):
                return "<time>"
        return value


def rows_of(conn: psycopg.Connection[Any], run_id: str) -> dict[str, list[dict[str, Any]]]:
    """The rows the run `run_id` and its children left, every table, normalised."""
    with conn.cursor(row_factory=dict_row) as cur:
        tree = [run_id] + [r["child_run_id"] for r in cur.execute(
            "SELECT child_run_id FROM tidebase.run_edges WHERE parent_run_id = %s ORDER BY name", (run_id,))]
        owners = {r["o"] for r in cur.execute(
            "SELECT payload ->> 'leaseOwner' AS o FROM tidebase.events WHERE run_id = ANY(%s) "
            "AND type = 'run.started'", (tree,))}
        raw = {table: cur.execute(query, (tree, tree)).fetchall() for table, query in TABLES.items()}
    normal = Placeholders(set(tree) | owners)
    return {table: [normal(row) for row in rows] for table, rows in raw.items()}


def recorded(conn: psycopg.Connection[Any], run_id: str) -> Recorded:
    """The errors the library recorded for run `run_id`, for the HTTP side to send."""
    events = conn.execute("SELECT type, payload -> 'error' FROM tidebase.events WHERE run_id = %s ORDER BY seq",
                          (run_id,)).fetchall()
    return Recorded([e for t, e in events if t == "run.failed"], [e for t, e in events if t == "step.failed"])


async def through_http(dsn: str, run_id: str, script: Http, rec: Recorded) -> None:
    db = await AsyncDatabase.connect(dsn, min_size=1, max_size=2)
    try:
        await script(AsyncWire(db, lease_ms=30000), run_id, rec)
    finally:
        await db.close()


@pytest.mark.parametrize("case", list(CASES))
def test_both_doors_leave_the_same_rows(dsn: str, db: psycopg.Connection[Any], case: str) -> None:
    """A case driven through the library and through the HTTP door leaves equal runs, steps, events, state versions,
    gates and edges (ids, owners and times aside)."""
    library, http = CASES[case]
    tide = Tidebase(dsn, lease_seconds=30)
    try:
        library(tide, "lib")
    finally:
        tide.close()
    asyncio.run(through_http(dsn, "http", http, recorded(db, "lib")))
    by_library, by_http = rows_of(db, "lib"), rows_of(db, "http")
    assert by_library["runs"] and by_library["events"]
    for table in TABLES:
        assert by_http[table] == by_library[table], f"{case}: {table} differ"


def test_placeholders_keep_references_equal() -> None:
    """The normalisation maps an id to the same placeholder wherever it appears, and different ids apart, so a
    difference in which object a row points at is not hidden."""
    a, b = "step_" + "a" * 32, "step_" + "b" * 32
    normal = Placeholders({"lib"})
    assert normal({"id": a, "payload": {"stepId": a, "other": b}, "run_id": "lib"}) == {
        "id": "<0>", "payload": {"stepId": "<0>", "other": "<1>"}, "run_id": "<2>"}
    assert Placeholders(set())({"at": datetime(2026, 1, 1), "token_hash": "ab"}) == {"at": "<time>",
                                                                                    "token_hash": "<hash>"}
