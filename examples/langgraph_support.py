"""A LangGraph support graph whose thread is stored in Tidebase: a refund waits for a human's approval (LangGraph's
`interrupt()`), and a new saver, as another process would, resumes it with `Command(resume=...)`.

    python examples/langgraph_support.py

It runs offline (the nodes are plain functions standing in for model calls) and needs `pip install
"tidebase-postgres[langgraph]"` and a database: TIDEBASE_DATABASE_URL, else the embedded PostgreSQL. It prints the
approval question, the answer after the approval, the thread's history, and the Tidebase run that holds the thread
(`tidebase serve` shows it in the Studio, with one event per checkpoint).
"""

from __future__ import annotations

import operator
import uuid
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from tidebase import Tidebase
from tidebase.integrations.langgraph import TidebaseSaver


class Ticket(TypedDict):
    question: str
    order: str
    log: Annotated[list[str], operator.add]


def look_up(state: Ticket) -> dict[str, Any]:
    """Stands in for a model call that finds the order in the question."""
    return {"order": "42", "log": ["order 42: delivered damaged, 49 EUR"]}


def approve(state: Ticket) -> dict[str, Any]:
    """Waits for a human: the graph stops here, and its thread waits in Postgres until someone answers."""
    decision = interrupt({"question": f"Refund order {state['order']} in full?"})
    return {"log": [f"refund {'approved' if decision['approved'] else 'denied'} by {decision['actor']}"]}


def reply(state: Ticket) -> dict[str, Any]:
    """Stands in for the model's answer to the customer."""
    verdict = "refunded" if any("approved" in line for line in state["log"]) else "not refunded"
    return {"log": [f"reply: your order {state['order']} was {verdict}"]}


builder = StateGraph(Ticket)
builder.add_node("look_up", look_up)
builder.add_node("approve", approve)
builder.add_node("reply", reply)
builder.add_edge(START, "look_up")
builder.add_edge("look_up", "approve")
builder.add_edge("approve", "reply")
builder.add_edge("reply", END)


def main() -> None:
    tide = Tidebase()
    config: Any = {"configurable": {"thread_id": f"ticket-{uuid.uuid4().hex[:8]}"}}

    # The first process: runs the graph until the approval, then hands the thread back (the `with` block).
    with TidebaseSaver(tide) as saver:
        graph = builder.compile(checkpointer=saver)
        out = graph.invoke({"question": "My order 42 arrived broken. Can I get a refund?", "log": []}, config)
        print("waiting for approval:", out["__interrupt__"][0].value["question"])

    # Later, anywhere: a new saver finds the thread where it stopped and resumes it with the human's answer.
    with TidebaseSaver(tide) as saver:
        graph = builder.compile(checkpointer=saver)
        out = graph.invoke(Command(resume={"approved": True, "actor": "alice"}), config)
        print("answer:", out["log"][-1])
        history = list(graph.get_state_history(config))
        print("history:", " <- ".join(f"{s.metadata['source']}:{s.metadata['step']}" for s in history))
        run_id = saver.run_id(config["configurable"]["thread_id"])

    run = tide.runs.get(run_id)
    events = tide.runs.events(run_id)
    checkpoints = sum(e.type == "langgraph.checkpoint" for e in events)
    print(f"thread run: {run.id} ({run.status}), {checkpoints} checkpoints in {len(events)} events")
    tide.close()


if __name__ == "__main__":
    main()
