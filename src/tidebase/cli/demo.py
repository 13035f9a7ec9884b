"""`tidebase demo`: a research agent that crashes after two completed steps and resumes from its checkpoints.

It shows the product in one screen: the same run id is invoked twice, the first invocation dies after `plan` and
`search` committed, and the second serves those two from Postgres and executes only `summarize` and `finalize`.
The "model" calls are deterministic stand-ins, so the demo needs no API key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tidebase.client import RunContext, Tidebase
from tidebase.core.rules import new_run_id


class SimulatedCrash(Exception):
    """The demo's stand-in for a process dying mid-run."""


def research_agent(trace: list[str], crash: list[bool]) -> Callable[[RunContext, Any], Any]:
    """The example workflow; `trace` collects the steps that really executed, `crash` arms the failure once."""

    def work(name: str, value: Any) -> Callable[[], Any]:
        def fn() -> Any:
            trace.append(name)
            time.sleep(0.05)  # stands in for a model or tool call
            return value

        return fn

    def research(run: RunContext, input: Any) -> Any:
        question = input["question"]
        plan = run.step("plan", work("plan", {"queries": [f"{question} history", f"{question} today"]}))
        docs = run.step("search", work("search", [f"notes on {q}" for q in plan["queries"]]), input=plan)
        run.state.set({"status": "summarizing", "progress": 0.6})
        if crash[0]:
            crash[0] = False
            raise SimulatedCrash("the process died after `search` (simulated)")
        summary = run.step("summarize", work("summarize", " / ".join(docs)), input=docs)
        run.state.patch({"status": "finalizing", "progress": 0.9})
        return run.step("finalize", work("finalize", {"question": question, "answer": summary}))

    return research


def main(tide: Tidebase, out: Callable[[str], None] = print) -> int:
    """Runs the demo on `tide`'s database and prints the trace; returns a process exit code."""
    run_id = "demo-" + new_run_id()[4:16]
    trace: list[str] = []
    agent = research_agent(trace, [True])
    question = {"question": "tidal energy"}
    out(f"Tidebase demo: run {run_id}")
    out("\nfirst invocation")
    try:
        tide.run("research-agent", agent, run_id=run_id, input=question)
    except SimulatedCrash as exc:
        for name in trace:
            out(f"  executed  {name}")
        out(f"  crashed   {exc}")
    first = list(trace)
    trace.clear()
    out("\nsecond invocation, same run id")
    started = time.perf_counter()
    result = tide.run("research-agent", agent, run_id=run_id)
    elapsed = (time.perf_counter() - started) * 1000
    run = tide.runs.get(run_id)
    for step in run.steps:
        how = "executed " if step.key in trace else "replayed "
        out(f"  {how} {step.key:<10} ({'ran now' if step.key in trace else 'served from its checkpoint'})")
    out(f"\nresult: {result}")
    out(f"status: {run.status}, attempt {run.attempt}, resumed in {elapsed:.0f} ms")
    events = tide.runs.events(run_id)
    out("events: " + ", ".join(f"{e.seq}:{e.type}" for e in events))
    replayed = [s.key for s in run.steps if s.key not in trace]
    return 0 if replayed == first and run.status == "completed" else 1
