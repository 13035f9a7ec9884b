"""`tidebase metrics serve --port N`: a Prometheus endpoint for a deployment without `tidebase serve`.

It serves the database gauges (queue depth, age of the oldest due run), read at each scrape, and this process's own
instruments (which count nothing of other processes: scrape each worker's `--metrics-port` for theirs). See
docs/operations.md#metrics-traces-and-logs.
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from tidebase.cli.output import Output
from tidebase.core.dsn import resolve_dsn
from tidebase.ops import metrics
from tidebase.settings import Settings


def cmd_metrics_serve(args: argparse.Namespace) -> int:
    dsn = resolve_dsn(args.dsn or Settings.from_env().database_url)
    served = metrics.serve(args.port, host=args.host, conninfo=dsn)
    Output().line(f"serving metrics on http://{args.host}:{served.port}/metrics")
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    served.stop()
    return 0


def configure_metrics(sub: Any) -> None:
    """Adds `metrics serve` to the `tidebase` subcommands."""
    p = sub.add_parser("metrics", help="Prometheus metrics for processes without `tidebase serve`")
    actions = p.add_subparsers(dest="action", required=True)
    s = actions.add_parser("serve", help="serve GET /metrics: the database's queue gauges (and this process's own)")
    s.add_argument("--port", type=int, default=9464, help="port (default 9464; 0: any free port)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--dsn", help="database (default: TIDEBASE_DATABASE_URL, DATABASE_URL, else embedded)")
    s.set_defaults(func=cmd_metrics_serve)
