"""The operators' subcommands of `tidebase`: `worker`, `runs ...` and `gates ...` (registered by `tidebase.cli`).

A thin shell like the rest of the CLI: each command parses its arguments, calls the sync library API and prints,
as a readable table in a terminal or as JSON with `--json` (one document per command; `runs tail --json` prints one
JSON object per line). Nothing here holds SQL or a rule the library lacks.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from .aio import AsyncTidebase
from .engine import Tidebase
from .errors import ConfigurationError
from .models import Event, Run


def _out(text: str) -> None:
    print(text, flush=True)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _json(value: Any) -> None:
    _out(json.dumps(_plain(value), indent=None if isinstance(value, Event) else 2, default=str))


def _cell(value: Any, width: int = 48) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with aligned columns."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _with_tide(fn: Callable[[Tidebase, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        tide = Tidebase(args.dsn)
        try:
            return fn(tide, args)
        finally:
            tide.close()

    return command


# -- worker ------------------------------------------------------------------------------------------------------


def load_app(spec: str) -> Tidebase | AsyncTidebase:
    """Imports `module:attribute` (from the current directory too) and returns the Tidebase it names."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"expected MODULE:ATTRIBUTE (e.g. app:tide), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        app = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load {spec!r}: {exc}") from exc
    if not isinstance(app, (Tidebase, AsyncTidebase)):
        raise ConfigurationError(f"{spec!r} is a {type(app).__name__}, not a Tidebase or AsyncTidebase")
    return app


def cmd_worker(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    queues = [q for q in args.queues.split(",") if q]
    options: dict[str, Any] = {"concurrency": args.concurrency, "poll_interval": args.poll_interval,
                               "reconcile_interval": args.reconcile_interval, "shutdown_grace": args.grace,
                               "burst": args.burst}
    is_async = isinstance(app, AsyncTidebase)
    count = asyncio.run(app.work(queues, **options)) if is_async else app.work(queues, **options)  # type: ignore[arg-type]
    _out(f"worker stopped after executing {count} run(s)")
    return 0


# -- runs --------------------------------------------------------------------------------------------------------


def _runs_ls(tide: Tidebase, args: argparse.Namespace) -> int:
    page = tide.runs.list(status=args.status, workflow=args.workflow, limit=args.limit)
    if args.json:
        _json({"runs": page.runs, "next_cursor": page.next_cursor})
        return 0
    _out(table(["id", "workflow", "status", "attempt", "created", "updated"],
               [[r.id, r.workflow, r.status, r.attempt, r.created_at, r.updated_at] for r in page.runs]))
    return 0


def _runs_show(tide: Tidebase, args: argparse.Namespace) -> int:
    run = tide.runs.get(args.run_id)
    recoveries = tide.runs.recoveries(args.run_id)
    if args.json:
        _json({"run": run, "recoveries": recoveries})
        return 0
    fields = [("id", run.id), ("workflow", run.workflow), ("status", run.status), ("attempt", run.attempt),
              ("lease owner", run.lease_owner), ("lease expires", run.lease_expires_at),
              ("cancel reason", run.cancel_reason), ("failure class", run.failure_class), ("input", run.input),
              ("result", run.result), ("error", (run.error or {}).get("message") if run.error else None),
              ("created", run.created_at), ("completed", run.completed_at)]
    _out("\n".join(f"{k + ':':15} {_cell(v, 100)}" for k, v in fields))
    if run.steps:
        _out("\nsteps")
        _out(table(["key", "status", "attempt", "completed", "output"],
                   [[s.key, s.status, s.attempt, s.completed_at, s.output] for s in run.steps]))
    if recoveries:
        _out("\nrecoveries")
        _out(table(["detected", "reason", "detected by", "previous owner", "outcome", "resumed by"],
                   [[r["detected_at"], r["reason"], r["detected_by"], r["previous_owner"], r["outcome"],
                     r["resumed_by"]] for r in recoveries]))
    return 0


def _event_row(e: Event) -> list[Any]:
    return [e.seq, e.created_at, e.type, e.payload]


def _runs_events(tide: Tidebase, args: argparse.Namespace) -> int:
    events = tide.runs.events(args.run_id, after=args.after)
    if args.json:
        _out(json.dumps(_plain(events), default=str))
        return 0
    _out(table(["seq", "at", "type", "payload"], [_event_row(e) for e in events]))
    return 0


def _runs_cancel(tide: Tidebase, args: argparse.Namespace) -> int:
    run = tide.runs.cancel(args.run_id, reason=args.reason, actor=args.actor or _operator())
    if args.json:
        _json(run)
    else:
        _out(f"run {run.id} is {run.status} (reason: {run.cancel_reason or '-'})")
    return 0


def _runs_recover(tide: Tidebase, args: argparse.Namespace) -> int:
    requeued = tide.runs.recover(args.run_id, actor=args.actor or _operator(), queue=args.queue)
    if args.json:
        _json({"run_id": args.run_id, "requeued": requeued})
    else:
        _out(f"run {args.run_id} " + ("is back on its queue" if requeued else "cannot be recovered in its status"))
    return 0 if requeued else 1


def _runs_release_step(tide: Tidebase, args: argparse.Namespace) -> int:
    step_id = tide.runs.release_step(args.run_id, args.step, actor=args.actor or _operator(), reason=args.reason)
    if args.json:
        _json({"run_id": args.run_id, "step": args.step, "step_id": step_id})
    else:
        _out(f"step {args.step} of run {args.run_id} released: it runs again when the run resumes")
    return 0


def _runs_tail(tide: Tidebase, args: argparse.Namespace) -> int:
    after = 0
    status = None
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while True:
        run: Run = tide.runs.get(args.run_id)
        if run.status != status:
            status = run.status
            if args.json:
                _out(json.dumps({"state": {"status": run.status, "attempt": run.attempt,
                                           "lease_owner": run.lease_owner}}))
            else:
                _out(f"== {run.id} [{run.workflow}] status {run.status}, attempt {run.attempt}, "
                     f"holder {run.lease_owner or '-'}")
        for event in tide.runs.events(args.run_id, after=after):
            after = event.seq
            if args.json:
                _out(json.dumps({"event": _plain(event)}, default=str))
            else:
                _out(f"{event.seq:>5}  {_cell(event.created_at)}  {event.type:<20} {_cell(event.payload, 80)}")
        if run.terminal and not args.follow:
            return 0
        if deadline is not None and time.monotonic() >= deadline:
            return 0
        time.sleep(args.interval)


def _operator() -> str:
    return f"cli:{os.environ.get('USER', 'operator')}"


# -- gates -------------------------------------------------------------------------------------------------------


def _gates_ls(tide: Tidebase, args: argparse.Namespace) -> int:
    gates = tide.gates.list(status=args.status, run_id=args.run, limit=args.limit)
    if args.json:
        _json(gates)
        return 0
    _out(table(["id", "run", "name", "status", "prompt", "created"],
               [[g.id, g.run_id, g.name, g.status, g.prompt, g.created_at] for g in gates]))
    return 0


def _gates_resolve(decision: str) -> Callable[[Tidebase, argparse.Namespace], int]:
    def resolve(tide: Tidebase, args: argparse.Namespace) -> int:
        payload = json.loads(args.payload) if args.payload else None
        gate = tide.gates.resolve(args.gate_id, decision, actor=args.actor or _operator(), payload=payload)
        if args.json:
            _json(gate)
        else:
            _out(f"gate {gate.id} ({gate.name}) of run {gate.run_id}: {gate.decision}")
        return 0

    return resolve


# -- parsers -----------------------------------------------------------------------------------------------------


def configure_parsers(sub: Any) -> None:
    """Adds `worker`, `runs` and `gates` to the `tidebase` subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dsn", help="database (default: TIDEBASE_DATABASE_URL, DATABASE_URL, else embedded)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")

    p = sub.add_parser("worker", help="run a worker: claim queued runs of the app's registered workflows")
    p.add_argument("app", help="MODULE:ATTRIBUTE naming your Tidebase (or AsyncTidebase), e.g. app:tide")
    p.add_argument("--queues", default="default", help="comma-separated queues to claim from (default: default)")
    p.add_argument("--concurrency", type=int, default=1, help="runs executed at once (default 1)")
    p.add_argument("--poll-interval", type=float, default=1.0, help="seconds between claims when idle")
    p.add_argument("--reconcile-interval", type=float, default=5.0, help="seconds between reconciler ticks")
    p.add_argument("--grace", type=float, default=30.0, help="seconds in-flight runs get to finish on SIGTERM")
    p.add_argument("--burst", action="store_true", help="exit once nothing is runnable")
    p.set_defaults(func=cmd_worker)
    _configure_runs(sub, common)
    _configure_gates(sub, common)


def _configure_runs(sub: Any, common: argparse.ArgumentParser) -> None:
    runs = sub.add_parser("runs", help="inspect and operate on runs").add_subparsers(dest="runs_command",
                                                                                        required=True)
    p = runs.add_parser("ls", parents=[common], help="list runs, newest first")
    p.add_argument("--status")
    p.add_argument("--workflow")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=_with_tide(_runs_ls))
    p = runs.add_parser("show", parents=[common], help="a run with its steps and recoveries")
    p.add_argument("run_id")
    p.set_defaults(func=_with_tide(_runs_show))
    p = runs.add_parser("events", parents=[common], help="a run's event log")
    p.add_argument("run_id")
    p.add_argument("--after", type=int, default=0, help="only events with seq > AFTER")
    p.set_defaults(func=_with_tide(_runs_events))
    p = runs.add_parser("cancel", parents=[common], help="cancel a run (one-way; cascades to children and gates)")
    p.add_argument("run_id")
    p.add_argument("--reason")
    p.add_argument("--actor")
    p.set_defaults(func=_with_tide(_runs_cancel))
    p = runs.add_parser("recover", parents=[common], help="put a failed or stuck run back on its queue")
    p.add_argument("run_id")
    p.add_argument("--actor")
    p.add_argument("--queue", default="default", help="queue for a run that had none (default: default)")
    p.set_defaults(func=_with_tide(_runs_recover))
    p = runs.add_parser("release-step", parents=[common], help="let a step parked for review run again")
    p.add_argument("run_id")
    p.add_argument("step", help="step key, e.g. charge or search#2")
    p.add_argument("--actor")
    p.add_argument("--reason")
    p.set_defaults(func=_with_tide(_runs_release_step))
    p = runs.add_parser("tail", parents=[common], help="follow a run's state and events live")
    p.add_argument("run_id")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    p.add_argument("--follow", action="store_true", help="keep following after the run ends")
    p.add_argument("--timeout", type=float, help="stop after this many seconds")
    p.set_defaults(func=_with_tide(_runs_tail))


def _configure_gates(sub: Any, common: argparse.ArgumentParser) -> None:
    gates = sub.add_parser("gates", help="list and decide approval gates").add_subparsers(dest="gates_command",
                                                                                           required=True)
    p = gates.add_parser("ls", parents=[common], help="pending gates (or those of one run)")
    p.add_argument("--run", help="only this run's gates")
    p.add_argument("--status", default="pending", help="pending (default), approved, rejected or canceled")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=_with_tide(_gates_ls))
    for name, decision in (("approve", "approved"), ("reject", "rejected")):
        p = gates.add_parser(name, parents=[common], help=f"{name} a pending gate")
        p.add_argument("gate_id")
        p.add_argument("--actor")
        p.add_argument("--payload", help="JSON payload recorded with the decision")
        p.set_defaults(func=_with_tide(_gates_resolve(decision)))
