"""Durable OpenAI Agents SDK runs: `TidebaseRunner.run` / `run_sync` replace `Runner.run` / `Runner.run_sync` inside
a Tidebase workflow, and every model call and function-tool call becomes a step of the workflow's run.

```python
async def support(run, input):                                  # any Tidebase workflow
    result = await TidebaseRunner.run(agent, input["question"])
    return result.final_output
```

Nothing is decorated by the user. For each run, the starting agent and every agent it can hand off to are cloned with
a model that runs each `get_response` as step `openai_agents:<agent>:model` (`#2`, ... in order; the same model and
settings the SDK would resolve, from the run config, the agent or the model provider), with function tools whose
invocation is step `openai_agents:<agent>:tool:<tool>:<call id>` (the call id the model returned, replayed with the
model step, so tools the SDK runs concurrently get keys independent of their order), and with input and output
guardrails that are steps `openai_agents:<agent>:guardrail:<name>`. A model step stores the SDK's `ModelResponse` in
its JSON form and rebuilds it with a pydantic type adapter, on first execution as on replay, so the run sees the same
objects either way. Its input hash covers the system instructions and the input items, so a replay for another
conversation raises InputMismatch (`check_inputs=False` turns that off). A tool step returns the JSON form of the
tool's output (what the SDK then shows the model), the same on replay. Handoffs replay with the model steps that
chose them; a guardrail's recorded verdict (its tripwire and the JSON form of its output info) replays too.

Approvals: a function tool with `needs_approval` interrupts the SDK's run; each interruption becomes gate
`openai_agents:<agent>:approve:<tool>:<call id>` of the Tidebase run (created once, visible in the gate inbox), and its
decision approves or rejects the call in the SDK's run state (`payload={"message": ...}` words a rejection) before
the run continues. By default the Tidebase run suspends at a pending gate (RunSuspended); invoke it again once the
gate is resolved. Usage: each model response's tokens go to the usage ledger (kind `llm`), priced by `prices`.

Deliberately not here: streaming (`Runner.run_streamed`: a durable step needs the whole response), tools of MCP
servers (the SDK builds them per turn, outside the agent's `tools`; they run as in a bare run), and `on_handoff`
callbacks, which run again on replay like any code between steps.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import json
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import Decimal
from typing import Any

try:
    from agents import (
        Agent,
        FunctionTool,
        GuardrailFunctionOutput,
        Handoff,
        InputGuardrail,
        Model,
        ModelResponse,
        ModelSettings,
        ModelTracing,
        OutputGuardrail,
        RunConfig,
        Runner,
        RunResult,
    )
    from agents.exceptions import UserError
    from agents.run_internal.turn_preparation import get_model, get_model_settings
    from agents.tool_context import ToolContext
    from pydantic import TypeAdapter
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("tidebase.integrations.openai_agents needs the OpenAI Agents SDK: "
                      "pip install 'tidebase-postgres[openai-agents]'") from exc

from tidebase.integrations._common import (
    PURE_TOOL,
    RunBridge,
    ToolContract,
    approval_prompt,
    check_prices,
    cost_usd,
    denial_message,
    require_run,
    step_name,
    surfaced,
)

__all__ = ["TidebaseRunner"]

PREFIX = "openai_agents"
_RESPONSE: TypeAdapter[ModelResponse] = TypeAdapter(ModelResponse)


@dataclasses.dataclass(frozen=True)
class _Options:
    prices: dict[str, tuple[Decimal, Decimal]]
    tool_contracts: Mapping[str, ToolContract]
    suspend: bool
    approval_timeout: float | None
    check_inputs: bool


class TidebaseRunner:
    """Drop-in replacements for `Runner.run` and `Runner.run_sync` inside a Tidebase workflow (see the module
    docstring). Every keyword of the SDK's runner passes through; the Tidebase keywords are `prices` (model name ->
    (USD per million input tokens, per million output tokens)), `tool_contracts` (tool name -> `ToolContract`),
    `suspend` and `approval_timeout` (how approval gates wait), and `check_inputs`."""

    @classmethod
    async def run(
        cls, starting_agent: Agent[Any], input: Any, *, prices: Mapping[str, tuple[float, float]] | None = None,
        tool_contracts: Mapping[str, ToolContract] | None = None, suspend: bool = True,
        approval_timeout: float | None = None, check_inputs: bool = True, **kwargs: Any,
    ) -> RunResult:
        """Runs `starting_agent` on `input` like `Runner.run`, checkpointing its model calls, tool calls and
        guardrails into the current Tidebase run and turning approvals into gates. Raises OutsideRun outside a
        workflow, RunSuspended at a pending approval gate (with `suspend`), and whatever `Runner.run` raises."""
        bridge = RunBridge(require_run("TidebaseRunner.run"))
        options = _Options(check_prices(prices), dict(tool_contracts or {}), suspend, approval_timeout, check_inputs)
        run_config = kwargs.pop("run_config", None) or RunConfig()
        if isinstance(run_config, dict):
            run_config = RunConfig(**run_config)
        durable = _Durable(bridge, options, run_config)
        agent = durable.agent(starting_agent)
        config = dataclasses.replace(
            run_config, model=None,  # the clones carry the models the SDK would have resolved, made durable
            input_guardrails=[durable.input_guardrail(g) for g in run_config.input_guardrails or ()] or None,
            output_guardrails=[durable.output_guardrail(g) for g in run_config.output_guardrails or ()] or None,
        )
        resume = {k: v for k, v in kwargs.items() if k != "context"}  # the state carries the context
        try:
            result = await Runner.run(agent, input, run_config=config, **kwargs)
            while result.interruptions:
                state = result.to_state()
                for item in result.interruptions:
                    await durable.decide(state, item)
                result = await Runner.run(agent, state, run_config=config, **resume)
        except Exception as exc:
            error = surfaced(exc)  # the SDK wraps what a tool raises: a Tidebase error must surface as itself
            if error is exc:
                raise
            raise error from None
        return result

    @classmethod
    def run_sync(cls, starting_agent: Agent[Any], input: Any, **kwargs: Any) -> RunResult:
        """`run`, for a workflow of the sync API (like `Runner.run_sync`: on an event loop of its own, so not from a
        thread that runs one)."""
        require_run("TidebaseRunner.run_sync")
        return asyncio.run(cls.run(starting_agent, input, **kwargs))


class _Durable:
    """The durable clones of one runner call's agents, tools and guardrails, bound to one Tidebase run."""

    def __init__(self, bridge: RunBridge, options: _Options, run_config: RunConfig) -> None:
        self.bridge = bridge
        self.options = options
        self.run_config = run_config
        self._agents: dict[int, Agent[Any]] = {}

    def agent(self, agent: Agent[Any]) -> Agent[Any]:
        """The durable clone of `agent` (one per agent, so handoff cycles close)."""
        clone = self._agents.get(id(agent))
        if clone is not None:
            return clone
        model = get_model(agent, self.run_config)
        clone = agent.clone(
            model=_DurableModel(model, agent.name, self),
            model_settings=get_model_settings(agent, self.run_config),
            tools=[self.tool(t, agent.name) if isinstance(t, FunctionTool) else t for t in agent.tools],
            input_guardrails=[self.input_guardrail(g) for g in agent.input_guardrails],
            output_guardrails=[self.output_guardrail(g) for g in agent.output_guardrails],
        )
        self._agents[id(agent)] = clone
        clone.handoffs = [self.handoff(h) for h in agent.handoffs]
        return clone

    def handoff(self, target: Agent[Any] | Handoff[Any, Any]) -> Agent[Any] | Handoff[Any, Any]:
        if isinstance(target, Agent):
            return self.agent(target)
        invoke = target.on_invoke_handoff

        async def on_invoke_handoff(ctx: Any, input_json: str) -> Any:
            return self.agent(await invoke(ctx, input_json))

        return dataclasses.replace(target, on_invoke_handoff=on_invoke_handoff)

    def tool(self, tool: FunctionTool, agent: str) -> FunctionTool:
        invoke = tool.on_invoke_tool
        contract = self.options.tool_contracts.get(tool.name, PURE_TOOL)
        bridge = self.bridge

        async def on_invoke_tool(ctx: ToolContext[Any], arguments: str) -> Any:
            return await bridge.step(step_name(PREFIX, agent, "tool", tool.name, ctx.tool_call_id),
                                     lambda: invoke(ctx, arguments),
                                     input={"tool": tool.name, "args": _arguments(arguments)},
                                     **contract.step_options(bridge.run_id, ctx.tool_call_id))

        durable = copy.copy(tool)
        durable.on_invoke_tool = on_invoke_tool
        return durable

    def input_guardrail(self, guardrail: InputGuardrail[Any]) -> InputGuardrail[Any]:
        check = guardrail.guardrail_function

        async def guardrail_function(ctx: Any, agent: Agent[Any], value: Any) -> GuardrailFunctionOutput:
            return await self._verdict(agent.name, guardrail.get_name(), lambda: check(ctx, agent, value))

        return dataclasses.replace(guardrail, guardrail_function=guardrail_function)

    def output_guardrail(self, guardrail: OutputGuardrail[Any]) -> OutputGuardrail[Any]:
        check = guardrail.guardrail_function

        async def guardrail_function(ctx: Any, agent: Agent[Any], value: Any) -> GuardrailFunctionOutput:
            return await self._verdict(agent.name, guardrail.get_name(), lambda: check(ctx, agent, value))

        return dataclasses.replace(guardrail, guardrail_function=guardrail_function)

    async def _verdict(self, agent: str, name: str, check: Callable[[], Any]) -> GuardrailFunctionOutput:
        async def run() -> dict[str, Any]:
            out = check()
            if inspect.isawaitable(out):
                out = await out
            return {"output_info": out.output_info, "tripwire_triggered": out.tripwire_triggered}

        stored = await self.bridge.step(step_name(PREFIX, agent, "guardrail", name), run)
        return GuardrailFunctionOutput(output_info=stored["output_info"],
                                       tripwire_triggered=stored["tripwire_triggered"])

    async def decide(self, state: Any, item: Any) -> None:
        """Approves or rejects one interrupted tool call in `state` by the decision of its gate."""
        agent = getattr(item.agent, "name", "agent")
        tool = item.tool_name or item.name or "tool"
        data = {"agent": agent, "tool": tool, "args": _arguments(item.arguments or ""), "call_id": item.call_id}
        decision = await self.bridge.gate(step_name(PREFIX, agent, "approve", tool, str(item.call_id)),
                                          approval_prompt(agent, tool, data["args"]), data=data,
                                          suspend=self.options.suspend, timeout=self.options.approval_timeout)
        if decision.approved:
            state.approve(item)
            return
        state.reject(item, rejection_message=denial_message(decision))


def _arguments(arguments: str) -> Any:
    """A tool call's arguments as JSON, or the text itself when it is not JSON."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def _provider(model: Model) -> str:
    module = type(model).__module__
    if "litellm" in module:
        return "litellm"
    return "openai" if module.startswith(("agents.models.openai", "openai")) else type(model).__name__


class _DurableModel(Model):
    """A model whose every `get_response` is a step of the run (see the module docstring)."""

    def __init__(self, model: Model, agent: str, durable: _Durable) -> None:
        self.model = model
        self.agent = agent
        self.durable = durable
        self.model_name = str(getattr(model, "model", None) or type(model).__name__)

    async def get_response(
        self, system_instructions: str | None, input: Any, model_settings: ModelSettings, tools: list[Any],
        output_schema: Any, handoffs: list[Any], tracing: ModelTracing, *, previous_response_id: str | None,
        conversation_id: str | None, prompt: Any,
    ) -> ModelResponse:
        durable = self.durable

        async def request() -> object:
            response = await self.model.get_response(
                system_instructions, input, model_settings, tools, output_schema, handoffs, tracing,
                previous_response_id=previous_response_id, conversation_id=conversation_id, prompt=prompt)
            usage = response.usage
            await durable.bridge.record_usage(
                kind="llm", provider=_provider(self.model), model=self.model_name,
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                cost_usd=cost_usd(durable.options.prices, self.model_name, usage.input_tokens, usage.output_tokens),
                metadata={"framework": PREFIX, "agent": self.agent})
            return _RESPONSE.dump_python(response, mode="json")

        inputs = {"instructions": system_instructions, "input": input} if durable.options.check_inputs else None
        stored = await durable.bridge.step(step_name(PREFIX, self.agent, "model"), request, input=inputs)
        return _RESPONSE.validate_python(stored)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise UserError("a durable model step needs the whole response: use TidebaseRunner.run, not a streamed run")

    def get_retry_advice(self, request: Any) -> Any:
        return self.model.get_retry_advice(request)

    async def close(self) -> None:
        await self.model.close()

    async def _cleanup_on_run_end(self, owner: object) -> None:
        await self.model._cleanup_on_run_end(owner)
