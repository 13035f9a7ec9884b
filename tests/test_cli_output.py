"""What the `tidebase` command prints, through the real command: local times with their offset and durations, colour
on a terminal only, pretty unescaped JSON, `runs show` of a failed run, `runs skip-step`, `runs ls` filters and
paging, and one spelling of "cancelled"."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from tidebase import ManualReviewRequired, RunSuspended, Tidebase
from tidebase.cli.main import main

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Crash(BaseException):
    """Stands for a process dying mid-step: not an Exception, so no failure is recorded for the step."""


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m tidebase ARGV` as a real process with its output piped."""
    return subprocess.run([sys.executable, "-m", "tidebase", *argv], capture_output=True, text=True, timeout=60,
                          check=False, env=_env(env))


def cli_in_terminal(*argv: str, env: dict[str, str] | None = None) -> str:
    """`python -m tidebase ARGV` as a real process whose stdout and stderr are a pseudo-terminal (200 columns
    unless `env` sets COLUMNS)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tidebase", *argv], stdin=slave, stdout=slave, stderr=slave,
                            env=_env({"COLUMNS": "200", "LINES": "50", "TERM": "xterm-256color", **(env or {})}))
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while select.select([master], [], [], 60)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        proc.wait(timeout=60)
    assert proc.returncode == 0, b"".join(chunks)
    return b"".join(chunks).decode()


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TZ", "COLUMNS")}
    return {**env, **(extra or {})}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`tidebase ARGV` in this process (output captured, so never a terminal): exit code, stdout, stderr."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_times_are_local_with_their_offset_and_durations_are_human(dsn: str, db: psycopg.Connection[Any]) -> None:
    """In TZ=Asia/Kolkata, `runs ls` and `runs show` print times with +05:30 (and +00:00 with --utc), how long a
    queued run has waited and how long a finished run ran; --json datetimes are ISO 8601 with the offset."""
    tide = Tidebase(dsn)
    tide.run("quick", lambda run, input: run.step("one", lambda: 1), run_id="t-done")
    tide.enqueue("later", run_id="t-queued")
    tide.close()
    db.execute("UPDATE tidebase.runs SET created_at = '2026-12-07 14:00:00+00', started_at = '2026-12-07 14:00:00+00',"
               " completed_at = '2026-12-07 14:03:05+00' WHERE id = 't-done'")
    db.execute("UPDATE tidebase.runs SET available_at = now() - interval '2 hours 1 minute 30 seconds' "
               "WHERE id = 't-queued'")
    kolkata = {"TZ": "Asia/Kolkata"}
    result = cli("runs", "ls", "--dsn", dsn, env=kolkata)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "WORKFLOW", "STATUS", "ATTEMPT", "CREATED", "UPDATED", "DURATION"]
    done = next(r for r in rows if r.startswith("t-done"))
    queued = next(r for r in rows if r.startswith("t-queued"))
    assert "2026-12-07 19:30:00 +05:30" in done and done.endswith("3 m 05 s")
    assert queued.endswith("waiting 2 h 01 m")
    shown = cli("runs", "show", "t-queued", "--dsn", dsn, env=kolkata).stdout
    assert re.search(r"^waiting: +2 h 01 m, since \S+ \S+ \+05:30$", shown, re.MULTILINE), shown
    utc = cli("runs", "ls", "--dsn", dsn, "--utc", env=kolkata).stdout
    assert "2026-12-07 14:00:00 +00:00" in utc and "+05:30" not in utc
    shown = cli("runs", "show", "t-done", "--dsn", dsn, env=kolkata).stdout
    assert re.search(r"^created: +2026-12-07 19:30:00 \+05:30 \(.+ ago\)$", shown, re.MULTILINE), shown
    assert re.search(r"^duration: +3 m 05 s$", shown, re.MULTILINE), shown
    db.execute("UPDATE tidebase.runs SET status = 'running', lease_owner = 'worker:elsewhere', "
               "lease_expires_at = now() + interval '1 hour 30 seconds' WHERE id = 't-queued'")
    shown = cli("runs", "show", "t-queued", "--dsn", dsn, env=kolkata).stdout
    assert re.search(r"^queue: +default$", shown, re.MULTILINE), shown
    assert re.search(r"^lease owner: +worker:elsewhere, expires \S+ \S+ \+05:30 \(in 1 h 00 m\)$", shown,
                     re.MULTILINE), shown
    doc = json.loads(cli("runs", "show", "t-done", "--dsn", dsn, "--json", env=kolkata).stdout)
    created = datetime.fromisoformat(doc["run"]["created_at"])
    assert created.utcoffset() == timedelta(hours=5, minutes=30)
    assert created == datetime.fromisoformat("2026-12-07T14:00:00+00:00")


def test_colour_on_a_terminal_only(dsn: str) -> None:
    """On a pseudo-terminal `runs ls` colours the status (and still prints the word), also on a terminal too narrow
    for the table, where the id and the status stay whole; piped, or with NO_COLOR=1 on a terminal, it prints no
    escape sequence at all."""
    run_id = "c-" + "0123456789abcdef" * 2
    tide = Tidebase(dsn)
    tide.run("quick", lambda run, input: 1, run_id=run_id)
    tide.close()
    terminal = cli_in_terminal("runs", "ls", "--dsn", dsn)
    assert "\x1b[32mcompleted" in terminal  # green status word
    assert "completed" in ANSI.sub("", terminal) and run_id in terminal
    narrow = ANSI.sub("", cli_in_terminal("runs", "ls", "--dsn", dsn, env={"COLUMNS": "60"}))
    assert run_id in narrow and "completed" in narrow and "…" not in narrow
    piped = cli("runs", "ls", "--dsn", dsn)
    assert piped.returncode == 0 and run_id in piped.stdout and "\x1b" not in piped.stdout
    no_color = cli_in_terminal("runs", "ls", "--dsn", dsn, env={"NO_COLOR": "1"})
    assert run_id in no_color and "completed" in no_color and "\x1b" not in no_color


def test_json_is_pretty_and_unescaped(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json` documents are indented and keep non-ASCII text as it is (… and ï, not \\u escapes), and table
    cells show JSON payloads unescaped too."""
    tide = Tidebase(dsn)
    tide.run("words", lambda run, input: run.step("say", lambda: "naïve…"), run_id="j-1", input={"q": "déjà vu…"})
    tide.close()
    code, out, _ = run_cli(capsys, "runs", "show", "j-1", "--dsn", dsn, "--json")
    assert code == 0 and "\\u" not in out
    assert '\n  "run": {\n    "id": "j-1",' in out and '"q": "déjà vu…"' in out
    assert json.loads(out)["run"]["result"] == "naïve…"
    code, out, _ = run_cli(capsys, "runs", "events", "j-1", "--dsn", dsn, "--json")
    assert code == 0 and "\\u" not in out and out.startswith("[\n  {\n")
    assert '"déjà vu…"' in out
    code, out, _ = run_cli(capsys, "runs", "events", "j-1", "--dsn", dsn)
    assert '{"input": {"q": "déjà vu…"}' in out


def _deep(n: int) -> None:
    if n == 0:
        raise ValueError("quota exceeded … try later")
    _deep(n - 1)


def test_show_a_failed_run_with_its_error_children_and_gates(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`runs show` of a failed run prints the error's type, message and the last 10 lines of its traceback, the
    run's children with their status and its gates with status, decision and actor, and --json carries the same
    without any resolve token."""
    tide = Tidebase(dsn)

    def parent(run: Any, input: Any) -> Any:
        run.child("helper-wf", lambda r, i: r.step("k", lambda: i["n"] * 2), name="helper", input={"n": 21})
        if run.gate("approve", "ship it?", suspend=True).approved:
            _deep(6)

    with pytest.raises(RunSuspended):
        tide.run("parent", parent, run_id="f-1")
    (gate,) = tide.gates.list(run_id="f-1")
    tide.gates.resolve(gate.id, "approved", actor="ann")
    with pytest.raises(ValueError, match="quota"):
        tide.run("parent", parent, run_id="f-1")
    child_id = tide.runs.get("f-1").children[0].child_run_id
    code, out, _ = run_cli(capsys, "runs", "show", "f-1", "--dsn", dsn)
    assert code == 0
    assert re.search(r"^status: +failed$", out, re.MULTILINE)
    assert re.search(r"^type: +builtins\.ValueError$", out, re.MULTILINE)
    assert re.search(r"^message: +quota exceeded … try later$", out, re.MULTILINE)
    trace = out.split("traceback (last 10 of ", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(trace) == 11 and trace[-1].strip() == "ValueError: quota exceeded … try later"
    assert "Traceback (most recent call last)" not in out  # only the tail is shown
    children = out.split("\nchildren\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert children[0].split() == ["NAME", "TYPE", "RUN", "WORKFLOW", "STATUS"]
    assert children[1].split() == ["helper", "child", child_id, "helper-wf", "completed"]
    gates = out.split("\ngates\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert gates[0].split() == ["ID", "NAME", "STATUS", "DECISION", "ACTOR", "CREATED", "RESOLVED"]
    assert gates[1].split()[:5] == [gate.id, "approve", "approved", "approved", "ann"]
    code, out, _ = run_cli(capsys, "runs", "show", "f-1", "--dsn", dsn, "--json")
    doc = json.loads(out)
    assert doc["run"]["error"]["type"] == "builtins.ValueError"
    assert [(c["name"], c["run_id"], c["status"]) for c in doc["children"]] == [("helper", child_id, "completed")]
    assert [(g["name"], g["decision"], g["actor"]) for g in doc["gates"]] == [("approve", "approved", "ann")]
    assert all("token" not in g for g in doc["gates"])
    tide.close()


def test_skip_step_completes_a_parked_step(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A side-effecting step without an idempotency key interrupted mid-flight parks the run; `runs show` says how
    to release or skip it, and `runs skip-step --output` completes it so that the resumed run replays that output
    without calling the step again."""
    tide = Tidebase(dsn)
    calls: list[str] = []

    def charge() -> str:
        calls.append("charge")
        if len(calls) == 1:
            raise Crash
        return "charged twice"

    def pay(run: Any, input: Any) -> Any:
        return run.step("charge", charge, side_effects=["payments.charge"])

    with pytest.raises(Crash):
        tide.run("pay", pay, run_id="p-1")
    with pytest.raises(ManualReviewRequired, match="release or skip"):
        tide.run("pay", pay, run_id="p-1")
    code, out, _ = run_cli(capsys, "runs", "show", "p-1", "--dsn", dsn)
    assert "manual_review" in out and "tidebase runs skip-step p-1 charge --output JSON" in out
    code, out, _ = run_cli(capsys, "runs", "skip-step", "p-1", "charge", "--output", '{"charge": "ch_1"}',
                           "--actor", "ops", "--reason", "verified in the dashboard", "--dsn", dsn)
    assert code == 0
    assert 'step charge of run p-1 skipped: completed with output {"charge": "ch_1"}' in out
    assert "run p-1 is pending" in out
    code, _, err = run_cli(capsys, "runs", "skip-step", "p-1", "charge", "--dsn", dsn)
    assert code == 2 and "is not parked for review" in err  # skipped once only
    assert tide.run("pay", pay, run_id="p-1") == {"charge": "ch_1"}
    assert calls == ["charge"]  # never charged again
    reviewed = [e.payload for e in tide.runs.events("p-1") if e.type == "step.reviewed"]
    assert [(r["action"], r["actor"], r["reason"]) for r in reviewed] == [("skip", "ops", "verified in the dashboard")]
    with pytest.raises(SystemExit):
        main(["runs", "skip-step", "p-1", "charge", "--output", "{not json", "--dsn", dsn])
    assert "not valid JSON" in capsys.readouterr().err
    tide.close()


def test_ls_filters_by_workflow_and_since_and_pages_with_the_cursor(
    dsn: str, db: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """`runs ls --workflow` keeps one workflow, `--since` a duration (or an ISO time) keeps the newer runs, and
    following the printed `more: --cursor ...` visits every run once, newest first."""
    tide = Tidebase(dsn)
    for i in range(7):
        tide.run("even" if i % 2 == 0 else "odd", lambda run, input: None, run_id=f"l-{i}")
    tide.close()
    db.execute("UPDATE tidebase.runs SET created_at = now() - substr(id, 3)::int * interval '1 hour'")

    def ids(out: str) -> list[str]:
        return [line.split()[0] for line in out.splitlines()[1:] if not line.startswith("more:")]

    seen: list[str] = []
    argv = ["runs", "ls", "--dsn", dsn, "--limit", "3"]
    pages = 0
    while True:
        code, out, _ = run_cli(capsys, *argv)
        assert code == 0
        seen += ids(out)
        pages += 1
        more = [line for line in out.splitlines() if line.startswith("more: --cursor ")]
        if not more:
            break
        argv = ["runs", "ls", "--dsn", dsn, "--limit", "3", "--cursor", more[0].split()[-1]]
    assert (pages, seen) == (3, [f"l-{i}" for i in range(7)])
    assert ids(run_cli(capsys, "runs", "ls", "--dsn", dsn, "--workflow", "odd")[1]) == ["l-1", "l-3", "l-5"]
    assert ids(run_cli(capsys, "runs", "ls", "--dsn", dsn, "--since", "150m")[1]) == ["l-0", "l-1", "l-2"]
    since = (datetime.now().astimezone() - timedelta(hours=4, minutes=30)).isoformat()
    code, out, _ = run_cli(capsys, "runs", "ls", "--dsn", dsn, "--since", since, "--workflow", "even",
                           "--status", "completed", "--json")
    assert [r["id"] for r in json.loads(out)["runs"]] == ["l-0", "l-2", "l-4"]
    with pytest.raises(SystemExit):
        main(["runs", "ls", "--dsn", dsn, "--since", "yesterday-ish"])
    assert "expected a duration such as 10m, 2h or 3d" in capsys.readouterr().err


def test_cancelled_is_spelled_one_way_everywhere(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A gate cancelled with its run (stored `canceled`, the wire spelling) is printed `cancelled` by runs cancel,
    runs show, runs events, gates ls (which accepts either spelling) and the refusal to approve it, tables and JSON
    alike; the stored value is unchanged."""
    tide = Tidebase(dsn)
    with pytest.raises(RunSuspended):
        tide.run("review", lambda run, input: run.gate("approve", "ok?", suspend=True), run_id="x-1")
    (gate,) = tide.gates.list(run_id="x-1")
    outputs = [run_cli(capsys, "runs", "cancel", "x-1", "--dsn", dsn, "--reason", "not needed", "--actor", "ops")]
    assert outputs[0][1].startswith("run x-1 is cancelled")
    for argv in (["runs", "show", "x-1"], ["runs", "show", "x-1", "--json"], ["runs", "events", "x-1"],
                 ["runs", "events", "x-1", "--json"], ["runs", "tail", "x-1"], ["runs", "tail", "x-1", "--json"],
                 ["gates", "ls", "--status", "cancelled"], ["gates", "ls", "--status", "canceled", "--json"],
                 ["gates", "ls", "--run", "x-1", "--status", "cancelled", "--json"]):
        outputs.append(run_cli(capsys, *argv, "--dsn", dsn))
        assert outputs[-1][0] == 0, (argv, outputs[-1])
    outputs.append(run_cli(capsys, "gates", "approve", gate.id, "--dsn", dsn))
    assert outputs[-1][0] == 2
    assert outputs[-1][2] == f"tidebase: gate {gate.id} is already resolved: cancelled by ops\n"
    printed = "".join(out + err for _, out, err in outputs)
    assert "canceled" not in printed
    assert printed.count("cancelled") >= 12
    assert re.search(rf"{gate.id} +approve +cancelled +cancelled +ops", outputs[1][1])  # runs show's gates table
    assert [g["status"] for g in json.loads(outputs[8][1])] == ["cancelled"]
    assert tide.gates.get(gate.id).status == "canceled"  # stored as the wire API spells it
    tide.close()
