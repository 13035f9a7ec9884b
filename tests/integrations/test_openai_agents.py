"""Durable OpenAI Agents SDK runs (`tidebase.integrations.openai_agents`), offline with a `Model` written here.

The scripted desk model hands off to the agent's first handoff, then calls every function tool of the current agent
(call id `call-<tool>`), then answers with what they returned; it and the tools and guardrails count their calls.
Each test proves one promise of the integration against real Postgres: a crash after any model call, tool call or
guardrail resumes without repeating one (the crash-test kit, sync and asyncio), with handoffs and guardrails
replaying as they ran; approvals are gates that survive a suspension; usage reaches the ledger; a tripped guardrail
trips again on replay; and nothing runs outside a workflow.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from agents import (
    Agent,
    GuardrailFunctionOutput,
    InputGuardrail,
    InputGuardrailTripwireTriggered,
    Model,
    ModelResponse,
    OutputGuardrail,
    RunContextWrapper,
    Usage,
    function_tool,
    set_tracing_disabled,
)
from agents.testing import ScriptedModel, assistant_message, function_call
from effects import assert_each_run_called, assert_effects_within_contracts, count_call
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from tidebase import RunSuspended, Tidebase
from tidebase.aio import AsyncTidebase
from tidebase.integrations import OutsideRun, ToolContract
from tidebase.integrations.openai_agents import TidebaseRunner
from tidebase.testing import acrash_test, crash_test

set_tracing_disabled(True)  # no trace export: the tests are offline
PRICES = {"desk-1": (2.0, 8.0)}


class DeskModel(Model):
    """Hands off first (when the agent can), then calls each of the agent's tools once, then answers. `counts`
    counts its calls, `per_run` its calls per run."""

    model = "desk-1"

    def __init__(self, counts: Counter[str], per_run: Counter[tuple[str, str]]) -> None:
        self.counts = counts
        self.per_run = per_run

    async def get_response(
        self, system_instructions: str | None, input: Any, model_settings: Any, tools: list[Any], output_schema: Any,
        handoffs: list[Any], tracing: Any, *, previous_response_id: str | None, conversation_id: str | None,
        prompt: Any,
    ) -> ModelResponse:
        self.counts["model"] += 1
        count_call(self.per_run, "model")
        items = input if isinstance(input, list) else [{"role": "user", "content": input}]
        outputs = {i["call_id"]: i["output"] for i in items if i.get("type") == "function_call_output"}
        usage = Usage(requests=1, input_tokens=300, output_tokens=30, total_tokens=330)
        calls = [(h.tool_name, "{}") for h in handoffs[:1] if f"call-{h.tool_name}" not in outputs] or [
            (t.name, json.dumps({"order_id": "42"})) for t in tools if f"call-{t.name}" not in outputs]
        if calls:
            return ModelResponse(output=[ResponseFunctionToolCall(
                type="function_call", call_id=f"call-{name}", name=name, arguments=args, id=f"fc-{name}",
                status="completed") for name, args in calls], usage=usage, response_id=None)
        text = "; ".join(f"{call[5:]}={out}" for call, out in sorted(outputs.items()) if "transfer" not in call)
        return ModelResponse(output=[ResponseOutputMessage(
            id="msg", type="message", role="assistant", status="completed",
            content=[ResponseOutputText(type="output_text", text=text, annotations=[])])], usage=usage,
            response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def desk(counts: Counter[str], *, approval: bool = False, calls: Counter[tuple[str, str]] | None = None) -> Agent[Any]:
    """A triage agent with an input guardrail that hands off to a support agent with two tools (the refund may need
    approval) and an output guardrail. `counts` counts calls of the model, tools and guardrails; `calls`, when
    given, the same per run."""
    per_run: Counter[tuple[str, str]] = Counter() if calls is None else calls
    model = DeskModel(counts, per_run)

    @function_tool
    def lookup(order_id: str) -> str:
        """Looks an order up."""
        counts["lookup"] += 1
        count_call(per_run, "lookup")
        return f"order {order_id} shipped"

    @function_tool(needs_approval=approval)
    def refund(order_id: str) -> str:
        """Refunds an order."""
        counts["refund"] += 1
        count_call(per_run, "refund")
        return f"refunded {order_id}"

    def polite(ctx: RunContextWrapper[Any], agent: Agent[Any], value: Any) -> GuardrailFunctionOutput:
        counts["polite"] += 1
        count_call(per_run, "polite")
        return GuardrailFunctionOutput(output_info={"checked": str(value)},
                                       tripwire_triggered="forbidden" in str(value))

    async def on_topic(ctx: RunContextWrapper[Any], agent: Agent[Any], value: Any) -> GuardrailFunctionOutput:
        counts["on_topic"] += 1
        count_call(per_run, "on_topic")
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered=False)

    support = Agent(name="support", model=model, tools=[lookup, refund],
                    output_guardrails=[OutputGuardrail(on_topic, name="on_topic")])
    return Agent(name="triage", model=model, handoffs=[support],
                 input_guardrails=[InputGuardrail(polite, name="polite", run_in_parallel=False)])


def test_every_model_call_tool_call_and_guardrail_survives_a_crash_sync(tide: Tidebase) -> None:
    """Crashed after each model call, tool call and guardrail (and inside the side-effecting refund before its
    checkpoint), a run_sync run resumes through the handoff to the same answer, and nothing ran twice but what the
    refund's idempotent contract re-runs."""
    counts: Counter[str] = Counter()
    calls: Counter[tuple[str, str]] = Counter()
    agent = desk(counts, calls=calls)
    contracts = {"refund": ToolContract(side_effects=["payments.refund"], idempotent=True)}

    def support(run: Any, input: Any) -> Any:
        result = TidebaseRunner.run_sync(agent, input["question"], prices=PRICES, tool_contracts=contracts)
        return {"agent": result.last_agent.name, "answer": result.final_output}

    report = crash_test(tide, support, input={"question": "Where is order 42?"})

    assert report.result == {"agent": "support", "answer": "lookup=order 42 shipped; refund=refunded 42"}
    assert sorted(report.steps) == sorted([
        "openai_agents:triage:guardrail:polite", "openai_agents:triage:model",
        "openai_agents:support:model", "openai_agents:support:tool:lookup:call-lookup",
        "openai_agents:support:tool:refund:call-refund", "openai_agents:support:model#2",
        "openai_agents:support:guardrail:on_topic"])
    assert len(report.outcomes) == 8 and all(o.outcome == "resumed" for o in report.outcomes)
    for what, times in (("model", 3), ("polite", 1), ("on_topic", 1)):  # in every run, never repeated
        assert_each_run_called(report, calls, what, times)
    assert_effects_within_contracts(report, calls, {t: f"openai_agents:support:tool:{t}:call-{t}"
                                                    for t in ("lookup", "refund")})


async def test_every_model_call_and_tool_call_survives_a_crash_async(atide: AsyncTidebase) -> None:
    """The same through `await TidebaseRunner.run(...)`, with a refund whose unkeyed side effect parks the run when a
    crash interrupts it, the expected outcome of its contract."""
    counts: Counter[str] = Counter()
    calls: Counter[tuple[str, str]] = Counter()
    agent = desk(counts, calls=calls)
    contracts = {"refund": ToolContract(side_effects=["payments.refund"])}

    async def support(run: Any, input: Any) -> Any:
        return (await TidebaseRunner.run(agent, input["question"], tool_contracts=contracts)).final_output

    report = await acrash_test(atide, support, input={"question": "Where is order 42?"})

    refund = "openai_agents:support:tool:refund:call-refund"
    assert report.result == "lookup=order 42 shipped; refund=refunded 42"
    # Parked where a crash interrupted the refund: at its own boundary, and wherever the crash of the lookup running
    # beside it caught it in flight; never a second refund.
    assert "before_commit" in {o.boundary.point for o in report.parked}
    assert {o.parked for o in report.parked} == {refund}
    assert_effects_within_contracts(report, calls, {t: f"openai_agents:support:tool:{t}:call-{t}"
                                                    for t in ("lookup", "refund")})


def test_an_approval_is_a_gate_that_survives_suspension(tide: Tidebase) -> None:
    """A tool with needs_approval suspends the run at a gate in the inbox; approved, the resumed run calls it once
    and repeats no model call, tool call or guardrail made before the suspension."""
    counts: Counter[str] = Counter()
    agent = desk(counts, approval=True)

    def support(run: Any, input: Any) -> Any:
        return TidebaseRunner.run_sync(agent, "Refund order 42").final_output

    with pytest.raises(RunSuspended) as suspended:
        tide.run("support", support, run_id="approve-1")
    (gate,) = tide.gates.list()
    assert (gate.id, gate.name) == (suspended.value.gate_id, "openai_agents:support:approve:refund:call-refund")
    assert gate.data == {"agent": "support", "tool": "refund", "args": {"order_id": "42"}, "call_id": "call-refund"}
    assert counts == Counter(model=2, polite=1, lookup=1)

    tide.gates.resolve(gate.id, "approved", actor="alice")

    assert tide.run("support", support, run_id="approve-1") == "lookup=order 42 shipped; refund=refunded 42"
    assert counts == Counter(model=3, polite=1, lookup=1, refund=1, on_topic=1)


async def test_a_rejection_reaches_the_model_and_usage_reaches_the_ledger(atide: AsyncTidebase) -> None:
    """A rejected gate's message is what the model sees instead of the refund, which never runs; each model call is
    one priced `llm` usage row of its step."""
    counts: Counter[str] = Counter()
    agent = desk(counts, approval=True)

    async def support(run: Any, input: Any) -> Any:
        return (await TidebaseRunner.run(agent, "Refund order 42", prices=PRICES)).final_output

    with pytest.raises(RunSuspended) as suspended:
        await atide.run("support", support, run_id="reject-1")
    await atide.gates.resolve(str(suspended.value.gate_id), "rejected", actor="bob",
                              payload={"message": "refunds need a receipt"})

    answer = await atide.run("support", support, run_id="reject-1")
    assert answer == "lookup=order 42 shipped; refund=refunds need a receipt"
    assert counts["refund"] == 0
    usage = await atide.runs.usage("reject-1")
    assert sorted((r.step_key, r.kind, r.model, r.input_tokens, r.output_tokens, r.cost_usd)
                  for r in usage.records if not r.saved) == [
        ("openai_agents:support:model", "llm", "desk-1", 300, 30, Decimal("0.00084")),
        ("openai_agents:support:model#2", "llm", "desk-1", 300, 30, Decimal("0.00084")),
        ("openai_agents:triage:model", "llm", "desk-1", 300, 30, Decimal("0.00084")),
    ]
    assert usage.saved_total.records == 2  # the resume replayed the two calls made before the suspension


def test_a_tripped_guardrail_trips_again_on_replay(tide: Tidebase) -> None:
    """A guardrail's recorded verdict replays: the tripwire fires again on the next invocation without the guardrail
    running again, and no model call is made either time."""
    counts: Counter[str] = Counter()
    agent = desk(counts)

    def support(run: Any, input: Any) -> Any:
        return TidebaseRunner.run_sync(agent, "something forbidden").final_output

    for _ in range(2):
        with pytest.raises(InputGuardrailTripwireTriggered):
            tide.run("support", support, run_id="tripped-1")

    assert counts == Counter(polite=1)
    (step,) = tide.runs.get("tripped-1").steps
    assert (step.key, step.output) == ("openai_agents:triage:guardrail:polite",
                                       {"output_info": {"checked": "something forbidden"},
                                        "tripwire_triggered": True})


@pytest.mark.timeout(60)
def test_more_parallel_sync_tools_than_the_loops_executor_has_workers(tide: Tidebase) -> None:
    """A sync workflow whose model calls more sync tools at once than the event loop's default executor has threads
    finishes: the steps do not wait in that executor for bodies that need it too."""
    n = min(32, (os.cpu_count() or 1) + 4) + 1  # asyncio's default executor size, plus one

    def tool(i: int) -> Any:
        @function_tool(name_override=f"tool_{i}")
        def add(x: int) -> int:
            """Adds the tool's number."""
            return x + i

        return add

    model = ScriptedModel([[function_call(f"tool_{i}", {"x": 1}, call_id=f"call-{i}") for i in range(n)],
                           [assistant_message("done")]])
    agent = Agent(name="many", model=model, tools=[tool(i) for i in range(n)])

    def many(run: Any, input: Any) -> Any:
        return TidebaseRunner.run_sync(agent, "go").final_output

    assert tide.run("many", many, run_id="many-1") == "done"
    assert len(tide.runs.get("many-1").steps) == n + 2


async def test_outside_a_workflow_the_runner_says_so() -> None:
    """TidebaseRunner outside a workflow raises OutsideRun before any model call."""
    counts: Counter[str] = Counter()

    with pytest.raises(OutsideRun, match=r"TidebaseRunner\.run runs inside a Tidebase workflow"):
        await TidebaseRunner.run(desk(counts), "hello")
    assert counts == Counter()
