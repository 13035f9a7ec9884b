"""Durable Pydantic AI agents (`tidebase.integrations.pydantic_ai`), offline with the framework's own test models.

A support-desk model (a `FunctionModel`) calls every tool of the agent in one response, in parallel, then answers with
what the tools returned; the tools count their calls. Each test proves one promise of the integration against real
Postgres: a crash after any model request or tool call resumes without repeating either (the crash-test kit, sync and
asyncio), approvals are gates that survive a suspension, usage reaches the ledger and replays report it as saved, a
replay of another conversation is refused, and nothing runs outside a workflow.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import fastmcp  # imported at collection, not inside a test: see the comment above MCPToolset's import
import pytest
from effects import assert_each_run_called, assert_effects_within_contracts, count_call
from pydantic_ai import Agent

# fastmcp compiles its modules through beartype's import hook; on CPython 3.11 that compile fails with "AST constructor
# recursion depth mismatch" once an earlier test of the session has hit the recursion limit (the deeply nested bodies
# of tests/server/test_load_fuzz.py do), so both are imported at collection, before any test runs.
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.usage import RequestUsage

from tidebase import InputMismatch, RunSuspended, Tidebase
from tidebase.aio import AsyncTidebase
from tidebase.integrations import OutsideRun, ToolContract, current_idempotency_key
from tidebase.integrations.pydantic_ai import TidebaseAgent
from tidebase.testing import acrash_test, crash_test

PRICES = {"function:respond:": (2.0, 8.0)}  # USD per million input / output tokens


class Desk:
    """The support-desk model and its counters: calls of the model and of each tool, per run."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.instructions = "You are a support desk."

    def called(self, what: str) -> int:
        return sum(n for (t, _), n in self.calls.items() if t == what)

    @property
    def requests(self) -> int:
        return self.called("model")

    def respond(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        count_call(self.calls, "model")
        returns = [p for m in messages if isinstance(m, ModelRequest) for p in m.parts
                   if p.part_kind in ("tool-return", "retry-prompt")]
        if not returns:
            return ModelResponse(parts=[ToolCallPart(t.name, {"order_id": "42"}, tool_call_id=f"call-{t.name}")
                                        for t in info.function_tools],
                                 usage=RequestUsage(input_tokens=500, output_tokens=40))
        answer = "; ".join(sorted(f"{p.tool_name}={p.content}" for p in returns))
        return ModelResponse(parts=[TextPart(answer)], usage=RequestUsage(input_tokens=900, output_tokens=60))

    def agent(self, *, approval: bool = False, **options: Any) -> TidebaseAgent[None, str]:
        """The desk agent: `lookup` (pure), `refund` (an idempotent side effect, or one needing approval)."""
        agent = Agent(FunctionModel(self.respond), name="desk", instructions=lambda: self.instructions)

        @agent.tool_plain
        def lookup(order_id: str) -> str:
            count_call(self.calls, "lookup")
            return f"order {order_id} shipped"

        @agent.tool_plain(requires_approval=approval)
        def refund(order_id: str) -> str:
            count_call(self.calls, "refund")
            return f"refunded {order_id} with key {current_idempotency_key()}"

        contracts = {"refund": ToolContract(side_effects=["payments.refund"], idempotent=True)}
        return TidebaseAgent(agent, prices=PRICES, tool_contracts=contracts, **options)


def test_every_model_request_and_tool_call_survives_a_crash_sync(tide: Tidebase) -> None:
    """Crashed after each model request and tool call (and inside the side-effecting refund, before its checkpoint),
    a run_sync agent resumes to the same answer with no model request or tool call repeated, except the interrupted
    idempotent refund, which its contract re-runs once under the same idempotency key."""
    desk = Desk()
    durable = desk.agent()

    def support(run: Any, input: Any) -> Any:
        return durable.run_sync(input["question"]).output

    report = crash_test(tide, support, input={"question": "Where is order 42?"})

    assert report.steps[0] == "pydantic_ai:desk:model" and report.steps[-1] == "pydantic_ai:desk:model#2"
    assert sorted(report.steps[1:3]) == ["pydantic_ai:desk:tool:lookup:call-lookup",
                                         "pydantic_ai:desk:tool:refund:call-refund"]
    assert sorted((o.boundary.step.rsplit(":", 1)[-1], o.boundary.point, o.outcome) for o in report.outcomes) == [
        ("call-lookup", "after_commit", "resumed"), ("call-refund", "after_commit", "resumed"),
        ("call-refund", "before_commit", "resumed"), ("model", "after_commit", "resumed"),
        ("model#2", "after_commit", "resumed")]
    assert_each_run_called(report, desk.calls, "model", 2)  # no model request ever repeated, in any run
    assert_effects_within_contracts(report, desk.calls, {t: f"pydantic_ai:desk:tool:{t}:call-{t}"
                                                         for t in ("lookup", "refund")})
    refund = next(o for o in report.outcomes if o.boundary.point == "before_commit")
    assert desk.calls[("refund", refund.run_id)] == 2
    assert refund.executions["pydantic_ai:desk:tool:refund:call-refund"] == 2
    assert refund.result.endswith(f"refunded 42 with key {refund.run_id}:call-refund")


async def test_every_model_request_and_tool_call_survives_a_crash_async(atide: AsyncTidebase) -> None:
    """The same through `await agent.run(...)`: every boundary resumes to the uninterrupted answer, and the
    parallel tool calls have keys of their own whatever order they start in."""
    desk = Desk()
    durable = desk.agent()

    async def support(run: Any, input: Any) -> Any:
        return (await durable.run(input["question"])).output

    report = await acrash_test(atide, support, input={"question": "Where is order 42?"})

    assert len(report.outcomes) == 5 and all(o.outcome == "resumed" for o in report.outcomes)
    assert_each_run_called(report, desk.calls, "model", 2)
    assert_effects_within_contracts(report, desk.calls, {t: f"pydantic_ai:desk:tool:{t}:call-{t}"
                                                         for t in ("lookup", "refund")})
    assert report.result == f"lookup=order 42 shipped; refund=refunded 42 with key {report.run_id}:call-refund"


async def test_an_approval_is_a_gate_that_survives_suspension(atide: AsyncTidebase) -> None:
    """A tool that needs approval suspends the run at a gate in the inbox; once approved, the resumed run calls the
    tool once and repeats neither the model request nor the tool call made before the suspension."""
    desk = Desk()
    durable = desk.agent(approval=True)

    async def support(run: Any, input: Any) -> Any:
        return (await durable.run("Refund order 42")).output

    with pytest.raises(RunSuspended) as suspended:
        await atide.run("support", support, run_id="approve-1")
    (gate,) = await atide.gates.list()
    assert gate.id == suspended.value.gate_id
    assert gate.name == "pydantic_ai:desk:approve:refund:call-refund"
    assert gate.data == {"agent": "desk", "tool": "refund", "args": {"order_id": "42"}, "tool_call_id": "call-refund"}
    assert (desk.requests, desk.called("lookup"), desk.called("refund")) == (1, 1, 0)

    await atide.gates.resolve(gate.id, "approved", actor="alice")
    answer = await atide.run("support", support, run_id="approve-1")

    assert answer == "lookup=order 42 shipped; refund=refunded 42 with key approve-1:call-refund"
    assert (desk.requests, desk.called("lookup"), desk.called("refund")) == (2, 1, 1)
    assert await atide.run("support", support, run_id="approve-1") == answer  # a completed run: nothing runs again


def test_a_rejection_reaches_the_model_and_the_tool_never_runs(tide: Tidebase) -> None:
    """A rejected gate becomes the framework's denial, worded by the gate's payload: the model sees it and the refund
    never runs. The gate blocks (suspend=False) until its wait times out (approval_timeout=0 here), which suspends the
    run all the same; the decision taken meanwhile reaches the model when the run resumes."""
    desk = Desk()
    durable = desk.agent(approval=True, suspend=False, approval_timeout=0)

    def support(run: Any, input: Any) -> Any:
        return durable.run_sync("Refund order 42").output

    with pytest.raises(RunSuspended):  # the timeout passed: suspended all the same
        tide.run("support", support, run_id="reject-1")
    (gate,) = tide.gates.list()
    tide.gates.resolve(gate.id, "rejected", actor="bob", payload={"message": "refunds need a receipt"})

    assert tide.run("support", support, run_id="reject-1") == "lookup=order 42 shipped; refund=refunds need a receipt"
    assert (desk.called("lookup"), desk.called("refund")) == (1, 0)


async def test_usage_reaches_the_ledger_and_replays_report_it_saved(atide: AsyncTidebase) -> None:
    """Each model response is one `llm` usage row of its step with provider, model, tokens and the price table's
    cost; a run resumed after a crash reports the replayed requests' usage as saved."""
    desk = Desk()
    durable = desk.agent()

    async def support(run: Any, input: Any) -> Any:
        return (await durable.run("Where is order 42?")).output

    await atide.run("support", support, run_id="usage-1")
    report = await atide.runs.usage("usage-1")
    rows = sorted((r.step_key, r.kind, r.provider, r.model, r.input_tokens, r.output_tokens, r.cost_usd)
                  for r in report.records)
    assert rows == [
        ("pydantic_ai:desk:model", "llm", "function", "function:respond:", 500, 40, Decimal("0.00132")),
        ("pydantic_ai:desk:model#2", "llm", "function", "function:respond:", 900, 60, Decimal("0.00228")),
    ]

    crashed = await acrash_test(atide, support, name="support")
    resumed = next(o for o in crashed.outcomes if o.boundary.step == "pydantic_ai:desk:model")
    after_crash = await atide.runs.usage(resumed.run_id)
    assert (after_crash.saved_total.records, after_crash.saved_total.input_tokens,
            after_crash.saved_total.cost_usd) == (1, 500, Decimal("0.00132"))
    assert after_crash.spent_total.input_tokens == 500 + 900  # the crashed invocation's request, then the second


def test_a_replay_of_another_conversation_is_refused(tide: Tidebase) -> None:
    """A model request whose checkpoint was written for other messages raises InputMismatch on replay instead of
    returning the stored response; an agent with `check_inputs=False` replays its checkpoints all the same."""
    desk = Desk()
    agents = {"strict": desk.agent(), "lenient": desk.agent(check_inputs=False)}

    def support(run: Any, input: Any) -> Any:
        return agents[input["agent"]].run_sync("Where is order 42?").output

    for agent in agents:
        tide.run("support", support, run_id=agent, input={"agent": agent})
    desk.instructions = "You are a terse support desk."  # the conversation of any replay now differs
    for agent in agents:
        tide.runs.fork(agent, at_step="pydantic_ai:desk:model#2", new_run_id=f"{agent}-replayed")

    with pytest.raises(InputMismatch, match="step 'pydantic_ai:desk:model' of run 'strict-replayed'"):
        tide.run("support", support, run_id="strict-replayed")
    answer = tide.run("support", support, run_id="lenient-replayed")
    assert answer == "lookup=order 42 shipped; refund=refunded 42 with key lenient:call-refund"
    assert desk.requests == 4  # two per original run; the replays asked the model nothing


def test_an_agent_run_keeps_its_id_across_a_resume(tide: Tidebase) -> None:
    """The framework's own run id, stamped on every message, is the same on every invocation: crashed anywhere, a
    resumed agent run's replayed and new messages carry the one id the uninterrupted run had, `<run id>:pydantic_ai:
    <agent>` for the agent's first run in the workflow and `#2` for its second."""
    durable = Desk().agent()

    def support(run: Any, input: Any) -> Any:
        return [sorted({m.run_id for m in durable.run_sync(question).all_messages()})
                for question in ("Where is order 42?", "And order 43?")]

    report = crash_test(tide, support)

    assert report.result == [[f"{report.run_id}:pydantic_ai:desk"], [f"{report.run_id}:pydantic_ai:desk#2"]]
    assert len(report.outcomes) == 10 and all(o.outcome == "resumed" for o in report.outcomes)


def test_outside_a_workflow_the_agent_says_so(tide: Tidebase) -> None:
    """A durable agent run outside a workflow raises OutsideRun naming the agent, before any model request."""
    agent = TidebaseAgent(Agent(TestModel(), name="desk"))

    with pytest.raises(OutsideRun, match=r"TidebaseAgent\(desk\) runs inside a Tidebase workflow"):
        agent.run_sync("hello")


def test_repeated_calls_of_one_tool_each_have_their_own_checkpoint(tide: Tidebase) -> None:
    """The model calls `lookup` twice in one response and once more in the next: three steps, keyed by the tool call
    ids the model returned; crashed after each of them, every run resumes to the same answer with each call executed
    once (a call in flight beside the crashed one is pure and runs again, as its contract allows)."""
    calls: Counter[tuple[str, str]] = Counter()

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        count_call(calls, "model")
        returned = [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if p.part_kind == "tool-return"]
        orders = ["42", "43"] if not returned else ["44"] if len(returned) == 2 else []
        if orders:
            return ModelResponse(parts=[ToolCallPart("lookup", {"order_id": o}, tool_call_id=f"call-{o}")
                                        for o in orders])
        return ModelResponse(parts=[TextPart("; ".join(str(p.content) for p in returned))])

    agent = Agent(FunctionModel(respond), name="clerk")

    @agent.tool_plain
    def lookup(order_id: str) -> str:
        count_call(calls, f"lookup {order_id}")
        return f"order {order_id} shipped"

    durable = TidebaseAgent(agent)

    def clerk(run: Any, input: Any) -> Any:
        return durable.run_sync("Where are my orders?").output

    report = crash_test(tide, clerk)

    assert report.result == "order 42 shipped; order 43 shipped; order 44 shipped"
    keys = {o: f"pydantic_ai:clerk:tool:lookup:call-{o}" for o in ("42", "43", "44")}
    assert sorted(report.steps) == sorted(["pydantic_ai:clerk:model", "pydantic_ai:clerk:model#2",
                                           "pydantic_ai:clerk:model#3", *keys.values()])
    assert [o.outcome for o in report.outcomes] == ["resumed"] * 6
    assert_each_run_called(report, calls, "model", 3)
    assert_effects_within_contracts(report, calls, {f"lookup {o}": key for o, key in keys.items()})


async def test_an_mcp_toolsets_discovery_and_tool_calls_are_steps(atide: AsyncTidebase) -> None:
    """An MCP toolset (an in-process FastMCP server): its tool listing and each of its tool calls are steps, and a
    crash after any of them resumes with no repeated model request or MCP tool call."""
    calls: Counter[tuple[str, str]] = Counter()
    server = fastmcp.FastMCP("docs")

    @server.tool()
    def search(query: str) -> str:
        """Searches the docs."""
        count_call(calls, "search")
        return f"docs about {query}"

    agent = Agent(TestModel(), name="reader", toolsets=[MCPToolset(server, id="docs")])
    durable = TidebaseAgent(agent)

    async def reader(run: Any, input: Any) -> Any:
        return (await durable.run("Find the docs")).output

    report = await acrash_test(atide, reader)

    assert report.steps == ("pydantic_ai:reader:mcp_server__docs.get_tools", "pydantic_ai:reader:model",
                            "pydantic_ai:reader:tool:search:pyd_ai_tool_call_id__search", "pydantic_ai:reader:model#2")
    assert report.result == '{"search":"docs about a"}'
    assert [o.outcome for o in report.outcomes] == ["resumed"] * 4
    assert_each_run_called(report, calls, "search", 1)
