"""`python -m bench agents`: what durability costs an agent, per model request, and how many steps an agent turn is.

Offline models that answer at once stand in for the real ones, so that only the framework and Tidebase are measured.
Each row times single agent runs of one model request each (Pydantic AI `run_sync` / `run`, OpenAI Agents
`Runner.run_sync` / `Runner.run`); bare and durable runs alternate in `rounds` interleaved batches after `warmup`
untimed runs of each, and the report gives the median and the 90th percentile. The durable runs all happen inside
one Tidebase run (its model steps are `...:model`, `...:model#2`, ...), so durable minus bare is what one
checkpointed model request costs: its two commits (the usage record and the checkpoint; a model request writes no
`running` marker), hashing the request, the JSON round trip of the response, and the framework's own durability
machinery. The replayed rows invoke a fork of that run, whose every model request is served from its checkpoint
(one round trip each, to report the usage the replay saved).

The steps of an agent turn are counted on a turn whose model calls two tools (in one response) and then answers,
once per framework, and once more with the OpenAI Agents SDK's input and output guardrails.

It prints a report; it is not a test, and it never fails because of a number. It needs the `pydantic-ai` and
`openai-agents` extras.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agents import Agent as OpenAIAgent
from agents import (
    GuardrailFunctionOutput,
    InputGuardrail,
    Model,
    ModelResponse,
    OutputGuardrail,
    Runner,
    Usage,
    function_tool,
    set_tracing_disabled,
)
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, TextPart, ToolCallPart
from pydantic_ai.messages import ModelResponse as PydanticResponse
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from tidebase import Tidebase
from tidebase.aio import AsyncTidebase
from tidebase.integrations.openai_agents import TidebaseRunner
from tidebase.integrations.pydantic_ai import TidebaseAgent, TidebaseDurability

from .database import default_database_name, scratch_database

ANSWER = "the tide turns twice a day"
TOOLS = ("lookup", "weather")


@dataclass(frozen=True)
class AgentsConfig:
    """Timed runs per row (`requests`, split over `rounds` interleaved batches) after `warmup` untimed ones."""

    requests: int = 300
    warmup: int = 30
    rounds: int = 3

    @classmethod
    def smoke(cls) -> AgentsConfig:
        """A few runs per row: checks every path in seconds (CI)."""
        return cls(requests=6, warmup=2, rounds=2)


# -- the offline models --------------------------------------------------------------------------------------------

def pydantic_answer(messages: list[ModelMessage], info: AgentInfo) -> PydanticResponse:
    """Answers at once, after calling each of the agent's tools once (in one response) when it has tools."""
    returned = [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if p.part_kind == "tool-return"]
    if info.function_tools and not returned:
        return PydanticResponse(parts=[ToolCallPart(t.name, {"query": "tides"}, tool_call_id=f"call-{t.name}")
                                       for t in info.function_tools],
                                usage=RequestUsage(input_tokens=120, output_tokens=12))
    return PydanticResponse(parts=[TextPart(ANSWER)], usage=RequestUsage(input_tokens=120, output_tokens=12))


class OfflineModel(Model):
    """An OpenAI Agents model that answers at once, after calling each tool of the agent once when it has tools."""

    model = "offline"

    async def get_response(self, system_instructions: Any, input: Any, model_settings: Any, tools: Any,
                           output_schema: Any, handoffs: Any, tracing: Any, **kwargs: Any) -> ModelResponse:
        usage = Usage(requests=1, input_tokens=120, output_tokens=12, total_tokens=132)
        items = input if isinstance(input, list) else []
        if tools and not any(i.get("type") == "function_call_output" for i in items):
            return ModelResponse(output=[ResponseFunctionToolCall(
                type="function_call", call_id=f"call-{t.name}", name=t.name, arguments=json.dumps({"query": "tides"}),
                status="completed") for t in tools], usage=usage, response_id=None)
        return ModelResponse(output=[ResponseOutputMessage(
            id="msg", type="message", role="assistant", status="completed",
            content=[ResponseOutputText(type="output_text", text=ANSWER, annotations=[])])], usage=usage,
            response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def tool_result(query: str) -> str:
    return f"notes on {query}"


# -- timing --------------------------------------------------------------------------------------------------------

Rows = dict[str, list[float]]


def timed(calls: int, fn: Callable[[], Any]) -> list[float]:
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


async def atimed(calls: int, fn: Callable[[], Awaitable[Any]]) -> list[float]:
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - start)
    return out


def interleaved(config: AgentsConfig, cases: dict[str, Callable[[], Any]]) -> Rows:
    """Each case `warmup` times untimed, then `requests` timed runs in `rounds` alternating batches."""
    for fn in cases.values():
        timed(config.warmup, fn)
    samples: Rows = {label: [] for label in cases}
    per_round = max(1, config.requests // config.rounds)
    for _ in range(config.rounds):
        for label, fn in cases.items():
            samples[label] += timed(per_round, fn)
    return samples


async def ainterleaved(config: AgentsConfig, cases: dict[str, Callable[[], Awaitable[Any]]]) -> Rows:
    for fn in cases.values():
        await atimed(config.warmup, fn)
    samples: Rows = {label: [] for label in cases}
    per_round = max(1, config.requests // config.rounds)
    for _ in range(config.rounds):
        for label, fn in cases.items():
            samples[label] += await atimed(per_round, fn)
    return samples


def fork_all(tide: Tidebase, run_id: str) -> str:
    """A fork of run `run_id` with every step of it, to replay."""
    last = tide.runs.get(run_id).steps[-1].key
    return tide.runs.fork(run_id, at_step=last, new_run_id=f"{run_id}-replay").id


async def afork_all(tide: AsyncTidebase, run_id: str) -> str:
    last = (await tide.runs.get(run_id)).steps[-1].key
    return (await tide.runs.fork(run_id, at_step=last, new_run_id=f"{run_id}-replay")).id


# -- the measurements ----------------------------------------------------------------------------------------------

def measure_sync(dsn: str, config: AgentsConfig) -> tuple[Rows, Rows]:
    """The sync API: Pydantic AI `run_sync` and OpenAI Agents `run_sync`, bare and durable; then replayed."""
    agent = Agent(FunctionModel(pydantic_answer), name="bench")
    durable = TidebaseAgent(agent)
    oa_agent = OpenAIAgent(name="bench", model=OfflineModel())
    samples: dict[str, Rows] = {}

    def workflow(run: Any, input: Any) -> None:
        samples["now"] = interleaved(config, {
            "pydantic_ai bare": lambda: agent.run_sync("why?"),
            "pydantic_ai durable": lambda: durable.run_sync("why?"),
            "openai_agents bare": lambda: Runner.run_sync(oa_agent, "why?"),
            "openai_agents durable": lambda: TidebaseRunner.run_sync(oa_agent, "why?"),
        })

    with Tidebase(dsn) as tide:
        run_id = f"bench-sync-{uuid.uuid4().hex[:8]}"
        tide.run("bench-sync", workflow, run_id=run_id)
        executed = samples["now"]
        tide.run("bench-sync", workflow, run_id=fork_all(tide, run_id))
    return executed, samples["now"]


async def measure_async(dsn: str, config: AgentsConfig) -> tuple[Rows, Rows]:
    """The asyncio API: Pydantic AI `run` (wrapped, and with the capability attached) and OpenAI Agents `run`."""
    agent = Agent(FunctionModel(pydantic_answer), name="bench")
    durable = TidebaseAgent(agent)
    attached = Agent(FunctionModel(pydantic_answer), name="attached", capabilities=[TidebaseDurability()])
    oa_agent = OpenAIAgent(name="bench", model=OfflineModel())
    samples: dict[str, Rows] = {}

    async def workflow(run: Any, input: Any) -> None:
        samples["now"] = await ainterleaved(config, {
            "pydantic_ai bare": lambda: agent.run("why?"),
            "pydantic_ai durable": lambda: durable.run("why?"),
            "pydantic_ai attached": lambda: attached.run("why?"),
            "openai_agents bare": lambda: Runner.run(oa_agent, "why?"),
            "openai_agents durable": lambda: TidebaseRunner.run(oa_agent, "why?"),
        })

    async with AsyncTidebase(dsn) as tide:
        run_id = f"bench-async-{uuid.uuid4().hex[:8]}"
        await tide.run("bench-async", workflow, run_id=run_id)
        executed = samples["now"]
        await tide.run("bench-async", workflow, run_id=await afork_all(tide, run_id))
    return executed, samples["now"]


async def count_turn_steps(dsn: str) -> dict[str, list[str]]:
    """The step keys of one agent turn whose model calls two tools and then answers, per framework."""
    agent = Agent(FunctionModel(pydantic_answer), name="turn")
    for name in TOOLS:
        agent.tool_plain(name=name)(tool_result)
    durable = TidebaseAgent(agent)
    tools = [function_tool(tool_result, name_override=name) for name in TOOLS]
    oa_agent = OpenAIAgent(name="turn", model=OfflineModel(), tools=tools)

    def passes(*args: Any) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered=False)

    guarded = oa_agent.clone(input_guardrails=[InputGuardrail(passes, name="input")],
                             output_guardrails=[OutputGuardrail(passes, name="output")])
    turns: dict[str, Callable[[], Awaitable[Any]]] = {
        "Pydantic AI": lambda: durable.run("why?"),
        "OpenAI Agents SDK": lambda: TidebaseRunner.run(oa_agent, "why?"),
        "OpenAI Agents SDK, with an input and an output guardrail": lambda: TidebaseRunner.run(guarded, "why?"),
    }
    steps: dict[str, list[str]] = {}
    async with AsyncTidebase(dsn) as tide:
        for label, turn in turns.items():
            async def workflow(run: Any, input: Any, turn: Callable[[], Awaitable[Any]] = turn) -> None:
                await turn()

            run_id = f"turn-{uuid.uuid4().hex[:8]}"
            await tide.run("turn", workflow, run_id=run_id)
            steps[label] = [s.key for s in (await tide.runs.get(run_id)).steps]
    return steps


# -- the report ----------------------------------------------------------------------------------------------------

ROWS = (  # (label, API, bare row, durable row)
    ("Pydantic AI run_sync", "sync", "pydantic_ai bare", "pydantic_ai durable"),
    ("Pydantic AI run", "async", "pydantic_ai bare", "pydantic_ai durable"),
    ("Pydantic AI run, TidebaseDurability attached", "async", "pydantic_ai bare", "pydantic_ai attached"),
    ("OpenAI Agents Runner.run_sync", "sync", "openai_agents bare", "openai_agents durable"),
    ("OpenAI Agents Runner.run", "async", "openai_agents bare", "openai_agents durable"),
)


def ms(values: list[float], q: float = 0.5) -> float:
    """The median (or the `q` quantile) of `values`, in milliseconds."""
    ordered = sorted(values)
    if q == 0.5:
        return statistics.median(ordered) * 1e3
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3


def cell(values: list[float]) -> str:
    return f"{ms(values):6.3f} ({ms(values, 0.9):6.3f})"


def render(command: str, config: AgentsConfig, measured: dict[str, tuple[Rows, Rows]],
           steps: dict[str, list[str]]) -> str:
    lines = [command, "", f"one model request per agent run; {config.requests} timed runs per row after "
             f"{config.warmup} untimed, in {config.rounds} interleaved rounds; ms, median (p90)", "",
             f"{'':46} {'bare':>15} {'durable':>15} {'overhead':>9} {'replayed':>15}"]
    for label, api, bare_key, durable_key in ROWS:
        executed, replayed = measured[api]
        bare, durable, again = executed[bare_key], executed[durable_key], replayed[durable_key]
        lines.append(f"{label:46} {cell(bare)} {cell(durable)} {ms(durable) - ms(bare):9.3f} {cell(again)}")
    lines += ["", "steps of one agent turn (the model calls two tools in one response, then answers)"]
    for label, keys in steps.items():
        lines.append(f"  {label}: {len(keys)} steps: {', '.join(keys)}")
    return "\n".join(lines)


def run_agents(admin_dsn: str, config: AgentsConfig, database: str | None, command: str) -> int:
    set_tracing_disabled(True)
    with scratch_database(admin_dsn, database or default_database_name()) as dsn:
        print("sync API ...", file=sys.stderr, flush=True)
        measured = {"sync": measure_sync(dsn, config)}
        print("asyncio API ...", file=sys.stderr, flush=True)
        measured["async"] = asyncio.run(measure_async(dsn, config))
        steps = asyncio.run(count_turn_steps(dsn))
    print(render(command, config, measured, steps))
    return 0
