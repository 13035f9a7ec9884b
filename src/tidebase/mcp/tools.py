"""The MCP tools over the public library API, and their typed results (docs/mcp.md#tools).

`create_server(tide, ...)` builds an `mcp.server.MCPServer` whose tools read runs, steps, state, events and gates,
resolve gates and fork runs through `AsyncTidebase` (`tide.runs`, `tide.gates`, `tide.insights`). Each tool
declares its arguments (with bounds) and its result model, so a client receives structured content that validates
against the tool's output schema, along with the same JSON as text.

Contracts shared by every tool:

- Results are bounded: lists take a `limit` (at most 100 or 200), every JSON value is cut to a budget with its path
  listed in `truncated` (`tidebase.mcp.views.Budget`), and a page that would exceed `views.MAX_RESULT_CHARS` ends
  early, with `next_offset`/`next_after` pointing at what it left out and `note` saying so.
- Secrets never appear (`tidebase.mcp.views`): resolve tokens are never read, lease owners and fencing tokens and
  any secret-named key are redacted, and the known secrets of the settings are replaced wherever they occur.
- A refusal of the library (`TidebaseError`: an unknown run, step or gate, an invalid argument, a gate already
  resolved, ...) is a tool error (`ToolError`) naming the error's class, e.g. `Error executing tool get_run:
  NotFound: run 'r-1' not found`; the server goes on serving.

This module imports the `mcp` SDK and pydantic: import it only when the `mcp` extra is installed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from tidebase._version import __version__
from tidebase.client_async import AsyncTidebase
from tidebase.errors import TidebaseError
from tidebase.mcp import views
from tidebase.mcp.views import Budget, Redactor

M = TypeVar("M", bound=BaseModel)

# the library's RUN_STATUSES (a test checks they agree), as a type the tool's input schema can list
RunStatus = Literal["pending", "queued", "running", "waiting", "manual_review", "completed", "failed", "cancelled"]

RunId = Annotated[str, Field(min_length=1, max_length=512, description="the run's id")]
Limit100 = Annotated[int, Field(ge=1, le=100)]
Limit200 = Annotated[int, Field(ge=1, le=200)]
GateId = Annotated[str, Field(min_length=1, max_length=512, description="the gate's id (`gate_...`)")]
Actor = Annotated[str, Field(min_length=1, max_length=200, description=(
    "who decides: the person the assistant acts for (recorded as `mcp:<actor>`)"))]
Reason = Annotated[str | None, Field(max_length=2000, description="why (recorded in the decision's payload)")]

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
DECIDE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
FORK = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)

INSTRUCTIONS = (
    "Tidebase checkpoints AI-agent runs in Postgres. Use list_runs and get_run to find a run, list_steps/get_step, "
    "get_state and list_events to see what it did, list_pending_gates to see the approvals it waits for, "
    "approve_gate/reject_gate to decide one on behalf of a named person, and fork_run to branch a run at a step. "
    "Values longer than the result budget are replaced by {truncated, chars, preview} and listed in `truncated`; "
    "secrets are shown as \"[redacted]\"."
)


# -- typed results ---------------------------------------------------------------------------------------------------


class Truncation(BaseModel):
    """A value that was cut: its path in the result and the length of its full JSON text."""

    path: str
    chars: int


class Lease(BaseModel):
    """Who holds a run's lease (never the owner string) and until when (database clock)."""

    holder: str | None
    expires_at: str | None


class RunSummary(BaseModel):
    """A run without its values. Statuses are the library's: pending, queued, running, waiting (for a gate),
    manual_review, completed, failed, cancelled. Times are UTC ISO 8601."""

    id: str
    workflow: str
    status: str
    attempt: int
    queue: str | None
    parent_id: str | None
    failure_class: str | None
    cancel_reason: str | None
    lease: Lease | None
    created_at: str | None
    updated_at: str | None
    started_at: str | None
    completed_at: str | None
    available_at: str | None


class RunList(BaseModel):
    """A page of runs, newest first; pass `next_cursor` back as `cursor` for the next page (null at the end)."""

    runs: list[RunSummary]
    next_cursor: str | None


class StepSummary(BaseModel):
    """A step without its output."""

    key: str
    status: str
    attempt: int
    resume_decision: str | None
    started_at: str | None
    completed_at: str | None


class StepView(StepSummary):
    """A step with its resume contract, output and error (possibly truncated, see `truncated`)."""

    name: str
    occurrence: int
    input_hash: str
    contract: dict[str, Any]
    output: Any
    error: Any
    created_at: str | None
    updated_at: str | None


class StepResult(BaseModel):
    """One step of a run."""

    run_id: str
    step: StepView
    truncated: list[Truncation]


class StepPage(BaseModel):
    """A page of a run's steps in the order they were first written. `total` is the run's step count;
    `next_offset` is where the next page starts (null at the end)."""

    run_id: str
    total: int
    offset: int
    steps: list[StepView]
    next_offset: int | None
    truncated: list[Truncation]
    note: str | None


class Link(BaseModel):
    """A run at the other end of an edge: a child, fan-out member or fork (or a parent)."""

    run_id: str
    workflow: str
    status: str
    edge: str
    edge_type: str


class GateView(BaseModel):
    """An approval gate. `status` is pending until it is resolved, then its decision (approved, rejected or
    canceled); `run_status` is the status of its run when it was read. A resolve token is never shown."""

    id: str
    run_id: str
    name: str
    prompt: str
    data: Any
    status: str
    decision: str | None
    actor: str | None
    payload: Any
    run_status: str | None
    created_at: str | None
    resolved_at: str | None


class RunDetail(RunSummary):
    """A run with its input, result, error and metadata, its first steps (without outputs: see list_steps), the
    runs linked to it and its pending gates."""

    input: Any
    result: Any
    error: Any
    metadata: Any
    cancelled_at: str | None
    cancel_actor: str | None
    step_count: int
    event_count: int
    steps: list[StepSummary]
    children: list[Link]
    parents: list[Link]
    pending_gates: list[GateView]
    truncated: list[Truncation]


class StateValue(BaseModel):
    """One version of a state stream (label, reason and step_key are set when read at a version, label or step)."""

    run_id: str
    stream: str
    version: int
    value: Any
    label: str | None
    reason: str | None
    step_key: str | None
    created_at: str | None


class StreamInfo(BaseModel):
    """A state stream of a run, without its value."""

    name: str
    version: int
    target_type: str
    updated_at: str | None


class StateResult(BaseModel):
    """The state asked for (null when the run has no such stream yet) and every stream of the run."""

    run_id: str
    state: StateValue | None
    streams: list[StreamInfo]
    truncated: list[Truncation]


class EventView(BaseModel):
    """One event of a run's log; `seq` is gap-free from 1. The payload is in the HTTP API's public form."""

    seq: int
    type: str
    created_at: str | None
    payload: Any


class EventPage(BaseModel):
    """Events with seq > `after`, in order. Continue with `after=next_after` while `has_more` is true."""

    run_id: str
    events: list[EventView]
    next_after: int
    has_more: bool
    truncated: list[Truncation]
    note: str | None


class GateList(BaseModel):
    """Pending gates, oldest first."""

    gates: list[GateView]
    truncated: list[Truncation]
    note: str | None


class GateDecisionResult(BaseModel):
    """The gate as resolved by this call, and what happens to its run next."""

    gate: GateView
    truncated: list[Truncation]
    next: str


class ForkResult(BaseModel):
    """The new run, forked from `source_run_id` at `at_step`, and how to execute the rest of it."""

    run: RunSummary
    source_run_id: str
    at_step: str
    next: str


# -- the server ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def tool_errors(redactor: Redactor) -> Iterator[None]:
    """Turns a refusal of the library into a tool error `<ErrorClass>: <message>` (secrets replaced)."""
    try:
        yield
    except TidebaseError as exc:
        raise ToolError(redactor.text(f"{type(exc).__name__}: {exc}")) from None


class Tools:
    """The tools, as methods over one `AsyncTidebase`: each method is one tool (its name, arguments, docstring and
    result model are what a client sees). Every method renders through `tidebase.mcp.views` and raises ToolError
    for a refusal of the library (`tool_errors`)."""

    def __init__(self, tide: AsyncTidebase, *, public_url: str, redactor: Redactor) -> None:
        self.tide = tide
        self.public_url = public_url
        self.redactor = redactor

    def _out(self, model: type[M], doc: dict[str, Any]) -> M:
        return model.model_validate(self.redactor.apply(doc))

    async def _require_run(self, run_id: str) -> None:
        await self.tide.insights.overview(run_id, children=1)  # NotFound for an unknown run

    async def list_runs(
        self,
        status: RunStatus | None = None,
        workflow: Annotated[str | None, Field(max_length=512, description="only runs of this workflow")] = None,
        limit: Limit100 = 20,
        cursor: Annotated[str | None, Field(max_length=512, description="next_cursor of the previous page")] = None,
    ) -> RunList:
        """Lists runs, newest first, optionally only those with a status and/or of a workflow."""
        with tool_errors(self.redactor):
            page = await self.tide.runs.list(status=status, workflow=workflow, limit=limit, cursor=cursor)
            return self._out(RunList, {"runs": [views.run_summary(r) for r in page.runs],
                                       "next_cursor": page.next_cursor})

    async def get_run(self, run_id: RunId) -> RunDetail:
        """One run: status, lease holder, input, result or error, metadata, its first 100 steps (without outputs),
        linked runs (children, forks, parents) and its pending gates (values cut to 10,000 characters each)."""
        with tool_errors(self.redactor):
            overview = await self.tide.insights.overview(run_id, children=100)
            steps = await self.tide.insights.steps(run_id, limit=100)
            pending = await self.tide.gates.list(status="pending", run_id=run_id, limit=20)
            budget = Budget(views.DETAIL_VALUE_CHARS // 2)
            doc = views.run_detail(overview, steps, pending, budget)
            return self._out(RunDetail, {**doc, "truncated": budget.truncated})

    async def list_steps(
        self, run_id: RunId, offset: Annotated[int, Field(ge=0)] = 0, limit: Limit100 = 25
    ) -> StepPage:
        """A page of a run's steps, in the order they were first written, with outputs and errors (each cut to
        1,000 characters of JSON; get_step shows up to 20,000)."""
        with tool_errors(self.redactor):
            overview = await self.tide.insights.overview(run_id, children=1)
            # one more than asked: whether a next page exists is read with the page, not from the separate count
            # (a running run may add steps between the two reads)
            fetched = await self.tide.insights.steps(run_id, offset=offset, limit=limit + 1)
            steps = fetched[:limit]
            got = views.page(steps, views.step, "steps")
            end = offset + len(got.docs)
            note = None
            if got.cut:
                note = (f"page cut after {len(got.docs)} of {len(steps)} steps to stay within "
                        f"{views.MAX_RESULT_CHARS} characters; continue with offset={end}")
            return self._out(StepPage, {
                "run_id": run_id, "total": overview.step_count, "offset": offset, "steps": got.docs,
                "next_offset": end if got.cut or len(fetched) > limit else None, "truncated": got.truncated,
                "note": note})

    async def get_step(
        self,
        run_id: RunId,
        key: Annotated[str, Field(min_length=1, max_length=600, description="the step key: `name`, `name#2`, ...")],
    ) -> StepResult:
        """One step of a run by key, with its resume contract, output and error (each cut to 20,000 characters)."""
        with tool_errors(self.redactor):
            step = await self.tide.insights.step(run_id, key)
            budget = Budget(views.DETAIL_VALUE_CHARS)
            doc = views.step(step, budget, "step")
            return self._out(StepResult, {"run_id": run_id, "step": doc, "truncated": budget.truncated})

    async def get_state(
        self,
        run_id: RunId,
        stream: Annotated[str | None, Field(max_length=512, description=(
            "the state stream; default `run`, the run's live state (run.state)"))] = None,
        version: Annotated[int | None, Field(ge=1, description="the state at this version")] = None,
        label: Annotated[str | None, Field(max_length=512, description="the newest version with this label")] = None,
        step: Annotated[str | None, Field(max_length=600, description="the state when this step completed")] = None,
    ) -> StateResult:
        """A run's state: the current value of a stream, or (with one of version, label, step) the value it had
        then; plus the list of the run's streams. The value is cut to 20,000 characters."""
        with tool_errors(self.redactor):
            budget = Budget(views.DETAIL_VALUE_CHARS)
            streams = await self.tide.insights.streams(run_id)
            if not streams:
                await self._require_run(run_id)
            state: dict[str, Any] | None
            if version is None and label is None and step is None:
                current = next((s for s in streams if s.name == (stream or "run")), None)
                state = None if current is None else views.state_stream(current, budget)
            else:
                at = await self.tide.runs.state_at(run_id, version=version, label=label, step=step, stream=stream)
                state = views.state_version(at, budget)
            return self._out(StateResult, {"run_id": run_id, "state": state,
                                           "streams": [views.stream_info(s) for s in streams[:100]],
                                           "truncated": budget.truncated})

    async def list_events(
        self,
        run_id: RunId,
        after: Annotated[int, Field(ge=0, description="return events with seq greater than this")] = 0,
        limit: Limit200 = 50,
    ) -> EventPage:
        """A run's event log from seq `after` + 1, in order (payloads cut to 1,000 characters each)."""
        with tool_errors(self.redactor):
            events = await self.tide.runs.events(run_id, after=after, limit=limit + 1)
            got = views.page(events[:limit], lambda e, b, path: views.event(e, self.public_url, b, path), "events")
            docs = got.docs
            next_after = docs[-1]["seq"] if docs else after
            note = None
            if got.cut:
                note = (f"page cut after {len(docs)} of {min(len(events), limit)} events to stay within "
                        f"{views.MAX_RESULT_CHARS} characters; continue with after={next_after}")
            return self._out(EventPage, {"run_id": run_id, "events": docs, "next_after": next_after,
                                         "has_more": len(events) > len(docs), "truncated": got.truncated,
                                         "note": note})

    async def list_pending_gates(
        self,
        run_id: Annotated[str | None, Field(max_length=512, description="only this run's gates")] = None,
        limit: Limit100 = 50,
    ) -> GateList:
        """Gates waiting for a decision, oldest first: across all runs (the review queue) or of one run."""
        with tool_errors(self.redactor):
            gates = await self.tide.gates.list(status="pending", run_id=run_id, limit=limit)
            if run_id is not None and not gates:
                await self._require_run(run_id)
            got = views.page(gates, views.gate, "gates")
            note = None
            if got.cut:
                note = (f"list cut after {len(got.docs)} of {len(gates)} gates to stay within "
                        f"{views.MAX_RESULT_CHARS} characters")
            return self._out(GateList, {"gates": got.docs, "truncated": got.truncated, "note": note})

    async def approve_gate(self, gate_id: GateId, actor: Actor, reason: Reason = None) -> GateDecisionResult:
        """Approves a pending gate, exactly once: a gate that already has a decision is refused
        (GateAlreadyResolved, naming that decision and who made it). The run waiting at it receives the
        decision."""
        return await self._decide(gate_id, "approved", actor, reason)

    async def reject_gate(self, gate_id: GateId, actor: Actor, reason: Reason = None) -> GateDecisionResult:
        """Rejects a pending gate, exactly once (see approve_gate)."""
        return await self._decide(gate_id, "rejected", actor, reason)

    async def _decide(self, gate_id: str, decision: str, actor: str, reason: str | None) -> GateDecisionResult:
        with tool_errors(self.redactor):
            gate = await self.tide.gates.resolve(gate_id, decision, actor=f"mcp:{actor}",
                                                 payload=None if reason is None else {"reason": reason})
            budget = Budget(views.DETAIL_VALUE_CHARS)
            if gate.run_status == "running":
                after = "its run was waiting for it and goes on now"
            elif gate.run_status == "queued":
                after = "its run was suspended at the gate and is queued again, for a worker to resume it"
            else:
                after = (f"its run is {gate.run_status}: it takes the decision when it is invoked again (or "
                         "recovered to a queue)")
            return self._out(GateDecisionResult, {
                "gate": views.gate(gate, budget, "gate"), "truncated": budget.truncated,
                "next": f"gate {gate.name!r} is {gate.decision}; {after}"})

    async def fork_run(
        self,
        run_id: RunId,
        at_step: Annotated[str, Field(min_length=1, max_length=600, description="the last step key to keep")],
        new_run_id: Annotated[str | None, Field(max_length=512, description=(
            "id of the new run (generated when omitted)"))] = None,
    ) -> ForkResult:
        """Creates a new run from a run's past: its checkpoints up to and including step `at_step` (with the gate
        decisions and state up to then), linked by a `fork` edge. The source run is not modified; the fork
        executes nothing until its workflow is invoked with the fork's id."""
        with tool_errors(self.redactor):
            run = await self.tide.runs.fork(run_id, at_step, new_run_id=new_run_id)
            return self._out(ForkResult, {
                "run": views.run_summary(run), "source_run_id": run_id, "at_step": at_step,
                "next": (f"run {run.id!r} replays the steps up to {at_step!r} and executes the rest when workflow "
                         f"{run.workflow!r} is invoked with run_id={run.id!r} (or `tidebase runs recover {run.id}` "
                         "puts it on a queue for a worker)")})


# (tool, annotations), in the order a client lists them.
TOOLS = (
    ("list_runs", READ), ("get_run", READ), ("list_steps", READ), ("get_step", READ), ("get_state", READ),
    ("list_events", READ), ("list_pending_gates", READ), ("approve_gate", DECIDE), ("reject_gate", DECIDE),
    ("fork_run", FORK),
)


def _quiet_construct(**kwargs: Any) -> MCPServer[Any]:
    """An MCPServer, without the root-logger configuration its constructor performs (`logging.basicConfig`): the
    process's logging belongs to the command that runs it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return MCPServer(**kwargs)
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def create_server(tide: AsyncTidebase, *, public_url: str, redactor: Redactor) -> MCPServer[Any]:
    """The MCP server of `tide`: every tool of docs/mcp.md (`TOOLS`), reading and writing through `tide`'s public
    API.

    `public_url` is the base of a gate's `resolveUrl` in event payloads (`Settings.resolved_public_url`);
    `redactor` replaces the known secrets (`Redactor.from_settings`) in every result and error message. The caller
    owns `tide` (opens and closes it)."""
    server = _quiet_construct(name="tidebase", title="Tidebase", version=__version__, instructions=INSTRUCTIONS,
                              log_level="WARNING")
    tools = Tools(tide, public_url=public_url, redactor=redactor)
    for name, hints in TOOLS:
        server.add_tool(getattr(tools, name), name=name, annotations=hints, structured_output=True)
    return server
