"""`tidebase worker MODULE:ATTRIBUTE`: run a worker for the workflows an app registers, with its log lines."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from typing import Any

from tidebase.aio import AsyncTidebase
from tidebase.cli.output import Output
from tidebase.client import Tidebase
from tidebase.errors import ConfigurationError
from tidebase.ops import metrics
from tidebase.ops.logs import FORMATS, LEVELS, configure_logging
from tidebase.settings import Settings


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

def _conninfo(app: Tidebase | AsyncTidebase) -> str | None:
    """The DSN of the app's open database, for the metrics port's gauges (None until it is open)."""
    db = app.engine._db  # read only: the worker opened it
    conninfo = None if db is None else db.pool.conninfo
    return conninfo if isinstance(conninfo, str) else None


def cmd_worker(args: argparse.Namespace) -> int:
    # Before the app is imported: an app that calls logging.basicConfig() then finds logging configured and leaves
    # it as it is, instead of adding a second handler that would print every line twice.
    fmt = args.log_format or Settings.from_env().log_format
    if fmt not in FORMATS:
        raise ConfigurationError(f"TIDEBASE_LOG_FORMAT={fmt!r} is not valid: it takes one of {', '.join(FORMATS)}")
    configure_logging(args.log_level, fmt)
    app = load_app(args.app)
    stop_metrics = None
    if args.metrics_port is not None:  # this worker's instruments, and the database gauges from the app's database
        stop_metrics = metrics.serve(args.metrics_port, host=args.metrics_host,
                                     conninfo=lambda: _conninfo(app))
    queues = [q for q in args.queues.split(",") if q]
    options: dict[str, Any] = {"concurrency": args.concurrency, "poll_interval": args.poll_interval,
                               "reconcile_interval": args.reconcile_interval, "shutdown_grace": args.grace,
                               "burst": args.burst}
    is_async = isinstance(app, AsyncTidebase)
    try:
        count = asyncio.run(app.work(queues, **options)) if is_async else app.work(queues, **options)  # type: ignore[arg-type]
    finally:
        if stop_metrics is not None:
            stop_metrics.stop()
    Output().line(f"worker stopped after executing {count} run(s)")
    return 0


def configure_worker(sub: Any) -> None:
    """Adds `worker` to the `tidebase` subcommands."""
    p = sub.add_parser("worker", help="run a worker: claim queued runs of the app's registered workflows")
    p.add_argument("app", help="MODULE:ATTRIBUTE naming your Tidebase (or AsyncTidebase), e.g. app:tide")
    p.add_argument("--queues", default="default", help="comma-separated queues to claim from (default: default)")
    p.add_argument("--concurrency", type=int, default=1, help="runs executed at once (default 1)")
    p.add_argument("--poll-interval", type=float, default=1.0, help="seconds between claims when idle")
    p.add_argument("--reconcile-interval", type=float, default=5.0, help="seconds between reconciler ticks")
    p.add_argument("--grace", type=float, default=30.0, help="seconds in-flight runs get to finish on SIGTERM")
    p.add_argument("--burst", action="store_true", help="exit once nothing is runnable")
    p.add_argument("--log-level", type=str.upper, choices=LEVELS, default="INFO",
                   help="least important log records printed on stderr (default INFO)")
    p.add_argument("--log-format", choices=FORMATS, default=None,
                   help="text lines, or one JSON object per line (default: TIDEBASE_LOG_FORMAT, else text)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics on this port (GET /metrics; 0: any free port)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="bind address of --metrics-port (default 127.0.0.1)")
    p.set_defaults(func=cmd_worker)
