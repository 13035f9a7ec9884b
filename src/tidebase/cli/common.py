"""What the operators' subcommands share: opening the library for a command, who the operator is, relative times,
argument types for durations and JSON, and the spelling of statuses on input and output."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from tidebase.cli.output import Output, format_duration, spell
from tidebase.client import Tidebase
from tidebase.models import Gate

TRACEBACK_LINES = 10

SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")

SPAN_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

Command = Callable[[Tidebase, argparse.Namespace, Output], int]

def with_tide(fn: Command) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        tide = Tidebase(args.dsn)
        try:
            return fn(tide, args, Output(utc=args.utc))
        finally:
            tide.close()

    return command

def operator() -> str:
    return f"cli:{os.environ.get('USER', 'operator')}"

def ago(value: datetime | None, now: datetime) -> str | None:
    """`(3 m 05 s ago)` or `(in 12.0 s)`, relative to `now`."""
    if value is None:
        return None
    delta = (now - value).total_seconds()
    return f"({format_duration(delta)} ago)" if delta >= 0 else f"(in {format_duration(-delta)})"

def when(out: Output, value: datetime | None, now: datetime) -> str | None:
    return None if value is None else f"{out.time(value)} {ago(value, now)}"

def respelled(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: spell(v) if k in ("status", "decision") else respelled(v) for k, v in value.items()}
    return value

def since_arg(text: str) -> datetime:
    """`10m`, `2h`, `3d` (s, m, h, d, w) before now, or an ISO 8601 time (without an offset: local time)."""
    span = SPAN.match(text.strip().lower())
    if span:
        return datetime.now(UTC) - timedelta(seconds=float(span[1]) * SPAN_SECONDS[span[2]])
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 10m, 2h or 3d, or an ISO 8601 time, not {text!r}") from None
    return value if value.tzinfo is not None else value.astimezone()

def json_arg(text: str) -> Any:
    """A JSON value given on the command line."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None

def run_status(word: str | None) -> str | None:
    return "cancelled" if word == "canceled" else word

def gate_status(word: str | None) -> str | None:
    return "canceled" if word == "cancelled" else word  # the stored (wire) spelling

def gate_doc(gate: Gate) -> dict[str, Any]:
    """A gate as the CLI prints it in JSON: `cancelled` spelled as everywhere else, and never a resolve token."""
    return {"id": gate.id, "run_id": gate.run_id, "name": gate.name, "prompt": gate.prompt, "data": gate.data,
            "status": spell(gate.status), "decision": spell(gate.decision), "actor": gate.actor,
            "payload": gate.payload, "created_at": gate.created_at, "resolved_at": gate.resolved_at,
            "run_status": gate.run_status}


def common_options() -> argparse.ArgumentParser:
    """The options every `runs` and `gates` command takes: `--dsn`, `--json`, `--utc`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dsn", help="database (default: TIDEBASE_DATABASE_URL, DATABASE_URL, else embedded)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    common.add_argument("--utc", action="store_true", help="print times in UTC instead of the local time zone")
    return common
