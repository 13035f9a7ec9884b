"""The operators' CLI: `tidebase worker`, `runs ls|show|events|cancel|recover|release-step|tail` and
`gates ls|approve|reject`, as tables and as `--json`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fix_probe import wait_until
from tidebase import Tidebase
from tidebase.cli import main


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
    assert header.split() == ["ID", "WORKFLOW", "STATUS", "ATTEMPT", "CREATED", "UPDATED"]
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
    code, out = _run(capsys, "runs", "recover", queued.id, "--dsn", dsn)
    assert code == 1 and "cannot be recovered" in out  # cancellation is one-way
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
    assert code == 0 and json.loads(out) == {"run_id": "r-f", "requeued": True}
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
