# Generated from the async source by tools/async_to_sync.py: do not edit, edit the *_async.py file.
"""Child runs and fan-out: `run.child(...)` and `run.fanout(...)`.

A child is a run of its own (its own checkpoints, lease, attempts and events) linked to its parent by an edge whose
name is unique per parent. The contract:

- One child per (parent, edge name), also when many callers race on one edge or a parent is resumed: the
  `create_child` SQL function creates the run and its edge, or returns the existing child, while it holds the
  parent's row lock, and it is fenced by the parent's lease token. An existing edge whose child has another workflow
  or input raises ChildConflict (nothing is written).
- The caller then drives the child like `tide.run` does: it takes the child's lease (waiting for it, without bound,
  when another caller holds it) and executes the child from its checkpoints, or gets the stored result of a child
  that already completed. So concurrent callers of one edge get the same result from a single execution.
- A fan-out runs its children concurrently and checkpoints their results, in child order, as the parent's step
  `join:<name>`. Once that step is stored, a replay returns it without creating, reading or running any child. If a
  child raises, the others still finish (each keeps its own completed run), and the first exception in child order
  is raised; a resumed parent then reuses the completed children and resumes the unfinished ones.
- A fork of the parent (`tide.runs.fork`) inherits the edges of the children that had completed by its fork point,
  to the same child runs, so its `run.child` returns their stored results and runs none of their steps. Every other
  child of the fork (called after the fork point, or unfinished at it) is a new child run of the fork; the source's
  children are never driven by the fork.

What this module does not do: it does not cancel children with their parent, does not enqueue children for other
workers (a child executes in the caller's task or thread), and does not bound how long a caller waits for a child
whose lease another worker holds. A control-flow error raised for the child (its lease lost, the child cancelled)
reaches the parent's workflow unchanged.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import _serde
from ._acompat import gather
from ._base import CURRENT_STEP, check_name, new_run_id
from .errors import InvalidArgument

if TYPE_CHECKING:
    from .run import RunContext

JOIN_PREFIX = "join:"


@dataclass(frozen=True)
class Child:
    """One child of a fan-out: `name` (unique within the fan-out, part of the edge name), the `workflow` callable
    `(run, input)`, its `input`, and its workflow name (the callable's `__name__` when omitted)."""

    name: str
    workflow: Callable[..., Any]
    input: Any = None
    workflow_name: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "child name")
        workflow_name = self.workflow_name
        if workflow_name is None:
            workflow_name = getattr(self.workflow, "__name__", None)
            if not isinstance(workflow_name, str):
                raise InvalidArgument(f"child {self.name!r}: give a workflow_name, the workflow has no __name__")
            object.__setattr__(self, "workflow_name", workflow_name)  # frozen: the one place it is filled in
        check_name(workflow_name, "workflow name")


def run_child(
    run: RunContext,
    workflow_name: str,
    workflow: Callable[..., Any],
    *,
    name: str,
    input: Any = None,
    edge_type: str = "child",
    edge_metadata: dict[str, Any] | None = None,
) -> Any:
    """Creates the child run of edge `name` once, drives it to completion and returns its result.

    Safe to call again, concurrently or after a crash: the edge's existing child is reused (its completed steps
    replayed, or its stored result returned). Raises ChildConflict when the edge's child has another workflow name or
    input, LeaseLost / RunCancelled when the parent may no longer write, and whatever the child's workflow raises.
    """
    run._check_alive()
    check_name(workflow_name, "workflow name")
    check_name(name, "edge name")
    check_name(edge_type, "edge type")
    tide = run.tide
    enc = tide.serializer
    limit = tide.max_payload_bytes
    input_text = _serde.encode(input if input is not None else {}, enc, limit=limit, what=f"input of child {name!r}",
                               run_id=run.run_id)
    params = {
        "parent_id": run.run_id, "token": run.token, "edge_name": name, "edge_type": edge_type,
        "edge_metadata": _serde.encode(edge_metadata or {}, enc, limit=limit, what="edge metadata",
                                       run_id=run.run_id),
        "child_id": new_run_id(), "workflow": workflow_name, "input": input_text,
        "input_hash": _serde.canonical_hash(json.loads(input_text), enc),
        "lease_ms": int(tide.lease_seconds * 1000),
    }
    row = run._write("create_child", params, None)
    assert row is not None  # create_child returns the child or raises
    if row["child_status"] == "completed":  # a resumed parent: no need to take the child's lease to read its result
        return row["child_result"]
    # The child's own steps must not be attributed to a step of the parent that happens to be running this call.
    outer = CURRENT_STEP.set(None)
    try:
        return tide._start(row["child_id"], workflow, None, math.inf)
    finally:
        CURRENT_STEP.reset(outer)


def run_fanout(
    run: RunContext, name: str, children: Sequence[Child], *, max_concurrency: int | None = None
) -> list[Any]:
    """Runs `children` concurrently (at most `max_concurrency` at once) as child runs with edges `<name>/<child>` of
    type `fanout`, and returns their results in child order, checkpointed as the parent's step `join:<name>`.

    A replay returns the stored join without touching any child. When a child raises, the first exception in child
    order is raised after every child has finished and is recorded as a failed attempt of the join; re-invoking the
    parent reuses the children that completed and resumes the others. The n-th fan-out of one name in a run (n >= 2)
    is step `join:<name>#n` with edges `<name>#n/<child>`, so a repeated fan-out gets children of its own. Raises
    InvalidArgument for duplicate child names or a `max_concurrency` below 1, before anything is written.
    """
    check_name(name, "fan-out name")
    children = list(children)
    seen: set[str] = set()
    for child in children:
        if not isinstance(child, Child):
            raise InvalidArgument(f"fan-out {name!r}: expected Child, got {type(child).__name__}")
        if child.name in seen:
            raise InvalidArgument(f"fan-out {name!r}: child name {child.name!r} is used twice")
        seen.add(child.name)
    if max_concurrency is not None and max_concurrency < 1:
        raise InvalidArgument("max_concurrency must be >= 1")

    # The children run inside the join step's own function, rather than before a join step whose replay would be
    # checked by peeking at the checkpoints under a key numbered by hand (a copy of run.step's rules that could drift
    # from them, and race with a concurrent step of the same name). run.step does everything the join needs, once:
    # it gives the fan-out its occurrence key (`join:<name>`, `join:<name>#2`, ...), serves a stored join without
    # calling the function (so a replay touches no child), calls the function at most once per invocation (no
    # retries), and records a child's exception as the join's failed attempt. Inside the function, CURRENT_STEP
    # holds that key, which names the edges, so a repeated fan-out's edges follow its step key.
    def join() -> list[Any]:
        key = CURRENT_STEP.get() or f"{JOIN_PREFIX}{name}"
        prefix = key[len(JOIN_PREFIX):]
        calls = [
            functools.partial(run_child, run, str(child.workflow_name), child.workflow, name=f"{prefix}/{child.name}",
                              input=child.input, edge_type="fanout", edge_metadata={"fanout": name})
            for child in children
        ]
        outcomes = gather(calls, max_concurrency)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes

    result: list[Any] = run.step(f"{JOIN_PREFIX}{name}", join)
    return result
