"""`tidebase gates ...`: list pending gates and approve or reject them (a thin shell over `tide.gates`)."""

from __future__ import annotations

import argparse
from typing import Any

from tidebase.cli.common import Command, gate_doc, gate_status, json_arg, operator, with_tide
from tidebase.cli.output import Output, status
from tidebase.client import Tidebase


def _gates_ls(tide: Tidebase, args: argparse.Namespace, out: Output) -> int:
    gates = tide.gates.list(status=gate_status(args.status), run_id=args.run, limit=args.limit)
    if args.json:
        out.json([gate_doc(g) for g in gates])
        return 0
    out.table(["id", "run", "name", "status", "prompt", "created"],
              [[g.id, g.run_id, g.name, status(g.status), g.prompt, g.created_at] for g in gates], wide="prompt")
    return 0

def _gates_resolve(decision: str) -> Command:
    def resolve(tide: Tidebase, args: argparse.Namespace, out: Output) -> int:
        gate = tide.gates.resolve(args.gate_id, decision, actor=args.actor or operator(), payload=args.payload)
        if args.json:
            out.json(gate_doc(gate))
        else:
            out.line(f"gate {gate.id} ({gate.name}) of run {gate.run_id}: ", status(gate.decision))
        return 0

    return resolve

def configure_gates(sub: Any, common: argparse.ArgumentParser) -> None:
    """Adds `gates` and its commands to the `tidebase` subcommands."""
    gates = sub.add_parser("gates", help="list and decide approval gates").add_subparsers(dest="gates_command",
                                                                                           required=True)
    p = gates.add_parser("ls", parents=[common], help="pending gates (or those of one run)")
    p.add_argument("--run", help="only this run's gates")
    p.add_argument("--status", default="pending", help="pending (default), approved, rejected or cancelled")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=with_tide(_gates_ls))
    for name, decision in (("approve", "approved"), ("reject", "rejected")):
        p = gates.add_parser(name, parents=[common], help=f"{name} a pending gate")
        p.add_argument("gate_id")
        p.add_argument("--actor")
        p.add_argument("--payload", type=json_arg, help="JSON payload recorded with the decision")
        p.set_defaults(func=with_tide(_gates_resolve(decision)))
