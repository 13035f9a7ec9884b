"""LangGraph (`langgraph` + `langgraph-checkpoint-postgres` from PyPI), in its own virtualenv, with `PostgresSaver`.

- executed step: a `StateGraph` with one node that loops back to itself N times (a conditional edge ends the loop);
  each node run returns the ~200-byte dict, which overwrites the state's `out` channel. Invoked with
  `durability="sync"`, so each step's checkpoint is written before the next step starts (the guarantee the other
  systems give); one thread_id per run; one `PostgresSaver.from_conn_string(...)` connection per process.
- resume: the node raises on step k+1 of a run's first invocation; `graph.invoke(None, config)` with the same
  thread_id then loads the latest checkpoint and runs the failed step again.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from importlib.metadata import version
from time import perf_counter
from typing import Any, TypedDict

from _common import ResumeResult, RunResult, fresh_id, main, step_output
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.graph import END, START, StateGraph

DURABILITY = "sync"
_state: dict[str, Any] = {"deadline": None, "entries": [], "fail": False, "reached": 0.0}


class PlannedFailure(Exception):
    """Raised by the node on step k+1 of a run's first invocation."""


class State(TypedDict):
    i: int
    n: int
    fail_at: int
    out: dict[str, Any]


def step(state: State) -> dict[str, Any]:
    """One step: records when it was entered (= when the previous step's checkpoint was durable)."""
    now = perf_counter()
    _state["entries"].append(now)
    i = state["i"]
    if i == state["fail_at"]:
        if _state["fail"]:
            raise PlannedFailure
        _state["reached"] = now
    return {"i": i + 1, "out": step_output(i)}


def route(state: State) -> str:
    deadline = _state["deadline"]
    if state["i"] >= state["n"] or (deadline is not None and perf_counter() > deadline):
        return END
    return "step"


def build_graph(checkpointer: PostgresSaver) -> Any:
    builder = StateGraph(State)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", route, ["step", END])
    return builder.compile(checkpointer=checkpointer)


def run_config(thread_id: str, steps: int) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}, "recursion_limit": steps + 10}


class LangGraphSystem:
    def __init__(self, dsn: str) -> None:
        self.stack = ExitStack()
        saver = self.stack.enter_context(PostgresSaver.from_conn_string(dsn))
        saver.setup()
        self.graph = build_graph(saver)

    def run(self, steps: int, deadline: float | None = None) -> RunResult:
        _state["deadline"], _state["entries"] = deadline, []
        started = perf_counter()
        self.graph.invoke({"i": 0, "n": steps, "fail_at": -1, "out": {}}, run_config(fresh_id("exec"), steps),
                          durability=DURABILITY)
        finished = perf_counter()
        return RunResult(started, finished, [*_state["entries"][1:], finished])

    def prepare_failed(self, k: int) -> Any:
        thread_id = fresh_id("resume")
        _state["deadline"], _state["fail"] = None, True
        try:
            self.graph.invoke({"i": 0, "n": k + 1, "fail_at": k, "out": {}}, run_config(thread_id, k + 1),
                              durability=DURABILITY)
        except PlannedFailure:
            return thread_id, k
        finally:
            _state["fail"] = False
        raise RuntimeError("the graph was expected to fail on its first invocation")

    def resume(self, handle: Any) -> ResumeResult:
        thread_id, k = handle
        start = perf_counter()
        self.graph.invoke(None, run_config(thread_id, k + 1), durability=DURABILITY)
        reached = _state["reached"] - start
        return ResumeResult(reached, reached)

    def close(self) -> None:
        self.stack.close()


def versions() -> dict[str, str]:
    names = ("langgraph", "langgraph-checkpoint", "langgraph-checkpoint-postgres", "psycopg")
    return {name: version(name) for name in names} | {"python": sys.version.split()[0]}


if __name__ == "__main__":
    sys.exit(main(LangGraphSystem, versions))
