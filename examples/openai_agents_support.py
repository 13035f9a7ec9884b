"""A durable OpenAI Agents SDK support desk: a triage agent hands off to a support agent whose refund needs a human's
approval; every model call, tool call and guardrail is a checkpointed step, and the approval is a Tidebase gate.

    python examples/openai_agents_support.py                   # offline: a scripted model stands in
    OPENAI_API_KEY=sk-... python examples/openai_agents_support.py   # a real model (gpt-4.1-mini)

It needs `pip install "tidebase-postgres[openai-agents]"` and a database: TIDEBASE_DATABASE_URL, else the embedded
PostgreSQL. The script runs the workflow (asyncio API) until it suspends at the refund's gate, approves it, invokes the
run again, and prints the steps and the usage.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any

from agents import (
    Agent,
    GuardrailFunctionOutput,
    InputGuardrail,
    Model,
    ModelResponse,
    Usage,
    function_tool,
    set_tracing_disabled,
)
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from tidebase import RunSuspended
from tidebase.aio import AsyncTidebase
from tidebase.integrations import ToolContract
from tidebase.integrations.openai_agents import TidebaseRunner


class OfflineModel(Model):
    """Stands in for a real model: hands off when it can, calls each tool of the agent once, then sums up."""

    model = "offline"

    async def get_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any,
                           output_schema: Any, handoffs: Any, tracing: Any, **kwargs: Any) -> ModelResponse:
        items = input if isinstance(input, list) else []
        done = {i["call_id"]: i["output"] for i in items if i.get("type") == "function_call_output"}
        calls = [(h.tool_name, "{}") for h in handoffs if f"call-{h.tool_name}" not in done][:1] or [
            (t.name, json.dumps({"order_id": "42"})) for t in tools if f"call-{t.name}" not in done]
        usage = Usage(requests=1, input_tokens=250, output_tokens=25, total_tokens=275)
        if calls:
            return ModelResponse(output=[ResponseFunctionToolCall(
                type="function_call", call_id=f"call-{name}", name=name, arguments=args, status="completed")
                for name, args in calls], usage=usage, response_id=None)
        text = "; ".join(str(out) for call, out in done.items() if "transfer" not in call)
        return ModelResponse(output=[ResponseOutputMessage(
            id="msg", type="message", role="assistant", status="completed",
            content=[ResponseOutputText(type="output_text", text=text, annotations=[])])], usage=usage,
            response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


MODEL: Any = "gpt-4.1-mini" if os.environ.get("OPENAI_API_KEY") else OfflineModel()
set_tracing_disabled(not os.environ.get("OPENAI_API_KEY"))


@function_tool
def lookup_order(order_id: str) -> str:
    """Looks an order up in the shop's database."""
    return f"order {order_id}: delivered damaged, 49 EUR"


@function_tool(needs_approval=True)
def refund(order_id: str) -> str:
    """Refunds an order in full."""
    return f"refunded order {order_id}"


def on_topic(ctx: Any, agent: Any, value: Any) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(output_info=None, tripwire_triggered="lottery" in str(value))


support_agent = Agent(name="support", model=MODEL, instructions="Look orders up before refunding them.",
                      tools=[lookup_order, refund])
triage = Agent(name="triage", model=MODEL, instructions="Hand customers over to support.", handoffs=[support_agent],
               input_guardrails=[InputGuardrail(on_topic, name="on_topic")])


async def desk(run: Any, input: dict[str, str]) -> Any:
    """The workflow: one run of the triage agent on the customer's question."""
    result = await TidebaseRunner.run(
        triage, input["question"], prices={"gpt-4.1-mini": (0.40, 1.60)},
        tool_contracts={"refund": ToolContract(side_effects=["payments.refund"], idempotent=True)})
    return result.final_output


async def main() -> None:
    async with AsyncTidebase() as tide:
        run_id = f"desk-{uuid.uuid4().hex[:8]}"
        question = {"question": "My order 42 arrived broken. Can I get a refund?"}
        try:
            print(await tide.run("desk", desk, run_id=run_id, input=question))
        except RunSuspended as waiting:
            gate = await tide.gates.get(str(waiting.gate_id))
            print(f"waiting for approval: {gate.prompt}")
            await tide.gates.resolve(gate.id, "approved", actor="alice")
            print(await tide.run("desk", desk, run_id=run_id))  # resumes after the gate
        print("steps:", [step.key for step in (await tide.runs.get(run_id)).steps])
        usage = await tide.runs.usage(run_id)
        print(f"spent {usage.spent_total.input_tokens} input tokens; the resume saved "
              f"{usage.saved_total.input_tokens}")


if __name__ == "__main__":
    asyncio.run(main())
