"""Flows driven by the upstream SDK (PyPI `tidebase` 0.7.0), run in a subprocess whose PYTHONPATH holds only the
SDK: `python flows.py <scenario> <server url> [args...]`. Prints one JSON document (the scenario's observations).
"""
from __future__ import annotations

import json
import os
import sys
import time

import tidebase
from tidebase import RunCancelled, Tidebase

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


def log_to(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")


@scenario
def crash(tide, run_id, logfile):
    """Runs steps a and b, then dies (no complete, no fail) inside step c."""

    def wf(run, input):
        run.step("a", lambda: (log_to(logfile, "a"), input["n"] + 1)[1])
        run.step("b", lambda: (log_to(logfile, "b"), "B")[1])
        run.step("c", lambda: os._exit(3))

    tide.run("crashy", wf, run_id=run_id)


@scenario
def resume(tide, run_id, logfile):
    def wf(run, input):
        a = run.step("a", lambda: (log_to(logfile, "a"), -1)[1])
        b = run.step("b", lambda: (log_to(logfile, "b"), "X")[1])
        c = run.step("c", lambda: (log_to(logfile, "c"), "C")[1])
        return {"a": a, "b": b, "c": c}

    return {"result": tide.run("crashy", wf, run_id=run_id)}


@scenario
def create(tide, workflow, input_json):
    return tide.runs.create(workflow, input=json.loads(input_json))


@scenario
def retries(tide):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError(f"flaky {len(calls)}")
        return "ok"

    def wf(run, input):
        return run.step("flaky", flaky, retries=2)

    result = tide.run("retry-wf", wf)
    return {"result": result, "calls": len(calls)}


@scenario
def mismatch(tide, run_id, value):
    def wf(run, input):
        return run.step("s", lambda: int(value), input={"v": int(value)})

    try:
        return {"result": tide.run("mm", wf, run_id=run_id)}
    except ValueError as exc:
        return {"error": "ValueError", "message": str(exc)}


@scenario
def gate(tide, run_id):
    def wf(run, input):
        decision = run.gate("approve", "ship it?", data={"x": 1}, poll_s=0.1)
        return {"approved": decision.approved, "decision": decision.decision, "actor": decision.actor,
                "payload": decision.payload}

    return {"result": tide.run("gated", wf, run_id=run_id)}


@scenario
def children(tide):
    def child_wf(run, input):
        return run.step("double", lambda: input["n"] * 2, input=input)

    def wf(run, input):
        one = run.child("child-wf", child_wf, name="first", input={"n": 1})
        again = run.child("child-wf", child_wf, name="first", input={"n": 1})
        fan = run.fanout("fan", [{"name": f"f{i}", "workflow": child_wf, "workflow_name": "child-wf",
                                  "input": {"n": i}} for i in range(4)])
        return {"one": one, "again": again, "fan": fan, "run_id": run.run_id}

    return tide.run("parent-wf", wf)


@scenario
def state(tide):
    out = {}

    def wf(run, input):
        out["set"] = run.state.set({"a": 1})
        out["patch"] = run.state.patch({"b": 2})
        out["save"] = run.state.save("milestone-1")
        out["versions"] = run.state.versions()
        out["labeled"] = run.state.versions(labeled=True)
        out["snapshot"] = run.snapshots.create("snap", state={"s": 1})
        out["snapshots"] = run.snapshots.list()
        out["usage"] = run.usage.record(provider="openai", model="m", input_tokens=100, output_tokens=50)
        out["usage_explicit"] = run.usage.record(input_tokens=1, output_tokens=1, total_tokens=7)
        out["run_id"] = run.run_id
        return "done"

    out["result"] = tide.run("state-wf", wf)
    return out


@scenario
def cancel(tide, run_id, flagfile):
    def wf(run, input):
        run.step("first", lambda: 1)
        while not os.path.exists(flagfile):
            time.sleep(0.05)
        run.step("second", lambda: 2)
        return "unreachable"

    try:
        tide.run("cancel-wf", wf, run_id=run_id)
    except RunCancelled as exc:
        return {"raised": "RunCancelled", "message": str(exc)}
    return {"raised": None}


@scenario
def session(tide, hold_s):
    lost = []
    sess = tide.runs.attach("session-wf", input={"k": 1}, heartbeat_s=0.2, on_lease_lost=lost.append)
    sess.step("one", lambda: 1)
    time.sleep(float(hold_s))  # longer than the lease: only the heartbeats keep it
    two = sess.step("two", lambda: 2)
    done = sess.complete({"two": two})
    try:
        sess.heartbeat()
        after = "200"
    except tidebase.TidebaseError as exc:
        after = exc.status
    sess.close()
    return {"status": done["run"]["status"], "lost": [repr(e) for e in lost], "heartbeat_after_complete": after,
            "run_id": sess.run_id}


@scenario
def subscribe(tide, run_id, count, after="0"):
    got = []
    for event in tide.runs.subscribe(run_id, after=int(after)):
        got.append(event)
        if len(got) >= int(count):
            break
    return {"events": got}


@scenario
def queue(tide):
    """Enqueue (twice with one dedupe key), configure the queue, then a pull worker runs the run without begin."""

    @tide.workflow("answer")
    def answer(run, input):
        return run.step("add", lambda: input["n"] + 1)

    first = tide.enqueue("answer", queue="q1", input={"n": 41}, dedupe_key="k")
    again = tide.enqueue("answer", queue="q1", input={"n": 41}, dedupe_key="k")
    config = tide.queues.configure("q1", concurrency=2, rate_per_minute=100)
    run_id = first["run"]["id"]
    deadline = time.time() + 30
    tide.work(["q1"], poll_s=0.05, stop=lambda: tide.runs.get(run_id)["run"]["status"] == "completed"
              or time.time() > deadline)
    done = tide.runs.get(run_id)["run"]
    return {"deduplicated": [first["deduplicated"], again["deduplicated"]], "same": again["run"]["id"] == run_id,
            "config": config, "status": done["status"], "result": done["result"], "attempt": done["attempt"],
            "queues": tide.queues.list()}


@scenario
def schedules(tide):
    made = tide.schedules.set("nightly", cron="0 3 * * *", workflow_name="digest", input={"x": 1}, max_attempts=2)
    listed = tide.schedules.list()
    deleted = tide.schedules.delete("nightly")
    try:
        tide.schedules.delete("nightly")
        again = None
    except Exception as exc:
        again = str(exc)
    try:
        tide.schedules.set("bad", cron="61 * * * *", workflow_name="digest")
        bad = None
    except Exception as exc:
        bad = str(exc)
    return {"made": made, "listed": listed, "deleted": deleted, "again": again, "bad": bad}


@scenario
def verify(tide, body_file, header, secret):
    """The upstream receiver-side check of a delivered body's signature."""
    with open(body_file, "rb") as f:
        return {"valid": tidebase.verify_webhook_signature(f.read(), header, secret)}


@scenario
def finish(tide, run_id):
    """What a recovery-webhook receiver does: run the workflow again under the run's id, to completion."""
    return {"result": tide.run("healing", lambda run, input: run.step("heal", lambda: "healed"), run_id=run_id)}


@scenario
def which(tide):
    return {"file": tidebase.__file__}


if __name__ == "__main__":
    name, url, *rest = sys.argv[1:]
    client = Tidebase(url=url, api_key=os.environ.get("TB_TEST_API_KEY"))
    print(json.dumps(SCENARIOS[name](client, *rest)), flush=True)
