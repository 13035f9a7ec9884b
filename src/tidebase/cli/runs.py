"""`tidebase runs ...`: list, show, follow and operate on runs (a thin shell over `tide.runs`).

Each command parses its arguments, calls the sync library API and prints through `tidebase.cli.output` (tables in
colour on a terminal, plain text when piped, times in the local zone with their offset; with `--json` one indented
document per command, and `runs tail --json` one JSON object per line). Nothing here holds SQL or a rule the library
lacks: the few computations below (how long a run has waited or ran) only present what the library returned.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from tidebase.cli.common import (
    TRACEBACK_LINES,
    gate_doc,
    json_arg,
    operator,
    respelled,
    run_status,
    since_arg,
    when,
    with_tide,
)
from tidebase.cli.output import Output, format_duration, pretty_json, spell, status
from tidebase.client import Tidebase
from tidebase.models import Event, Run, Step
from tidebase.ops.insight_models import RunOverview


def _run_time(run: Run, now: datetime) -> str:
    """How long the run has waited, or ran: the DURATION column of `runs ls`."""
    if run.status == "queued":
        since = run.available_at or run.created_at
        if since > now:
            return f"due in {format_duration((since - now).total_seconds())}"
        return f"waiting {format_duration((now - since).total_seconds())}"
    if run.status == "waiting":
        return f"waiting {format_duration((now - run.updated_at).total_seconds())}"
    if run.started_at is None:
        return "-"
    if run.status == "running":
        return f"{format_duration((now - run.started_at).total_seconds())} so far"
    end = run.completed_at or run.updated_at
    return format_duration((end - run.started_at).total_seconds())

def _step_time(step: Step) -> str:
    """A step's duration when it recorded a start: side-effecting and retried steps commit a `running` marker first;
    a pure step is written once, when it completes, so its duration is not known."""
    if step.started_at is None or step.completed_at is None or step.completed_at <= step.started_at:
        return "-"
    return format_duration((step.completed_at - step.started_at).total_seconds())

def _event_payload(event: Event) -> Any:
    """The payload as printed: in a gate event, the gate's status and decision in the CLI's spelling of
    `cancelled` (the event itself is stored, and served by the HTTP API, as written)."""
    return respelled(event.payload) if event.type.startswith("gate.") else event.payload

def _event_doc(event: Event) -> dict[str, Any]:
    return {"id": event.id, "run_id": event.run_id, "seq": event.seq, "type": event.type,
            "payload": _event_payload(event), "created_at": event.created_at}

def _parked_hint(out: Output, run_id: str, run: Run) -> None:
    if run.status == "pending":
        out.line(f"run {run_id} is pending: invoke it again, or `tidebase runs recover {run_id}` to put it on a "
                 "queue for a worker")

def _runs_ls(tide: Tidebase, args: argparse.Namespace, out: Output) -> int:
    page = tide.runs.list(status=run_status(args.status), workflow=args.workflow, limit=args.limit,
                          cursor=args.cursor, since=args.since)
    if args.json:
        out.json({"runs": page.runs, "next_cursor": page.next_cursor})
        return 0
    now = datetime.now(UTC)
    out.table(["id", "workflow", "status", "attempt", "created", "updated", "duration"],
              [[r.id, r.workflow, status(r.status), r.attempt, r.created_at, r.updated_at, _run_time(r, now)]
               for r in page.runs])
    if page.next_cursor:
        out.line(f"more: --cursor {page.next_cursor}", style="dim")
    return 0

def _runs_show(tide: Tidebase, args: argparse.Namespace, out: Output) -> int:
    run = tide.runs.get(args.run_id)
    overview = tide.insights.overview(args.run_id)
    gates = tide.gates.list(status=None, run_id=args.run_id, limit=1000)
    recoveries = tide.runs.recoveries(args.run_id)
    children = [{"name": c.edge.name, "edge_type": c.edge.edge_type, "run_id": c.run_id, "workflow": c.workflow,
                 "status": c.status} for c in overview.children]
    parents = [{"name": p.edge.name, "edge_type": p.edge.edge_type, "run_id": p.run_id, "workflow": p.workflow,
                "status": p.status} for p in overview.parents]
    if args.json:
        out.json({"run": run, "parents": parents, "children": children, "gates": [gate_doc(g) for g in gates],
                  "recoveries": recoveries})
        return 0
    _show_header(out, run, overview, parents)
    _show_error(out, run)
    if run.steps:
        out.heading("steps")
        out.table(["key", "status", "attempt", "duration", "completed", "output"],
                  [[s.key, status(s.status), s.attempt, _step_time(s), s.completed_at, s.output] for s in run.steps],
                  wide="output")
        for s in run.steps:
            if s.status == "manual_review":
                out.line(f"step {s.key} is parked for manual review: `tidebase runs release-step {run.id} {s.key}` "
                         f"runs it again, `tidebase runs skip-step {run.id} {s.key} --output JSON` completes it")
    if children:
        out.heading("children")
        out.table(["name", "type", "run", "workflow", "status"],
                  [[c["name"], c["edge_type"], c["run_id"], c["workflow"], status(c["status"])] for c in children])
    if gates:
        out.heading("gates")
        out.table(["id", "name", "status", "decision", "actor", "created", "resolved"],
                  [[g.id, g.name, status(g.status), status(g.decision), g.actor, g.created_at, g.resolved_at]
                   for g in gates])
    if recoveries:
        out.heading("recoveries")
        out.table(["detected", "reason", "detected by", "previous owner", "outcome", "resumed by"],
                  [[r["detected_at"], r["reason"], r["detected_by"], r["previous_owner"], r["outcome"],
                    r["resumed_by"]] for r in recoveries])
    return 0

def _show_header(out: Output, run: Run, overview: RunOverview, parents: list[dict[str, Any]]) -> None:
    now = datetime.now(UTC)
    # A failed run records no completion time: its last write is when it failed.
    ended = overview.ended_at or (run.updated_at if run.status in ("failed", "manual_review") else None)
    if run.status == "running" and overview.attempt_started_at is not None:
        took = f"{format_duration((now - overview.attempt_started_at).total_seconds())} so far (this attempt)"
    elif ended is not None and run.started_at is not None:
        took = format_duration((ended - run.started_at).total_seconds())
    else:
        took = None
    wait = None  # how long it has waited to be claimed (queued) or resumed (waiting for a gate)
    if run.status in ("queued", "waiting"):
        since = run.updated_at if run.status == "waiting" else run.available_at or run.created_at
        if since <= now:
            wait = f"{format_duration((now - since).total_seconds())}, since {out.time(since)}"
        else:
            wait = f"not yet due: due {when(out, since, now)}"
    lease = None
    if run.lease_owner is not None:
        lease = f"{run.lease_owner}, expires {when(out, run.lease_expires_at, now) or '-'}"
    cancelled = None
    if run.status == "cancelled":
        cancelled = (f"{when(out, overview.cancelled_at, now) or '-'} by {overview.cancel_actor or '-'}"
                     f" (reason: {run.cancel_reason or '-'})")
    parent = ", ".join(f"{p['run_id']} ({p['edge_type']} {p['name']}, {spell(p['status'])})" for p in parents)
    fields: list[tuple[str, Any]] = [
        ("run", run.id), ("workflow", run.workflow), ("status", status(run.status)), ("waiting", wait),
        ("attempt", run.attempt), ("queue", overview.queue), ("parent", parent or None),
        ("created", when(out, run.created_at, now)), ("started", when(out, run.started_at, now)),
        ("ended", when(out, ended, now)), ("duration", took), ("lease owner", lease), ("cancelled", cancelled),
        ("failure class", run.failure_class),
    ]
    long: list[tuple[str, Any]] = []
    for label, value in (("input", run.input), ("result", run.result)):
        if value is not None and value != {}:
            (fields if len(out.text(value, None)) <= 100 else long).append((label, value))
    out.fields(fields)
    for label, value in long:  # too long for one line: indented JSON, cut at 40 lines
        out.line(f"{label}:")
        out.block(_json_lines(value, out))

def _json_lines(value: Any, out: Output, limit: int = 40) -> str:
    lines = pretty_json(value, utc=out.utc).splitlines()
    if len(lines) > limit:
        lines = [*lines[:limit], f"… ({len(lines) - limit} more lines: --json prints all)"]
    return "\n".join(lines)

def _show_error(out: Output, run: Run) -> None:
    error = run.error
    if not isinstance(error, dict):
        return
    out.heading("error")
    out.fields([("type", error.get("type")), ("message", error.get("message"))], width=2000)
    trace = [line for line in str(error.get("traceback") or "").rstrip().splitlines() if line.strip()]
    if trace:
        shown = trace[-TRACEBACK_LINES:]
        out.line(f"traceback (last {len(shown)} of {len(trace)} lines):" if len(trace) > len(shown)
                 else "traceback:")
        out.block("\n".join(shown))

def _runs_events(tide: Tidebase, args: argparse.Namespace, out: Output) -> int:
    events = tide.runs.events(args.run_id, after=args.after)
    if args.json:
        out.json([_event_doc(e) for e in events])
        return 0
    out.table(["seq", "at", "type", "payload"], [[e.seq, e.created_at, e.type, _event_payload(e)] for e in events],
              width=80, wide="payload")
    return 0

def _runs_cancel(tide: Tidebase, args: argparse.Namespace, out: Output) -> int:
    run = tide.runs.cancel(args.run_id, reason=args.reason, actor=args.actor or operator())
    if args.json:
        out.json(run)
    else:
        out.line(f"run {run.id} is ", status(run.status), f" (reason: {run.cancel_reason or '-'})")
    return 0

def _runs_recover(tide: Tidebase, args: argparse.Namespace, out: Output) -> int:
    run = tide.runs.recover(args.run_id, actor=args.actor or operator(), queue=args.queue)
    if args.json:
        out.json(run)
    else:
        out.line(f"run {run.id} is back on queue {run.queue!r}: a worker serving that queue resumes it from its "
                 "checkpoints")
    return 0

def _runs_release_step(tide: Tidebase, args: argparse.Namespace, out: Output) -> int:
    step_id = tide.runs.release_step(args.run_id, args.step, actor=args.actor or operator(), reason=args.reason)
    if args.json:
        out.json({"run_id": args.run_id, "step": args.step, "step_id": step_id})
        return 0
    out.line(f"step {args.step} of run {args.run_id} released: it runs again when the run resumes")
    _parked_hint(out, args.run_id, tide.runs.get(args.run_id))
    return 0

def _runs_skip_step(tide: Tidebase, args: argparse.Namespace, out: Output) -> int:
    step_id = tide.runs.skip_step(args.run_id, args.step, args.output, actor=args.actor or operator(),
                                  reason=args.reason)
    if args.json:
        out.json({"run_id": args.run_id, "step": args.step, "step_id": step_id, "output": args.output})
        return 0
    out.line(f"step {args.step} of run {args.run_id} skipped: completed with output {out.text(args.output, 80)}, "
             "which the run replays when it resumes")
    _parked_hint(out, args.run_id, tide.runs.get(args.run_id))
    return 0

def _runs_tail(tide: Tidebase, args: argparse.Namespace, out: Output) -> int:
    after = 0
    current = None
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while True:
        run: Run = tide.runs.get(args.run_id)
        if run.status != current:
            current = run.status
            if args.json:
                out.json_line({"state": {"status": run.status, "attempt": run.attempt,
                                         "lease_owner": run.lease_owner}})
            else:
                out.line(f"== {run.id} [{run.workflow}] status ", status(run.status),
                         f", attempt {run.attempt}, holder {run.lease_owner or '-'}")
        for event in tide.runs.events(args.run_id, after=after):
            after = event.seq
            if args.json:
                out.json_line({"event": _event_doc(event)})
            else:
                out.line(f"{event.seq:>5}  {out.time(event.created_at)}  {event.type:<20} "
                         f"{out.text(_event_payload(event), 80)}")
        if run.terminal and not args.follow:
            return 0
        if deadline is not None and time.monotonic() >= deadline:
            return 0
        time.sleep(args.interval)

def configure_runs(sub: Any, common: argparse.ArgumentParser) -> None:
    """Adds `runs` and its commands to the `tidebase` subcommands."""
    runs = sub.add_parser("runs", help="inspect and operate on runs").add_subparsers(dest="runs_command",
                                                                                        required=True)
    p = runs.add_parser("ls", parents=[common], help="list runs, newest first")
    p.add_argument("--status")
    p.add_argument("--workflow")
    p.add_argument("--since", type=since_arg,
                   help="only runs created since: a duration before now (10m, 2h, 3d) or an ISO 8601 time")
    p.add_argument("--cursor", help="the next page: the cursor printed after the previous one (more: --cursor ...)")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=with_tide(_runs_ls))
    p = runs.add_parser("show", parents=[common], help="a run with its error, steps, children, gates, recoveries")
    p.add_argument("run_id")
    p.set_defaults(func=with_tide(_runs_show))
    p = runs.add_parser("events", parents=[common], help="a run's event log")
    p.add_argument("run_id")
    p.add_argument("--after", type=int, default=0, help="only events with seq > AFTER")
    p.set_defaults(func=with_tide(_runs_events))
    p = runs.add_parser("cancel", parents=[common], help="cancel a run (one-way; cascades to children and gates)")
    p.add_argument("run_id")
    p.add_argument("--reason")
    p.add_argument("--actor")
    p.set_defaults(func=with_tide(_runs_cancel))
    p = runs.add_parser("recover", parents=[common], help="put a failed or stuck run back on its queue")
    p.add_argument("run_id")
    p.add_argument("--actor")
    p.add_argument("--queue", default="default", help="queue for a run that had none (default: default)")
    p.set_defaults(func=with_tide(_runs_recover))
    for name, fn, what in (("release-step", _runs_release_step, "let a step parked for review run again"),
                           ("skip-step", _runs_skip_step, "complete a step parked for review without running it")):
        p = runs.add_parser(name, parents=[common], help=what)
        p.add_argument("run_id")
        p.add_argument("step", help="step key, e.g. charge or search#2")
        if name == "skip-step":
            p.add_argument("--output", type=json_arg, help="the step's output, as JSON (default null)")
        p.add_argument("--actor")
        p.add_argument("--reason")
        p.set_defaults(func=with_tide(fn))
    p = runs.add_parser("tail", parents=[common], help="follow a run's state and events live")
    p.add_argument("run_id")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    p.add_argument("--follow", action="store_true", help="keep following after the run ends")
    p.add_argument("--timeout", type=float, help="stop after this many seconds")
    p.set_defaults(func=with_tide(_runs_tail))
