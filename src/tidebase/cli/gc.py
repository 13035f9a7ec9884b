"""`tidebase gc --older-than 30d`: retention, a thin shell over `tide.gc(...)` (docs/operations.md#retention).

The arguments are passed to the library as given, so a bad age or status is refused by the same check as in Python
(InvalidArgument, exit code 2, nothing deleted).
"""

from __future__ import annotations

import argparse
from typing import Any

from tidebase.cli.common import with_tide
from tidebase.cli.output import Output, format_duration
from tidebase.client import Tidebase


def _gc(tide: Tidebase, args: argparse.Namespace, out: Output) -> int:
    result = tide.gc(args.older_than, statuses=args.status, dry_run=args.dry_run, batch=args.batch)
    if args.json:
        out.json(result)
        return 0
    verb = "would delete" if result.dry_run else "deleted"
    out.line(f"{verb} {result.runs} run(s) in {result.trees} tree(s) that finished before "
             f"{out.time(result.cutoff)} (statuses: {', '.join(result.statuses)})")
    out.line(f"kept {result.kept} finished root run(s) still needed or younger; {result.batches} batch(es) in "
             f"{format_duration(result.elapsed_seconds)}")
    rows = [[table, count] for table, count in sorted(result.rows.items()) if count]
    if rows:
        out.table(["table", "rows"], rows)
    return 0


def configure_gc(sub: Any, common: argparse.ArgumentParser) -> None:
    """Adds `gc` to the `tidebase` subcommands."""
    p = sub.add_parser("gc", parents=[common],
                       help="retention: delete finished run trees older than an age, with everything they hold")
    p.add_argument("--older-than", required=True, metavar="AGE",
                   help="how long ago the runs must have finished: 30d, 12h, 90m, 45s, 2w")
    p.add_argument("--status", default=None, metavar="STATUSES",
                   help="root statuses to delete, comma-separated (default: completed,failed,cancelled)")
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    p.add_argument("--batch", type=int, default=1000,
                   help="root runs examined per transaction (default 1000; 1 to 10000)")
    p.set_defaults(func=with_tide(_gc))
