"""The operators' CLI: `tidebase worker`, `runs ls|show|events|cancel|recover|release-step|tail` and
`gates ls|approve|reject`, as tables and as `--json`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fix_probe import wait_until
from tidebase import Tidebase
from tidebase.cli.main import main
from tidebase.core.rules import LIST_START
from tidebase.sql import load_queries


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_runs_commands_print_tables_and_json(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """ls/show/events print aligned tables, and --json prints documents a script can parse; cancel and recover
    change the run as the library would."""
    tide = Tidebase(dsn)
    tide.run("hello", lambda run, input: run.step("greet", lambda: "hi"), run_id="r-ok")
    queued = tide.enqueue("later", run_id="r-q")
    code, out = _run(capsys, "runs", "ls", "--dsn", dsn)
    assert code == 0
    header, *lines = out.splitlines()
    # DURATION (how long a run has waited or ran) was appended; the earlier columns keep their names and order.
    assert header.split() == ["ID", "WORKFLOW", "STATUS", "ATTEMPT", "CREATED", "UPDATED", "DURATION"]
    assert {line.split()[0] for line in lines} == {"r-ok", "r-q"}
    code, out = _run(capsys, "runs", "ls", "--dsn", dsn, "--json", "--status", "completed")
    assert [r["id"] for r in json.loads(out)["runs"]] == ["r-ok"]
    code, out = _run(capsys, "runs", "show", "r-ok", "--dsn", dsn)
    assert "status:" in out and "completed" in out and "greet" in out
    code, out = _run(capsys, "runs", "show", "r-ok", "--dsn", dsn, "--json")
    assert json.loads(out)["run"]["steps"][0]["output"] == "hi"
    code, out = _run(capsys, "runs", "events", "r-ok", "--dsn", dsn, "--json")
    assert [e["type"] for e in json.loads(out)][-1] == "run.completed"
    code, out = _run(capsys, "runs", "events", "r-ok", "--dsn", dsn)
    assert out.splitlines()[0].split() == ["SEQ", "AT", "TYPE", "PAYLOAD"]
    code, out = _run(capsys, "runs", "cancel", queued.id, "--dsn", dsn, "--reason", "not needed", "--json")
    assert json.loads(out)["status"] == "cancelled" and json.loads(out)["cancel_reason"] == "not needed"
    code = main(["runs", "recover", queued.id, "--dsn", dsn])
    err = capsys.readouterr().err
    assert code == 2 and "is cancelled and cannot be recovered" in err  # cancellation is one-way
    code = main(["runs", "show", "nope", "--dsn", dsn])
    assert code == 2 and "not found" in capsys.readouterr().err
    tide.close()


def test_recover_and_release_step(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`runs recover` puts a failed run back on a queue with a recorded recovery; `runs release-step` releases a
    parked step."""
    tide = Tidebase(dsn)
    with pytest.raises(RuntimeError):
        tide.run("boom", lambda run, input: (_ for _ in ()).throw(RuntimeError("x")), run_id="r-f")
    code, out = _run(capsys, "runs", "recover", "r-f", "--dsn", dsn, "--json", "--actor", "ops")
    assert code == 0 and (json.loads(out)["id"], json.loads(out)["status"]) == ("r-f", "queued")
    run = tide.runs.get("r-f")
    assert run.status == "queued"
    assert [(r["reason"], r["detected_by"]) for r in tide.runs.recoveries("r-f")] == [("operator", "ops")]
    code = main(["runs", "release-step", "r-f", "nostep", "--dsn", dsn])
    assert code == 2
    tide.close()


def test_gates_ls_approve_reject(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`gates ls` lists pending gates; approve and reject decide them once, recording the actor and payload."""
    tide = Tidebase(dsn)
    for run_id in ("r-g1", "r-g2"):
        with pytest.raises(Exception, match="suspended"):
            tide.run("g", lambda run, input: run.gate("ok", "ship it?", suspend=True), run_id=run_id)
    code, out = _run(capsys, "gates", "ls", "--dsn", dsn)
    assert out.splitlines()[0].split()[:4] == ["ID", "RUN", "NAME", "STATUS"]
    gates = json.loads(_run(capsys, "gates", "ls", "--dsn", dsn, "--json")[1])
    assert sorted(g["run_id"] for g in gates) == ["r-g1", "r-g2"]
    by_run = {g["run_id"]: g["id"] for g in gates}
    code, out = _run(capsys, "gates", "approve", by_run["r-g1"], "--dsn", dsn, "--actor", "ann", "--payload",
                     '{"note": "fine"}')
    assert code == 0 and "approved" in out
    code, out = _run(capsys, "gates", "reject", by_run["r-g2"], "--dsn", dsn, "--json")
    assert json.loads(out)["decision"] == "rejected"
    assert json.loads(_run(capsys, "gates", "ls", "--dsn", dsn, "--json")[1]) == []
    code = main(["gates", "approve", by_run["r-g2"], "--dsn", dsn])
    assert code == 2  # already resolved
    tide.close()


def test_runs_tail_follows_state_and_events_until_the_run_ends(
    dsn: str, db: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """`runs tail` prints the state, then each event as it is appended, and returns when the run ends."""
    tide = Tidebase(dsn)
    go = threading.Event()

    def wf(run: Any, input: Any) -> Any:
        run.step("one", lambda: 1)
        go.wait(30)
        return run.step("two", lambda: 2)

    thread = threading.Thread(target=lambda: tide.run("tailme", wf, run_id="r-t"))
    thread.start()
    lines: list[str] = []
    seen: list[str] = []
    try:
        wait_until(lambda: db.execute("SELECT count(*) FROM tidebase.steps WHERE run_id = 'r-t'").fetchone() == (1,),
                   "step one")
        tail = threading.Thread(target=lambda: lines.append(str(main(
            ["runs", "tail", "r-t", "--dsn", dsn, "--json", "--interval", "0.05", "--timeout", "30"]))))
        tail.start()
        wait_until(lambda: _read_until(capsys, seen, '"status": "running"'), "tail to print the running state")
    finally:
        go.set()
        thread.join(30)
    tail.join(30)
    out = "".join(seen) + capsys.readouterr().out
    docs = [json.loads(line) for line in out.splitlines()]
    assert docs[0]["state"]["status"] == "running"
    types = [d["event"]["type"] for d in docs if "event" in d]
    assert types[0] == "run.created" and types[-1] == "run.completed" and "step.completed" in types
    assert [d["state"]["status"] for d in docs if "state" in d][-1] == "completed"
    assert lines == ["0"]
    tide.close()


def _read_until(capsys: pytest.CaptureFixture[str], seen: list[str], text: str) -> bool:
    seen.append(capsys.readouterr().out)
    return text in "".join(seen)


def test_worker_command_runs_the_app(dsn: str, tmp_path: Path) -> None:
    """`tidebase worker app:tide --burst` imports the app, executes its queued runs and exits 0."""
    (tmp_path / "myapp.py").write_text(textwrap.dedent(f"""
        from tidebase import Tidebase
        tide = Tidebase({dsn!r}, lease_seconds=1)

        @tide.workflow("sum")
        def total(run, input):
            return run.step("add", lambda: sum(input["xs"]))
    """))
    tide = Tidebase(dsn)
    runs = [tide.enqueue("sum", input={"xs": [1, 2, i]}, queue="math") for i in range(3)]
    proc = subprocess.run([sys.executable, "-m", "tidebase", "worker", "myapp:tide", "--queues", "math,other",
                           "--concurrency", "2", "--burst", "--poll-interval", "0.05"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert "executing 3 run(s)" in proc.stdout
    assert [tide.runs.get(r.id).result for r in runs] == [3, 4, 5]
    bad = subprocess.run([sys.executable, "-m", "tidebase", "worker", "nomodule:tide"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "cannot load" in bad.stderr
    tide.close()


APP = """
from tidebase import Tidebase
tide = Tidebase({dsn!r}, lease_seconds=5)

@tide.workflow("sum")
def total(run, input):
    return run.step("add", lambda: sum(input["xs"]))

@tide.workflow("flaky")
def flaky(run, input):
    def call():
        raise RuntimeError("upstream said 503 …")
    return run.step("call", call)
"""

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \+05:30"  # TZ=Asia/Kolkata in the worker's environment


def _app(tmp_path: Path, dsn: str) -> dict[str, str]:
    """Writes the worker app module and returns the environment a worker process needs to import it."""
    (tmp_path / "logapp.py").write_text(APP.format(dsn=dsn))
    env = {k: v for k, v in os.environ.items() if k != "TZ"}
    return {**env, "PYTHONPATH": str(tmp_path), "TZ": "Asia/Kolkata"}


def _worker(tmp_path: Path, env: dict[str, str], *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tidebase", "worker", "logapp:tide", "--burst",
                           "--poll-interval", "0.05", "--reconcile-interval", "0.1", *options],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False, env=env)


def test_worker_logs_each_claim_completion_failure_and_recovery(
    dsn: str, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """At the default INFO level `tidebase worker` prints on stderr, with local times and their offset, one line per
    run claimed (attempt, queue), completed (duration), failed (error type and message, retried or not), and
    recovered by the reconciler after its holder's lease expired."""
    env = _app(tmp_path, dsn)
    tide = Tidebase(dsn)
    ok = tide.enqueue("sum", input={"xs": [1, 2]}, run_id="w-ok")
    tide.enqueue("flaky", run_id="w-flaky", max_attempts=2, retry_backoff=0)
    tide.enqueue("sum", input={"xs": [5]}, run_id="w-crashed")
    # a holder that died while running w-crashed: its lease expired a minute ago
    db.execute("UPDATE tidebase.runs SET status = 'running', lease_owner = 'gone-worker', attempt = 1, "
               "fencing_token = 1, lease_expires_at = now() - interval '1 minute' WHERE id = 'w-crashed'")
    proc = _worker(tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    assert "worker stopped after executing 4 run(s)" in proc.stdout
    log = proc.stderr
    assert re.search(rf"^{STAMP} INFO +tidebase.worker: run w-ok claimed: workflow sum, attempt 1, queue default$",
                     log, re.MULTILINE), log
    assert re.search(rf"^{STAMP} INFO +tidebase.worker: run w-ok completed in \d+(\.\d)? m?s \(workflow sum, "
                     r"attempt 1\)$", log, re.MULTILINE), log
    assert re.search(r"WARNING +tidebase.worker: run w-flaky failed after \d+(\.\d)? m?s \(attempt 1 of 2\): "
                     r"RuntimeError: upstream said 503 …; it will be retried in 0 ms$", log, re.MULTILINE), log
    assert re.search(r"ERROR +tidebase.worker: run w-flaky failed after \d+(\.\d)? m?s \(attempt 2 of 2\): "
                     r"RuntimeError: upstream said 503 …; not retried, the run is failed \(max_retries\)$",
                     log, re.MULTILINE), log
    assert re.search(r"INFO +tidebase.reconciler: run w-crashed: lease of gone-worker expired; requeued", log), log
    assert "run w-crashed claimed: workflow sum, attempt 2, queue default" in log
    claims = re.findall(r"run (\S+) claimed: workflow \S+, attempt (\d)", log)
    assert sorted(claims) == [("w-crashed", "2"), ("w-flaky", "1"), ("w-flaky", "2"), ("w-ok", "1")]
    assert len(re.findall(r"run w-ok completed", log)) == 1 and len(re.findall(r"run w-crashed completed", log)) == 1
    assert tide.runs.get(ok.id).result == 3
    tide.close()


def test_worker_log_format_json_prints_one_object_per_line(dsn: str, tmp_path: Path) -> None:
    """With `--log-format json` every stderr line is one JSON object with time (ISO 8601 with offset), level,
    logger and message, and the run lines carry run_id, workflow, attempt, queue and duration_ms as fields."""
    env = _app(tmp_path, dsn)
    tide = Tidebase(dsn)
    tide.enqueue("sum", input={"xs": [2, 2]}, run_id="j-ok", queue="math")
    tide.enqueue("flaky", run_id="j-bad", queue="math")
    tide.close()
    proc = _worker(tmp_path, env, "--queues", "math", "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stderr.splitlines()]
    assert docs and all({"time", "level", "logger", "message"} <= d.keys() for d in docs)
    assert all(datetime.fromisoformat(d["time"]).utcoffset() == timedelta(hours=5, minutes=30) for d in docs)
    by_event = {(d.get("event"), d.get("run_id")): d for d in docs}
    claimed = by_event[("run.claimed", "j-ok")]
    assert (claimed["level"], claimed["logger"], claimed["workflow"], claimed["attempt"], claimed["queue"]) == (
        "INFO", "tidebase.worker", "sum", 1, "math")
    done = by_event[("run.completed", "j-ok")]
    assert isinstance(done["duration_ms"], int) and done["message"].startswith("run j-ok completed in ")
    failed = by_event[("run.failed", "j-bad")]
    assert (failed["level"], failed["error_type"], failed["error"], failed["retry"], failed["outcome"]) == (
        "ERROR", "RuntimeError", "upstream said 503 …", False, "failed")


def test_worker_warns_once_per_unregistered_workflow(dsn: str, tmp_path: Path) -> None:
    """Due runs of workflows the worker does not register make it warn once per workflow name, naming the queues
    and how to fix it, however many checks follow; a name that appears later gets its own single warning. With
    --log-level warning the INFO lines are not printed."""
    env = _app(tmp_path, dsn)
    tide = Tidebase(dsn)
    for queue in ("default", "other", "default"):
        tide.enqueue("ghost", queue=queue)
    tide.enqueue("phantom", queue="other")
    tide.enqueue("unwatched", queue="elsewhere")  # not a queue of this worker: none of its business
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "tidebase", "worker", "logapp:tide", "--queues",
                                 "default,other", "--poll-interval", "0.05", "--reconcile-interval", "0.1",
                                 "--log-level", "warning"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log_file, env=env)
    try:
        wait_until(lambda: "workflow phantom" in log_path.read_text() and "workflow ghost" in log_path.read_text(),
                   "the first warnings")
        done = tide.enqueue("sum", input={"xs": [1]})
        wait_until(lambda: tide.runs.get(done.id).status == "completed", "the registered run to complete")
        tide.enqueue("late-comer")
        # this warning comes from a later check, which saw the ghost and phantom runs again and stayed silent
        wait_until(lambda: "workflow late-comer" in log_path.read_text(), "the warning about a later workflow")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    log = log_path.read_text()
    assert proc.returncode == 0, log
    assert log.count("WARNING tidebase.worker: run(s) of workflow ghost are queued") == 1
    assert ("run(s) of workflow ghost are queued on queue default, other but this worker does not register ghost; "
            "register it with @tide.workflow('ghost') or run a worker that does") in log
    assert log.count("run(s) of workflow phantom are queued on queue other") == 1
    assert log.count("run(s) of workflow late-comer are queued on queue default") == 1
    assert "unwatched" not in log and " INFO " not in log and "claimed" not in log
    tide.close()


def test_since_listing_and_unserved_check_are_index_served(db: psycopg.Connection[Any]) -> None:
    """On 100,000 runs, `runs.list(since=...)` (each filter combination) is a bounded range of its index and the
    worker's unregistered-workflow check reads runs_queue_due in claim order: no sequential scan of runs."""
    db.execute("""
        INSERT INTO tidebase.runs (id, workflow, status, input_hash, queue, available_at, created_at)
        SELECT 'r' || i, 'wf' || (i % 20), CASE WHEN i % 3 = 0 THEN 'queued' ELSE 'completed' END, 'h',
               'q' || (i % 4), now() - interval '1 minute', now() - i * interval '1 second'
          FROM generate_series(1, 100000) AS i""")
    db.execute("ANALYZE tidebase.runs")
    queries = load_queries()
    since = datetime.now().astimezone() - timedelta(hours=1)
    params = {"status": "queued", "workflow": "wf3", "before_at": LIST_START[0], "before_id": "", "limit": 51,
              "since": since}
    plans = {}
    for name in ("list_runs_since", "list_runs_by_status_since", "list_runs_by_workflow_since",
                 "list_runs_by_status_workflow_since"):
        plans[name] = "\n".join(r[0] for r in db.execute("EXPLAIN " + queries[name], params).fetchall())
        # the planner may sort the few rows of a short range; what matters is that `since` bounds the index range
        assert "Seq Scan" not in plans[name], plans[name]
        assert re.search(r"Index Cond: .*\(created_at >= ", plans[name]), plans[name]
    unserved = "\n".join(r[0] for r in db.execute("EXPLAIN " + queries["unserved_workflows"], {
        "queues": ["q0", "q1"], "workflows": ["wf1"], "grace_ms": 5000, "scan": 100, "limit": 20}).fetchall())
    assert "Seq Scan on runs" not in unserved and "runs_queue_due" in unserved, unserved
    assert re.search(r"Index Cond: \(\(queue = q\.queue\) AND \(available_at <= ", unserved), unserved
