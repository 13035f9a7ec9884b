"""The `tidebase` command: a thin shell over the sync library (parse arguments, call, print).

It holds no SQL and no rule of its own: everything it does, a user can do in Python. Exit codes: 0 success, 1 a
failed check, 2 a Tidebase error (its message on stderr).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from tidebase import __version__
from tidebase.cli import demo
from tidebase.cli.common import common_options
from tidebase.cli.gates import configure_gates
from tidebase.cli.gc import configure_gc
from tidebase.cli.mcp import configure_mcp
from tidebase.cli.metrics import configure_metrics
from tidebase.cli.output import Output, error, spell
from tidebase.cli.runs import configure_runs
from tidebase.cli.worker import configure_worker
from tidebase.client import Tidebase
from tidebase.core import embedded as _embedded
from tidebase.core.dsn import resolve_dsn
from tidebase.core.migrate import migrate
from tidebase.errors import GateAlreadyResolved, TidebaseError
from tidebase.settings import Settings


def _out(text: str) -> None:
    Output().line(text)


def _message(exc: TidebaseError) -> str:
    """The error's message as the CLI prints it (a gate decision in the CLI's spelling of `cancelled`)."""
    gate_id = exc.context.get("gate_id")
    if isinstance(exc, GateAlreadyResolved) and gate_id:
        return f"gate {gate_id} is already resolved: {spell(exc.decision)} by {exc.actor or 'an operator'}"
    return str(exc)


def cmd_migrate(args: argparse.Namespace) -> int:
    result = migrate(resolve_dsn(args.dsn or Settings.from_env().database_url), lock_timeout=args.lock_timeout)
    applied = ", ".join(str(v) for v in result.applied) or "none"
    _out(f"schema at version {result.version} (applied now: {applied})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    tide = Tidebase(args.dsn)
    try:
        return demo.main(tide, _out)
    finally:
        tide.close()


def cmd_db(args: argparse.Namespace) -> int:
    if Settings.from_env().database_url and args.action == "status":
        _out("a database is configured (TIDEBASE_DATABASE_URL / DATABASE_URL); the embedded server is not used")
    if args.action == "stop":
        _out("stopped" if _embedded.stop() else "not running")
        return 0
    status = _embedded.status()
    _out(f"embedded PostgreSQL: {'running' if status.running else 'stopped'}")
    _out(f"  data folder: {status.data_dir}")
    if status.running:
        _out(f"  port: {status.port}  pid: {status.pid}  client processes: {status.users}")
        _out(f"  dsn: {status.dsn}")
    return 0


def create_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidebase", description="Durable checkpoints for AI agents, in Postgres.")
    parser.add_argument("--version", action="version", version=f"tidebase {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="apply the schema migrations to the configured database")
    p.add_argument("--dsn", help="database (default: TIDEBASE_DATABASE_URL, DATABASE_URL, else embedded)")
    p.add_argument("--lock-timeout", type=float, default=60.0, help="seconds to wait for the migration lock")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("demo", help="run an agent that crashes after two steps and resumes from its checkpoints")
    p.add_argument("--dsn", help="database (default: TIDEBASE_DATABASE_URL, DATABASE_URL, else embedded)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("db", help="the embedded PostgreSQL used when no database is configured")
    p.add_argument("action", choices=["status", "stop"])
    p.set_defaults(func=cmd_db)
    configure_worker(sub)
    common = common_options()
    configure_runs(sub, common)
    configure_gates(sub, common)
    configure_gc(sub, common)
    configure_mcp(sub)
    configure_metrics(sub)
    from tidebase.server.serve import add_serve_parser  # noqa: PLC0415 - the server package registers its own command

    add_serve_parser(sub)
    return parser


def _announce_embedded_starts() -> None:
    """Shows on stderr what the embedded PostgreSQL is doing while a command waits for it (its first start takes a
    few seconds): the command owns its process, so it may attach a handler; the library never does."""
    embedded = logging.getLogger("tidebase.embedded")
    if not embedded.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("tidebase: %(message)s"))
        embedded.addHandler(handler)
        embedded.setLevel(logging.INFO)
        embedded.propagate = False  # a worker's configured root logger must not print it twice


def main(argv: Sequence[str] | None = None) -> int:
    args = create_parser().parse_args(argv)
    _announce_embedded_starts()
    try:
        code: int = args.func(args)
    except TidebaseError as exc:
        error(_message(exc))
        return 2
    except BrokenPipeError:
        # The reader went away (`tidebase runs ls | head`): not an error of ours. Point stdout at /dev/null so that
        # the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code


if __name__ == "__main__":
    sys.exit(main())
