"""Behaviour of the public run API against real Postgres (generated from the async source)."""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg
import pydantic
import pytest

from tidebase import InputMismatch, ManualReviewRequired, NotFound, PayloadError, RunCancelled, Tidebase


class Crash(BaseException):
    """Stands for a process dying mid-step: not an Exception, so no failure is recorded for the step."""


def count(db: psycopg.Connection[Any], sql: str, *args: Any) -> Any:
    row = db.execute(sql, args).fetchone()
    assert row is not None
    return row[0]


def test_run_creates_completes_and_returns_result(tide: Tidebase) -> None:
    """A new run executes its steps, completes, and stores its result and a generated id when none is given."""
    seen: dict[str, Any] = {}

    def wf(run: Any, input: Any) -> Any:
        seen["id"] = run.run_id
        a = run.step("a", lambda: {"n": input["n"] + 1})
        return {"total": a["n"] * 2}

    assert tide.run("calc", wf, input={"n": 1}) == {"total": 4}
    run = tide.runs.get(seen["id"])
    assert seen["id"].startswith("run_") and len(seen["id"]) == 36
    assert (run.status, run.attempt, run.result, run.input) == ("completed", 1, {"total": 4}, {"n": 1})
    assert [s.key for s in run.steps] == ["a"] and run.lease_owner is None


def test_completed_run_returns_stored_result_without_calling_workflow(tide: Tidebase) -> None:
    """Resuming a completed run returns the stored result and never calls the workflow."""
    calls = []

    def wf(run: Any, input: Any) -> Any:
        calls.append(1)
        return "first"

    assert tide.run("w", wf, run_id="done-1") == "first"
    assert tide.run("w", wf, run_id="done-1") == "first"
    assert calls == [1]


def test_resume_replays_completed_steps_and_runs_the_rest(tide: Tidebase) -> None:
    """I1: after a failure, re-invoking the run returns stored outputs for completed steps and runs only the rest."""
    executed: list[str] = []
    fail = [True]

    def wf(run: Any, input: Any) -> Any:
        a = run.step("plan", lambda: executed.append("plan") or {"plan": input["q"]})
        b = run.step("search", lambda: executed.append("search") or [a["plan"], "doc"], input=a)
        if fail[0]:
            fail[0] = False
            raise RuntimeError("model timeout")
        return run.step("finalize", lambda: executed.append("finalize") or b + ["final"])

    with pytest.raises(RuntimeError, match="model timeout"):
        tide.run("research", wf, run_id="r-1", input={"q": "why"})
    assert (tide.runs.get("r-1")).status == "failed"
    assert tide.run("research", wf, run_id="r-1") == ["why", "doc", "final"]
    assert executed == ["plan", "search", "finalize"]
    run = tide.runs.get("r-1")
    assert (run.status, run.attempt) == ("completed", 2)


def test_resume_without_input_uses_stored_input(tide: Tidebase) -> None:
    """With `input` omitted, a resume receives the input stored when the run was created."""
    inputs = []

    def wf(run: Any, input: Any) -> Any:
        inputs.append(input)
        if len(inputs) == 1:
            raise RuntimeError("again")
        return input["x"]

    with pytest.raises(RuntimeError):
        tide.run("w", wf, run_id="in-1", input={"x": 7})
    assert tide.run("w", wf, run_id="in-1") == 7
    assert inputs == [{"x": 7}, {"x": 7}]


def test_other_workflow_or_input_raises_input_mismatch_and_writes_nothing(
    tide: Tidebase, db: psycopg.Connection[Any]
) -> None:
    """Re-invoking a run id under another workflow name, or with other input, raises InputMismatch, writing nothing."""

    def wf(run: Any, input: Any) -> Any:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        tide.run("w", wf, run_id="m-1", input={"a": 1})
    before = count(db, "SELECT event_seq FROM tidebase.runs WHERE id = 'm-1'")
    with pytest.raises(InputMismatch, match="workflow"):
        tide.run("other", wf, run_id="m-1")
    with pytest.raises(InputMismatch, match="another input"):
        tide.run("w", wf, run_id="m-1", input={"a": 2})
    assert count(db, "SELECT event_seq FROM tidebase.runs WHERE id = 'm-1'") == before
    assert count(db, "SELECT count(*) FROM tidebase.events WHERE run_id = 'm-1'") == before
    assert (tide.runs.get("m-1")).attempt == 1


def test_workflow_exception_marks_run_failed_with_type_message_traceback(tide: Tidebase) -> None:
    """A workflow exception is re-raised and stored on the run with its type, message and traceback."""

    def wf(run: Any, input: Any) -> Any:
        raise KeyError("missing-key")

    with pytest.raises(KeyError):
        tide.run("w", wf, run_id="f-1")
    run = tide.runs.get("f-1")
    assert run.status == "failed"
    assert run.error["type"] == "builtins.KeyError"
    assert "missing-key" in run.error["message"]
    assert "Traceback" in run.error["traceback"] and "raise KeyError" in run.error["traceback"]


def test_repeated_step_names_get_occurrence_keys(tide: Tidebase) -> None:
    """A name used several times in one run is checkpointed as name, name#2, name#3, each replayed by its key."""
    calls = []
    fail = [True]

    def wf(run: Any, input: Any) -> Any:
        out = []
        for i in range(3):
            out.append(run.step("search", lambda i=i: calls.append(i) or i * 10))
        if fail[0]:
            fail[0] = False
            raise RuntimeError("crash")
        return out

    with pytest.raises(RuntimeError):
        tide.run("w", wf, run_id="o-1")
    assert tide.run("w", wf, run_id="o-1") == [0, 10, 20]
    assert calls == [0, 1, 2]
    assert [s.key for s in (tide.runs.get("o-1")).steps] == ["search", "search#2", "search#3"]


def test_step_with_other_input_hash_raises_input_mismatch(tide: Tidebase) -> None:
    """I2: a checkpoint stored for other step input is never reused: the resumed call raises InputMismatch."""

    def wf(run: Any, input: Any) -> Any:
        run.step("fetch", lambda: "page", input={"url": input["url"]})
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError):
        tide.run("w", wf, run_id="h-1", input={"url": "a"})

    def wf2(run: Any, input: Any) -> Any:
        return run.step("fetch", lambda: "other", input={"url": "b"})

    with pytest.raises(InputMismatch, match="other input"):
        tide.run("w", wf2, run_id="h-1")


def test_retries_record_every_attempt(tide: Tidebase) -> None:
    """retries=N re-runs a failing step; every failed attempt is recorded as a step.failed event."""
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError(f"attempt {len(attempts)}")
        return "ok"

    def wf(run: Any, input: Any) -> Any:
        return run.step("call", flaky, retries=2, backoff=0)

    assert tide.run("w", wf, run_id="rt-1") == "ok"
    run = tide.runs.get("rt-1")
    assert run.steps[0].attempt == 3 and run.steps[0].status == "completed"
    failed = [e.payload for e in tide.runs.events("rt-1") if e.type == "step.failed"]
    assert [(f["attempt"], f["resumeDecision"], f["error"]["message"]) for f in failed] == [
        (1, "auto_retry", "attempt 1"), (2, "auto_retry", "attempt 2")]


def test_final_failures_are_classified(tide: Tidebase) -> None:
    """A step's final failure is stored as failed_retryable (pure), failed (replay=never) or manual_review."""

    def boom() -> None:
        raise ValueError("no")

    cases = {"pure": {}, "never": {"replay": "never"}, "effect": {"side_effects": ["email.send"]}}
    statuses = {}
    for name, options in cases.items():
        def wf(run: Any, input: Any, options: Any = options) -> Any:
            return run.step("s", boom, **options)

        with pytest.raises(ValueError, match="no"):
            tide.run("w", wf, run_id=f"cls-{name}")
        run = tide.runs.get(f"cls-{name}")
        statuses[name] = (run.steps[0].status, run.steps[0].resume_decision, run.status)
    assert statuses == {
        "pure": ("failed_retryable", "safe_replay", "failed"),
        "never": ("failed", "fail_hard", "failed"),
        "effect": ("manual_review", "manual_review", "manual_review"),
    }


def test_interrupted_unkeyed_side_effect_parks_run_until_released(tide: Tidebase) -> None:
    """I8: a side-effecting step without a key that started and never completed is not re-run on resume: the run
    moves to manual_review and ManualReviewRequired is raised, until an operator releases the step."""
    sent: list[str] = []
    crash = [True]

    def send() -> str:
        sent.append("mail")
        if crash[0]:
            crash[0] = False
            raise Crash
        return "sent"

    def wf(run: Any, input: Any) -> Any:
        run.step("draft", lambda: "text")
        return run.step("send", send, side_effects=["email.send"])

    with pytest.raises(Crash):
        tide.run("mailer", wf, run_id="se-1")
    assert sent == ["mail"]
    with pytest.raises(ManualReviewRequired):
        tide.run("mailer", wf, run_id="se-1")
    assert sent == ["mail"]  # the effect did not fire twice
    run = tide.runs.get("se-1")
    assert run.status == "manual_review"
    assert {s.key: s.status for s in run.steps} == {"draft": "completed", "send": "manual_review"}
    with pytest.raises(ManualReviewRequired):  # still parked: resuming again changes nothing
        tide.run("mailer", wf, run_id="se-1")
    tide.runs.release_step("se-1", "send", actor="ops")
    assert (tide.runs.get("se-1")).status == "pending"
    assert tide.run("mailer", wf, run_id="se-1") == "sent"
    assert sent == ["mail", "mail"]


def test_parked_step_can_be_skipped_with_an_output(tide: Tidebase) -> None:
    """skip_step completes a parked step with the operator's output, which the resumed run then replays."""
    crash = [True]

    def charge() -> str:
        if crash[0]:
            crash[0] = False
            raise Crash
        return "charged-again"

    def wf(run: Any, input: Any) -> Any:
        return run.step("charge", charge, side_effects=["payments.charge"], replay="manual")

    with pytest.raises(Crash):
        tide.run("pay", wf, run_id="sk-1")
    with pytest.raises(ManualReviewRequired):
        tide.run("pay", wf, run_id="sk-1")
    tide.runs.skip_step("sk-1", "charge", {"charge": "ch_1"}, actor="ops", reason="verified in dashboard")
    assert tide.run("pay", wf, run_id="sk-1") == {"charge": "ch_1"}
    assert [e.type for e in tide.runs.events("sk-1")].count("step.reviewed") == 1


def test_interrupted_keyed_side_effect_is_rerun(tide: Tidebase) -> None:
    """I8: an interrupted side-effecting step with an idempotency key is re-run on resume (attempt + 1)."""
    calls = []

    def write() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise Crash
        return "written"

    def wf(run: Any, input: Any) -> Any:
        return run.step("write", write, side_effects=["crm.write"], idempotency_key="crm:42")

    with pytest.raises(Crash):
        tide.run("w", wf, run_id="key-1")
    assert tide.run("w", wf, run_id="key-1") == "written"
    step = (tide.runs.get("key-1")).steps[0]
    assert (step.attempt, step.contract["idempotencyKey"], len(calls)) == (2, "crm:42", 2)


def test_state_set_patch_get_versions_save(tide: Tidebase) -> None:
    """I7: every state write appends a gap-free version; patch merges; save labels without changing the value."""
    out: dict[str, Any] = {}

    def wf(run: Any, input: Any) -> Any:
        run.state.set({"status": "reviewing", "progress": 0.9})
        run.state.patch({"progress": 0.95})
        saved = run.state.save("reviewed", reason="human checked")
        out["value"] = run.state.get()
        out["versions"] = run.state.versions()
        out["saved"] = saved
        return None

    tide.run("w", wf, run_id="st-1")
    assert out["value"] == {"status": "reviewing", "progress": 0.95}
    versions = out["versions"]
    assert [v.version for v in versions] == [1, 2, 3]
    assert versions[1].patch == {"progress": 0.95} and versions[0].patch is None
    assert (versions[2].label, versions[2].reason, versions[2].value) == ("reviewed", "human checked", out["value"])
    assert out["saved"].importance == "milestone"


def test_save_without_state_raises_not_found(tide: Tidebase) -> None:
    """Labelling a stream that has no value yet raises NotFound."""

    def wf(run: Any, input: Any) -> Any:
        return run.state.save("nothing")

    with pytest.raises(NotFound):
        tide.run("w", wf, run_id="st-2")


def test_events_record_the_lifecycle_in_order(tide: Tidebase) -> None:
    """I4: every change appends an event; seqs run 1..N in commit order with types, payloads and timestamps."""

    def wf(run: Any, input: Any) -> Any:
        run.state.set({"a": 1})
        run.step("s", lambda: 1, side_effects=["x.write"], idempotency_key="k")
        run.emit("agent.note", {"text": "hi"})
        return 2

    tide.run("w", wf, run_id="ev-1")
    events = tide.runs.events("ev-1")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events] == [
        "run.created", "run.started", "state.updated", "step.started", "step.completed", "agent.note",
        "run.completed"]
    assert events[-1].payload == {"result": 2} and events[5].payload == {"text": "hi"}
    assert all(e.created_at is not None for e in events)
    assert [e.seq for e in tide.runs.events("ev-1", after=5)] == [6, 7]
    with pytest.raises(NotFound):
        tide.runs.events("nope")


def test_runs_list_is_newest_first_with_keyset_cursor(tide: Tidebase) -> None:
    """runs.list pages newest first with an opaque cursor and filters by status and workflow."""

    def ok(run: Any, input: Any) -> Any:
        return 1

    def bad(run: Any, input: Any) -> Any:
        raise RuntimeError

    for i in range(5):
        tide.run("good", ok, run_id=f"l-{i}")
    with pytest.raises(RuntimeError):
        tide.run("bad", bad, run_id="l-bad")
    page1 = tide.runs.list(limit=4)
    page2 = tide.runs.list(limit=4, cursor=page1.next_cursor)
    ids = [r.id for r in page1.runs + page2.runs]
    assert ids == ["l-bad", "l-4", "l-3", "l-2", "l-1", "l-0"] and page2.next_cursor is None
    assert [r.id for r in (tide.runs.list(status="failed")).runs] == ["l-bad"]
    assert len((tide.runs.list(workflow="good", status="completed")).runs) == 5


@dataclasses.dataclass
class Plan:
    steps: list[str]


class Answer(pydantic.BaseModel):
    text: str
    score: float


def test_dataclasses_and_pydantic_models_are_stored_as_json(tide: Tidebase) -> None:
    """Dataclass and pydantic outputs are stored as JSON and returned in that form, on first run and on replay."""

    def wf(run: Any, input: Any) -> Any:
        p = run.step("plan", lambda: Plan(["a", "b"]))
        a = run.step("answer", lambda: Answer(text="t", score=0.5))
        return [p, a]

    first = tide.run("w", wf, run_id="ser-1")
    assert first == [{"steps": ["a", "b"]}, {"text": "t", "score": 0.5}]
    assert (tide.runs.get("ser-1")).steps[1].output == {"text": "t", "score": 0.5}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (object(), "not JSON-serializable"),
        ({"text": "a\u0000b"}, r"U\+0000"),
        ("\ud800", "surrogate"),
        (float("nan"), "not JSON-serializable"),
        ("x" * 2000, "payload limit"),
    ],
)
def test_unstorable_output_raises_payload_error_and_writes_nothing(
    dsn: str, db: psycopg.Connection[Any], value: Any, message: str
) -> None:
    """A step output that cannot be stored raises PayloadError naming run and step; no checkpoint is written."""
    with Tidebase(dsn, max_payload_bytes=1024) as tide:

        def wf(run: Any, input: Any) -> Any:
            return run.step("bad", lambda: value)

        with pytest.raises(PayloadError, match=message) as info:
            tide.run("w", wf, run_id="p-1")
    assert "'bad'" in str(info.value) and "'p-1'" in str(info.value)
    assert count(db, "SELECT count(*) FROM tidebase.steps WHERE run_id = 'p-1'") == 0
    assert count(db, "SELECT count(*) FROM tidebase.events WHERE run_id = 'p-1' AND type LIKE 'step.%%'") == 0


def test_unstorable_state_raises_payload_error(tide: Tidebase, db: psycopg.Connection[Any]) -> None:
    """A state value with U+0000 raises PayloadError and writes no version."""

    def wf(run: Any, input: Any) -> Any:
        run.state.set({"k": "\u0000"})

    with pytest.raises(PayloadError):
        tide.run("w", wf, run_id="p-2")
    assert count(db, "SELECT count(*) FROM tidebase.state_versions WHERE run_id = 'p-2'") == 0


def test_cancelled_run_refuses_every_write(tide: Tidebase, db: psycopg.Connection[Any]) -> None:
    """I9: once cancelled, the run's next write raises RunCancelled, nothing more is stored, and it cannot resume."""

    def wf(run: Any, input: Any) -> Any:
        run.step("one", lambda: 1)
        tide.runs.cancel(run.run_id, reason="user abort", actor="alice")
        run.state.set({"after": "cancel"})
        return "never"

    with pytest.raises(RunCancelled):
        tide.run("w", wf, run_id="c-1")
    run = tide.runs.get("c-1")
    assert (run.status, run.cancel_reason, run.result) == ("cancelled", "user abort", None)
    assert count(db, "SELECT count(*) FROM tidebase.state_versions WHERE run_id = 'c-1'") == 0
    with pytest.raises(RunCancelled):
        tide.run("w", wf, run_id="c-1")
    assert (tide.runs.cancel("c-1", reason="again")).cancel_reason == "user abort"


def test_bad_arguments_raise_clear_errors(tide: Tidebase) -> None:
    """Invalid run ids, names, replay modes and reserved event types raise InvalidArgument before any write."""
    from tidebase import InvalidArgument

    def wf(run: Any, input: Any) -> Any:
        return None

    with pytest.raises(InvalidArgument, match="run id"):
        tide.run("w", wf, run_id="bad id with spaces")
    with pytest.raises(InvalidArgument, match="workflow name"):
        tide.run("", wf)

    def wf2(run: Any, input: Any) -> Any:
        run.step("s", lambda: 1, replay="sometimes")

    with pytest.raises(InvalidArgument, match="replay"):
        tide.run("w", wf2, run_id="ba-2")

    def wf3(run: Any, input: Any) -> Any:
        run.emit("run.completed", {})

    with pytest.raises(InvalidArgument, match="reserved"):
        tide.run("w", wf3, run_id="ba-3")
    with pytest.raises(NotFound):
        tide.runs.get("missing")
