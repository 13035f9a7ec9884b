"""A durable Pydantic AI support agent: every model request and tool call is a checkpointed step, the refund needs a
human's approval (a Tidebase gate), and the run survives a crash.

    python examples/pydantic_ai_support.py                 # offline: Pydantic AI's TestModel plays the model
    OPENAI_API_KEY=sk-... python examples/pydantic_ai_support.py   # a real model (openai:gpt-4.1-mini)

It needs `pip install "tidebase-postgres[pydantic-ai]"` (and, for the real model, the `openai` package) and a
database: TIDEBASE_DATABASE_URL, else the embedded PostgreSQL. The script runs the workflow until it suspends at the
refund's gate, approves the refund as "alice", invokes the run again (the model requests and the lookup are replayed
from their checkpoints, not repeated), and prints the steps and the usage the replay saved.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.models.test import TestModel

from tidebase import RunSuspended, Tidebase
from tidebase.integrations import ToolContract, current_idempotency_key
from tidebase.integrations.pydantic_ai import TidebaseAgent

MODEL: Any = "openai:gpt-4.1-mini" if os.environ.get("OPENAI_API_KEY") else TestModel()

agent = Agent(MODEL, name="support", instructions="You help customers with their orders. Look orders up before "
              "refunding them.")


@agent.tool_plain
def lookup_order(order_id: str) -> str:
    """Looks an order up in the shop's database."""
    return f"order {order_id}: delivered damaged, 49 EUR"


@agent.tool_plain(requires_approval=True)
def refund(order_id: str) -> str:
    """Refunds an order in full."""
    # A real payment API would get the idempotency key, so that a refund re-run after a crash is deduplicated.
    return f"refunded order {order_id} (idempotency key {current_idempotency_key()})"


durable = TidebaseAgent(
    agent,
    prices={"gpt-4.1-mini": (0.40, 1.60)},  # USD per million input / output tokens
    tool_contracts={"refund": ToolContract(side_effects=["payments.refund"], idempotent=True)},
)


def support(run: Any, input: dict[str, str]) -> Any:
    """The workflow: one agent turn on the customer's question."""
    return durable.run_sync(input["question"]).output


def main() -> None:
    tide = Tidebase()
    run_id = f"support-{uuid.uuid4().hex[:8]}"
    question = {"question": "My order 42 arrived broken. Can I get a refund?"}
    try:
        print(tide.run("support", support, run_id=run_id, input=question))
    except RunSuspended as waiting:
        gate = tide.gates.get(str(waiting.gate_id))
        print(f"waiting for approval: {gate.prompt}")
        tide.gates.resolve(gate.id, "approved", actor="alice")
        print(tide.run("support", support, run_id=run_id))  # resumes after the gate
    print("steps:", [step.key for step in tide.runs.get(run_id).steps])
    usage = tide.runs.usage(run_id)
    print(f"spent {usage.spent_total.input_tokens} input tokens; the resume saved {usage.saved_total.input_tokens}")
    tide.close()


if __name__ == "__main__":
    main()
