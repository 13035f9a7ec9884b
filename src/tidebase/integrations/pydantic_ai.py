"""Durable Pydantic AI agents: every model request and every tool call is a Tidebase step of the run that calls them.

```python
durable = TidebaseAgent(agent)                                  # same .run / .run_sync / .iter as the agent

def support(run, input):                                        # any Tidebase workflow
    return durable.run_sync(input["question"]).output
```

It is built on Pydantic AI's own durable-execution surface (`pydantic_ai.durable_exec`): `TidebaseDurability` is a
durability capability whose operation backend runs each durable unit the framework hands it (model requests, function,
MCP and dynamic tool calls, MCP discovery, event-stream handling) as `run.step(...)` of the current run, storing the
unit's JSON form (the framework's JSON codec, rebuilt on replay with its own type adapters). So a crash after any of
them resumes with no repeated model request and no repeated tool call. `TidebaseAgent` wraps an agent and adds the
capability to each of its runs; attaching `TidebaseDurability()` to an agent's `capabilities` does the same for every
run of it (and, unlike TidebaseAgent, lets the agent run undurably outside a workflow).

Step keys (see docs/integrations.md):

- a model request is step `pydantic_ai:<agent>:model` (`#2`, `#3`, ... for the following ones, in order), its input
  hash taken from the request content: each message's kind and instructions and each part's kind, content, tool
  name, arguments and tool call id (not timestamps, run ids, usage or provider metadata, which differ on replay). A
  replay whose conversation differs from the checkpointed one raises InputMismatch instead of returning the wrong
  response (`check_inputs=False` turns that off, e.g. for a system prompt that shows today's date);
- a tool call is step `pydantic_ai:<agent>:tool:<tool>:<tool call id>`, the id the model returned (itself replayed
  from the model request's checkpoint), so parallel tool calls have keys that do not depend on the order they start
  in; its input hash covers the tool name and arguments. `tool_contracts` give a tool side effects and an idempotency
  key (`tidebase.integrations.ToolContract`);
- any other unit is `pydantic_ai:<agent>:<operation>` (e.g. `mcp_server__docs.get_tools`).

Approvals: a tool the agent marks as needing approval (`requires_approval=True`, or `ApprovalRequired` raised in the
tool) becomes gate `pydantic_ai:<agent>:approve:<tool>:<tool call id>` of the run, created once, visible in the gate
inbox (`tide.gates.list()`), and decided once by `tide.gates.resolve(...)`; the decision goes back into the agent as
the framework's `ToolApproved` (with `payload={"args": {...}}` overriding the arguments) or `ToolDenied` (with
`payload={"message": ...}`). By default the run suspends at a pending gate (RunSuspended, lease released); invoke it
again once the gate is resolved and it resumes there. Usage: each model response's tokens go to the run's usage ledger
(kind `llm`, provider and model from the response), priced by `prices` when the model is in it; a replayed request
reports that usage as saved.

The agent run's id is replay-stable too (`<run id>:pydantic_ai:<agent>`, then `#2`, ... for the agent's next runs in
the workflow), so the messages of a resumed agent run, replayed and new, carry one run id.

Deliberately not here: runtime toolsets passed to a single `run(toolsets=...)` inside a workflow (the framework refuses
them: their calls would not be steps), concurrent runs of one agent in one workflow (their model steps would be
numbered in the order their requests happen to start; give each concurrent agent its own `name`), and a durable
timer: the framework's waits between polls of a background model job stay plain sleeps, and a run's `timeout=`
counts from each invocation.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Generic, cast

try:
    from pydantic_ai.agent import AbstractAgent, EventStreamHandler, WrapperAgent
    from pydantic_ai.capabilities import AbstractCapability
    from pydantic_ai.durable_exec import (
        JSON_CODEC,
        BaseDurabilityCapability,
        CallableOperationBackend,
        DurabilityEngineSpec,
        DurableOperationId,
        JournalOperationNamer,
        ModelRequestId,
        RoleBasedOperationConfig,
        ToolsetCallToolId,
        conversation_id_from_run_id,
    )
    from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter
    from pydantic_ai.models import Model
    from pydantic_ai.output import OutputDataT
    from pydantic_ai.run import AgentRun
    from pydantic_ai.tools import (
        AgentDepsT,
        DeferredToolRequests,
        DeferredToolResults,
        RunContext,
        ToolApproved,
        ToolDenied,
    )
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("tidebase.integrations.pydantic_ai needs Pydantic AI: "
                      "pip install 'tidebase-postgres[pydantic-ai]'") from exc

from tidebase.errors import InputMismatch
from tidebase.integrations._common import (
    PURE_TOOL,
    AnyRun,
    RunBridge,
    ToolContract,
    approval_prompt,
    check_prices,
    cost_usd,
    current_run,
    denial_message,
    require_run,
    step_name,
)
from tidebase.models import GateDecision

__all__ = ["TidebaseAgent", "TidebaseDurability", "request_input"]

PREFIX = "pydantic_ai"
# What identifies a request's content, per message and per part (see the module docstring).
_MESSAGE_FIELDS = ("kind", "instructions")
_PART_FIELDS = ("part_kind", "content", "tool_name", "args", "tool_call_id")


def request_input(model_id: str | None, messages: list[ModelMessage]) -> dict[str, Any]:
    """What a model request step's input hash covers: the registered model id and each message's identifying fields
    (kind, instructions; per part: kind, content, tool name, arguments, tool call id)."""
    dumped = ModelMessagesTypeAdapter.dump_python(messages, mode="json")
    return {"model": model_id, "messages": [
        {**{f: m.get(f) for f in _MESSAGE_FIELDS},
         "parts": [{f: p[f] for f in _PART_FIELDS if p.get(f) is not None} for p in m.get("parts", ())]}
        for m in dumped
    ]}


@dataclass(init=False, kw_only=True)
class TidebaseDurability(BaseDurabilityCapability[AgentDepsT]):
    """Makes an agent durable in Tidebase: attach it to the agent's `capabilities` (or wrap the agent in
    `TidebaseAgent`). Inside a workflow every durable unit of a run of the agent is a step of the workflow's run (see
    the module docstring); outside one it is transparent.

    `name` names the steps (default: the agent's name, which the framework then requires). `prices` maps a model
    name to (USD per million input tokens, per million output tokens) for the usage ledger's cost. `tool_contracts`
    maps a tool name to its `ToolContract` (side effects, idempotency). Approval gates suspend the run (`suspend=True`)
    or wait for the decision holding the lease, at most `approval_timeout` seconds before suspending. `check_inputs`
    compares each model request with its checkpoint's (InputMismatch when they differ). `models` and
    `event_stream_handler` are the framework's own options of a durability capability.
    """

    engine_spec = DurabilityEngineSpec(
        engine_name="Tidebase",
        durable_unit_noun="step",
        durable_container_noun="workflow",
        codec=JSON_CODEC,  # checkpoints are JSON: values cross as the framework's JSON form, rebuilt by its adapters
        wrapped_toolset_kinds=frozenset({"function", "mcp", "dynamic"}),
        # Steps run in the workflow's own process: an MCP toolset keeps one session per agent run.
        toolset_lifecycles={"function": "enter-always", "mcp": "enter-in-durable-unit", "dynamic": "enter-never"},
        unsupported_runtime_toolset_kinds=frozenset({"function", "mcp", "dynamic"}),
        journal_discovery=True,
        sequential_tools_in_durable_context=False,
        tool_config_key=None,
        nondeterminism_error_types=(InputMismatch,),  # a replay whose request differs from its checkpoint's
    )

    def __init__(
        self, *, name: str | None = None, prices: Mapping[str, tuple[float, float]] | None = None,
        tool_contracts: Mapping[str, ToolContract] | None = None, suspend: bool = True,
        approval_timeout: float | None = None, check_inputs: bool = True, models: Mapping[str, Model] | None = None,
        event_stream_handler: EventStreamHandler[AgentDepsT] | None = None,
    ) -> None:
        super().__init__(models=models, event_stream_handler=event_stream_handler, name=name)
        self.prices = check_prices(prices)
        self.tool_contracts = dict(tool_contracts or {})
        self.suspend = suspend
        self.approval_timeout = approval_timeout
        self.check_inputs = check_inputs
        self._bound: tuple[AbstractAgent[AgentDepsT, Any], AbstractCapability[AgentDepsT]] | None = None
        # Agent runs started so far per invocation of a workflow (its run context), shared by the bound copies.
        self._agent_runs: weakref.WeakKeyDictionary[AnyRun, int] = weakref.WeakKeyDictionary()
        self._agent_runs_lock = threading.Lock()

    def for_agent(self, agent: AbstractAgent[AgentDepsT, Any]) -> AbstractCapability[AgentDepsT]:
        """The capability bound to `agent`, bound once per agent: `TidebaseAgent` adds it to every run, and binding
        (wrapping the agent's toolsets, collecting its capabilities' operations) is the same each time, as it is
        for a capability attached when the agent is built."""
        bound = self._bound
        if bound is None or bound[0] is not agent:
            bound = self._bound = (agent, super().for_agent(agent))
        return bound[1]

    @property
    def in_durable_context(self) -> bool:
        return current_run() is not None

    def get_default_run_id(self) -> str | None:
        """The agent run's id, the same on every invocation of the workflow: `<run id>:<agent>` for the first run
        of the agent in the workflow, `...#2`, `#3` for the next ones (so the framework's view of which messages
        belong to this run survives a resume). None outside a workflow (a random id)."""
        run = current_run()
        if run is None:
            return None
        with self._agent_runs_lock:
            count = self._agent_runs[run] = self._agent_runs.get(run, 0) + 1
        run_id = f"{run.run_id}:{step_name(PREFIX, self.name)}"
        return run_id if count == 1 else f"{run_id}#{count}"

    def get_default_conversation_id(self, run_id: str) -> str | None:
        return conversation_id_from_run_id(run_id) if current_run() is not None else None

    def get_durable_operation_backend(self) -> _StepBackend:
        return _StepBackend(self)

    async def handle_deferred_tool_calls(
        self, ctx: RunContext[AgentDepsT], *, requests: DeferredToolRequests
    ) -> DeferredToolResults | None:
        """Turns the tool calls awaiting approval into gates of the run and answers them with the recorded
        decisions; calls deferred for external execution are left to the framework (and the caller)."""
        run = current_run()
        if run is None or not requests.approvals:
            return None
        bridge = RunBridge(run)
        gates = [(step_name(PREFIX, self.name, "approve", call.tool_name, call.tool_call_id), call)
                 for call in requests.approvals]
        data = {call.tool_call_id: {"agent": self.name, "tool": call.tool_name, "args": call.args_as_dict(),
                                    "tool_call_id": call.tool_call_id} for _, call in gates}
        if len(gates) > 1:  # all of them in the inbox at once, not one per resume
            for gate, call in gates:
                await bridge.begin_gate(gate, _prompt(self.name, data[call.tool_call_id]), data=data[call.tool_call_id])
        approvals: dict[str, bool | ToolApproved | ToolDenied] = {}
        for gate, call in gates:
            decision = await bridge.gate(gate, _prompt(self.name, data[call.tool_call_id]),
                                         data=data[call.tool_call_id], suspend=self.suspend,
                                         timeout=self.approval_timeout)
            approvals[call.tool_call_id] = _approval(decision)
        return DeferredToolResults(approvals=approvals)


def _prompt(agent: str, data: dict[str, Any]) -> str:
    return approval_prompt(agent, data["tool"], data["args"])


def _approval(decision: GateDecision) -> ToolApproved | ToolDenied:
    """The framework's answer for a gate decision: its payload may override the arguments or word the denial."""
    payload = decision.payload if isinstance(decision.payload, dict) else {}
    if decision.approved:
        args = payload.get("args")
        return ToolApproved(override_args=args if isinstance(args, dict) else None)
    return ToolDenied(denial_message(decision))


class _StepBackend(CallableOperationBackend[dict[str, Any]]):
    """Runs each durable unit of the framework as a step of the current run."""

    def __init__(self, capability: TidebaseDurability[Any]) -> None:
        empty: dict[str, Any] = {}
        super().__init__(namer=JournalOperationNamer(capability.name),
                         config=RoleBasedOperationConfig(model=empty, event=empty, capability=empty, tool=empty))
        self._capability = capability

    async def execute(
        self, *, operation_id: DurableOperationId, name: str, body: Callable[[], Awaitable[object]],
        cache_key: tuple[object, ...], config: dict[str, Any],
    ) -> object:
        capability = self._capability
        agent = capability.name
        bridge = RunBridge(require_run(f"agent {agent!r}"))
        if isinstance(operation_id, ModelRequestId):
            # The cache identity of a model request: (model id, messages, settings, parameters, run context).
            model_id, messages = cast(str | None, cache_key[0]), cast(list[ModelMessage], cache_key[1])
            inputs = request_input(model_id, messages) if capability.check_inputs else None

            async def request() -> object:
                payload = await body()
                await _record_usage(bridge, capability.prices, agent, payload)
                return payload

            return await bridge.step(step_name(PREFIX, agent, "model"), request, input=inputs)
        ctx = next((part for part in cache_key if isinstance(part, RunContext)), None)
        if isinstance(operation_id, ToolsetCallToolId) and ctx is not None and ctx.tool_call_id is not None:
            # The cache identity of a tool call: (tool name, arguments, run context, tool or its definition).
            tool = ctx.tool_name or str(cache_key[0])
            contract = capability.tool_contracts.get(tool, PURE_TOOL)
            return await bridge.step(step_name(PREFIX, agent, "tool", tool, ctx.tool_call_id), body,
                                     input={"tool": tool, "args": cache_key[1]},
                                     **contract.step_options(bridge.run_id, ctx.tool_call_id))
        operation = name.removeprefix(f"{agent}__")
        if ctx is not None and ctx.tool_call_id is not None:  # e.g. a tool's argument validation
            operation = f"{operation}:{ctx.tool_call_id}"
        return await bridge.step(step_name(PREFIX, agent, operation), body)


async def _record_usage(bridge: RunBridge, prices: Mapping[str, tuple[Decimal, Decimal]], agent: str,
                        payload: object) -> None:
    """Records the usage of one model response (its JSON form) in the run's ledger, inside the request's step."""
    if not isinstance(payload, dict):
        return
    usage = payload.get("usage") or {}
    model = payload.get("model_name")
    input_tokens, output_tokens = usage.get("input_tokens"), usage.get("output_tokens")
    # A response names its provider; a test model only its `system`, as the prefix of its model id or name.
    named = str(payload.get("model_id") or model or "")
    provider = payload.get("provider_name") or (named.partition(":")[0] if ":" in named else None)
    await bridge.record_usage(kind="llm", provider=provider, model=model,
                              input_tokens=input_tokens, output_tokens=output_tokens,
                              cost_usd=cost_usd(prices, model, input_tokens, output_tokens),
                              metadata={"framework": PREFIX, "agent": agent})


class TidebaseAgent(WrapperAgent[AgentDepsT, OutputDataT], Generic[AgentDepsT, OutputDataT]):
    """`agent`, durable: the same `.run`, `.run_sync`, `.iter` (and streaming) as the wrapped agent, each run of it
    checkpointed into the Tidebase run whose workflow calls it (see the module docstring).

    Raises OutsideRun when run outside a workflow. Safe to re-invoke: a resumed workflow replays the model requests
    and tool calls its run already checkpointed, and runs the rest. The keywords are `TidebaseDurability`'s.
    """

    def __init__(
        self, wrapped: AbstractAgent[AgentDepsT, OutputDataT], *, name: str | None = None,
        prices: Mapping[str, tuple[float, float]] | None = None,
        tool_contracts: Mapping[str, ToolContract] | None = None, suspend: bool = True,
        approval_timeout: float | None = None, check_inputs: bool = True, models: Mapping[str, Model] | None = None,
    ) -> None:
        super().__init__(wrapped)
        self.durability: TidebaseDurability[AgentDepsT] = TidebaseDurability(
            name=name, prices=prices, tool_contracts=tool_contracts, suspend=suspend,
            approval_timeout=approval_timeout, check_inputs=check_inputs, models=models)

    @asynccontextmanager
    async def _durable_iter(self, user_prompt: Any, options: dict[str, Any]) -> AsyncIterator[AgentRun[Any, Any]]:
        require_run(f"TidebaseAgent({self.name or 'agent'})")
        capabilities = [*(options.pop("capabilities", None) or ()), self.durability]
        async with self.wrapped.iter(user_prompt, capabilities=capabilities, **options) as agent_run:
            yield agent_run

    if not TYPE_CHECKING:  # type checkers see the wrapped agent's own (overloaded) signature of iter
        def iter(self, user_prompt=None, **options):
            return self._durable_iter(user_prompt, options)
