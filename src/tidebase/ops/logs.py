"""Log output for the processes Tidebase's commands own (`tidebase worker`; `tidebase serve` may use it too).

The library never configures logging, on import or otherwise: it only writes to loggers under `tidebase`
(`tidebase.worker`, `tidebase.reconciler`, ...) and leaves handlers and levels to the application. A command that
owns its process calls `configure_logging()` once, before it imports the user's code, to print records on stderr:

- `text`: `2026-12-07 19:30:05.123 +01:00 INFO    tidebase.worker: run r-1 completed in 1.2 s (...)`;
- `json`: one object per line with `time` (ISO 8601 with offset), `level`, `logger`, `message`, and the record's
  structured fields (the `extra=` of the call: `event`, `run_id`, `workflow`, `attempt`, `queue`, `duration_ms`,
  ...), plus `exception` when the record carries one.

Run transitions: `run_transition()` writes one line per transition of a run this process drives (created, started,
completed, failed, requeued, manual_review, cancelled, suspended, lease_lost, interrupted, released, recovered) to
the `tidebase.runs` logger, with the fields `event` (`run.<transition>`), `run_id`, `workflow` and `attempt` (and
`outcome`, `error_type`, `duration_ms` where they apply); silence them with that logger's level. Tracebacks in both
formats are printed by `loggable_traceback` (each message cut to its first line: a database error's DETAIL may quote
a row with a secret in it).

It also holds the two small formatters the log lines and the command line share (durations, UTC offsets), so that
both read the same.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from typing import Any, TextIO

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a structured field.
# `color_message` is uvicorn's copy of its message with terminal colours: a second, unfiltered rendering.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}

RUNS = logging.getLogger("tidebase.runs")


def run_transition(transition: str, run_id: str, workflow: str | None, attempt: int | None, *,
                   error: BaseException | None = None, **fields: Any) -> None:
    """One INFO line on `tidebase.runs` for a transition of run `run_id` (see the module docstring); free when that
    logger is disabled for INFO. INFO for failures too: the caller gets the exception, and an application that
    configured no logging must not have its stderr written to (Python prints unhandled WARNING records there)."""
    level = logging.INFO
    if not RUNS.isEnabledFor(level):
        return
    extra: dict[str, Any] = {"event": f"run.{transition}", "run_id": run_id, "workflow": workflow,
                             "attempt": attempt, **fields}
    detail = ""
    if error is not None:
        cls = type(error)
        kind = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
        extra["error_type"] = kind
        detail = f": {kind}: {(str(error).splitlines() or [''])[0][:200]}"
    what = f"workflow {workflow}" + ("" if attempt is None else f", attempt {attempt}")
    RUNS.log(level, "run %s: %s (%s)%s", run_id, transition.replace("_", " "), what, detail, extra=extra)


def format_duration(seconds: float) -> str:
    """A duration in human units: `340 ms`, `1.2 s`, `3 m 05 s`, `2 h 01 m`, `3 d 04 h` (negative counts as 0)."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} m {whole % 60:02d} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} m"
    return f"{whole // 86400} d {whole % 86400 // 3600:02d} h"


def format_offset(value: datetime) -> str:
    """The UTC offset of an aware datetime as `+05:30` (`+00:00` for UTC)."""
    offset = value.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: what its call passed in `extra=`."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """`<local time with offset> <LEVEL> <logger>: <message>`, then the traceback when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        local = datetime.fromtimestamp(record.created).astimezone()
        return f"{local:%Y-%m-%d %H:%M:%S}.{int(record.msecs):03d} {format_offset(local)}"

    def formatException(self, ei: Any) -> str:
        return _traceback(ei)


def _traceback(ei: Any) -> str:
    """A record's traceback with each message cut to its first line (see the module docstring)."""
    from tidebase.core.translate import loggable_traceback  # noqa: PLC0415 - only records with a traceback need it

    return loggable_traceback(ei[1]) if ei and ei[1] is not None else ""


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(fields_of(record))
        if record.exc_info:
            doc["exception"] = _traceback(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Makes the root logger print records at `level` and above on `stream` (stderr by default) in `fmt` (`text` or
    `json`), replacing any handler it had; returns the handler. ValueError for an unknown level or format."""
    if level.upper() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; one of {LEVELS}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; one of {FORMATS}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    return handler
