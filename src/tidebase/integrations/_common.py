"""What every framework integration shares: finding the run, reaching it from the framework's event loop, tool
contracts, prices and the usage ledger.

An agent framework calls the model and the tools from its own asyncio code, also behind its sync entry points
(`run_sync` drives an event loop in the calling thread). Its integration therefore always talks to the run through
`RunBridge`, whose methods are coroutines whichever API runs the workflow: with `AsyncTidebase` they await the run's
own methods; with the sync `Tidebase` they run the sync method in a thread of its own (`in_thread`, carrying the
context variables) while the loop stays free, and a step's async body is handed back to the loop. So there is no
sync twin of this module: the frameworks are asyncio underneath, and one implementation serves both APIs.

The run is the one whose workflow is running in this task or thread (`tidebase.core.context_async.CURRENT_RUN`, or
its sync twin): a workflow only calls the agent, as it would outside Tidebase.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from tidebase.client import RunContext
from tidebase.client_async import AsyncRunContext
from tidebase.core import context, context_async
from tidebase.errors import TidebaseError
from tidebase.models import GateDecision

AnyRun = AsyncRunContext | RunContext
T = TypeVar("T")

# The idempotency key of the tool call whose step is running in this task (see current_idempotency_key).
_IDEMPOTENCY_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("tidebase_tool_idempotency_key",
                                                                              default=None)


class OutsideRun(TidebaseError):
    """A durable agent was run outside a Tidebase workflow: there is no run to checkpoint its steps into."""


def current_run() -> AnyRun | None:
    """The run context whose workflow is running in this task or thread (either API), or None outside a workflow."""
    run = context_async.CURRENT_RUN.get() or context.CURRENT_RUN.get()
    return run if isinstance(run, AsyncRunContext | RunContext) else None


def require_run(what: str) -> AnyRun:
    """The current run context; OutsideRun naming `what` when there is none."""
    run = current_run()
    if run is None:
        raise OutsideRun(
            f"{what} runs inside a Tidebase workflow (tide.run(name, workflow, ...), or a worker), where each model "
            "request and tool call becomes a checkpointed step; outside a run there is nothing to checkpoint into. "
            "Call it from the workflow function, or use the framework's own agent directly."
        )
    return run


def current_idempotency_key() -> str | None:
    """Inside a keyed tool call (a `ToolContract(idempotent=True)`), the idempotency key its step declares: the run
    id and the tool call id, the same on every attempt and after a crash. Pass it to the external service so that a
    re-run after an interruption is deduplicated there. None elsewhere."""
    return _IDEMPOTENCY_KEY.get()


@dataclass(frozen=True)
class ToolContract:
    """How a tool call resumes when a crash interrupts it while its function runs (the step's resume contract).

    A tool without a contract is a pure step: an interrupted call runs again. `side_effects` names what the tool
    writes outside (e.g. `("payments.refund",)`): its step writes a `running` marker first, and an interrupted call
    parks the run for an operator (ManualReviewRequired) instead of running twice. With `idempotent=True` the step is
    keyed by the run and the model's tool call id (see `current_idempotency_key`), and an interrupted call runs again,
    for the external service to deduplicate."""

    side_effects: Sequence[str] = ()
    idempotent: bool = False

    def step_options(self, run_id: str, tool_call_id: str) -> dict[str, Any]:
        """The resume-contract keywords of `run.step` for one call of the tool."""
        if not self.side_effects and not self.idempotent:
            return {}
        key = f"{run_id}:{tool_call_id}" if self.idempotent else None
        return {"side_effects": tuple(self.side_effects) or ("external",), "idempotency_key": key}


PURE_TOOL = ToolContract()


def check_prices(prices: Mapping[str, tuple[float, float]] | None) -> dict[str, tuple[Decimal, Decimal]]:
    """The price table as exact decimals: model name -> (USD per million input tokens, per million output tokens).
    ValueError for a negative or malformed price."""
    table: dict[str, tuple[Decimal, Decimal]] = {}
    for model, pair in (prices or {}).items():
        if not isinstance(pair, tuple | list) or len(pair) != 2 or any(not isinstance(p, int | float | Decimal)
                                                                       or p < 0 for p in pair):
            raise ValueError(f"price of {model!r} must be (input_per_mtok, output_per_mtok), non-negative numbers")
        table[model] = (Decimal(str(pair[0])), Decimal(str(pair[1])))
    return table


def price_of(prices: Mapping[str, tuple[Decimal, Decimal]], model: str | None) -> tuple[Decimal, Decimal] | None:
    """The price of `model`: its own entry, else the longest entry its name starts with followed by `-` (a provider's
    dated snapshot, `gpt-4.1-mini-2025-04-14`, is priced as `gpt-4.1-mini`); None when there is neither."""
    if not model:
        return None
    if model in prices:
        return prices[model]
    prefixes = [name for name in prices if model.startswith(name + "-")]
    return prices[max(prefixes, key=len)] if prefixes else None


def cost_usd(prices: Mapping[str, tuple[Decimal, Decimal]], model: str | None, input_tokens: int | None,
             output_tokens: int | None) -> Decimal | None:
    """The cost of one response from the price table (see `price_of`), or None when the model has no price."""
    price = price_of(prices, model)
    if price is None:
        return None
    million = Decimal(1_000_000)
    return ((input_tokens or 0) * price[0] + (output_tokens or 0) * price[1]) / million


def surfaced(exc: BaseException) -> BaseException:
    """The Tidebase error a framework wrapped in its own (found along the cause chain of `exc`), else `exc`: a
    suspension, a parked step, a lost lease or a refused replay must reach the workflow as itself."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TidebaseError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return exc


async def in_thread(fn: Callable[[], T], *, on_cancel: Callable[[], None] | None = None, join: bool = True) -> T:
    """`fn()` in a new thread, with this task's context variables, awaited without blocking the loop.

    Not the loop's default executor (`asyncio.to_thread`): a sync step waits there for its body, which runs on the
    loop and may itself need that executor (frameworks run sync tools there), so as many concurrent tool calls as it
    has workers would deadlock it. A thread per call costs about a tenth of a millisecond and cannot deadlock.

    A thread cannot be cancelled: when the awaiting task is, `on_cancel()` asks `fn` to stop (e.g. cancels the step's
    body on the loop) and, with `join`, the task waits for the thread to end before it takes the cancellation, so no
    step of a run outlives the call that started it (nor the event loop its body runs on). Without `join` (a gate
    waiting for a person) the thread's outcome, when it comes, is dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def deliver(outcome: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for this outcome any more
            loop.call_soon_threadsafe(settle, outcome)

    def work() -> None:
        try:
            value = context.run(fn)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task, whatever it is
            deliver(functools.partial(future.set_exception, exc))
        else:
            deliver(functools.partial(future.set_result, value))

    threading.Thread(target=work, name="tidebase-bridge", daemon=True).start()
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        while join and not future.done():  # the thread's end, whatever it raises, before the cancellation goes on
            try:
                await asyncio.shield(future)
            except BaseException:  # noqa: BLE001, S112 - its outcome is dropped: the caller was cancelled
                continue
        if future.done() and not future.cancelled():
            future.exception()  # retrieved, so that asyncio does not report it as never retrieved
        raise


# The longest approval prompt a gate gets; past it the prompt is cut (the gate's data keeps the whole call).
MAX_PROMPT = 500


def approval_prompt(agent: str, tool: str, args: Any) -> str:
    """The question of the gate that approves one tool call, at most MAX_PROMPT characters."""
    text = f"Allow agent {agent!r} to call {tool}({args})?"
    return text if len(text) <= MAX_PROMPT else text[:MAX_PROMPT - 1] + "…"


def denial_message(decision: GateDecision) -> str:
    """What the model is told of a refused tool call: the decision payload's `message`, else who decided what."""
    payload = decision.payload if isinstance(decision.payload, dict) else {}
    who = f" by {decision.actor}" if decision.actor else ""
    return str(payload.get("message") or f"The tool call was {decision.decision}{who}.")


def step_name(*parts: str) -> str:
    """A step name from its parts, joined by `:`; a `#` becomes `_` so no part can imitate an occurrence suffix."""
    return ":".join(p.replace("#", "_") for p in parts)


class RunBridge:
    """One run context, reached from a framework's event loop as coroutines, whichever API runs the workflow."""

    def __init__(self, run: AnyRun) -> None:
        self.run = run

    @property
    def run_id(self) -> str:
        return self.run.run_id

    async def step(
        self, name: str, fn: Callable[[], Awaitable[Any]], *, input: Any = None, idempotency_key: str | None = None,
        side_effects: Sequence[str] = (),
    ) -> Any:
        """`run.step(name, fn, ...)` with an async `fn`; returns the stored JSON form of its value (see run.step)."""
        options: dict[str, Any] = {"input": input, "side_effects": tuple(side_effects),
                                   "idempotency_key": idempotency_key}

        async def body() -> Any:
            token = _IDEMPOTENCY_KEY.set(idempotency_key)
            try:
                return await fn()
            finally:
                _IDEMPOTENCY_KEY.reset(token)

        if isinstance(self.run, AsyncRunContext):
            return await self.run.step(name, body, **options)
        loop = asyncio.get_running_loop()
        running: list[concurrent.futures.Future[Any]] = []
        cancelled = threading.Event()

        def call() -> Any:  # in the step's thread: its body runs on the loop, which is free meanwhile
            if cancelled.is_set():
                raise asyncio.CancelledError
            task = asyncio.run_coroutine_threadsafe(body(), loop)
            running.append(task)
            if cancelled.is_set():
                task.cancel()
            try:
                return task.result()
            except concurrent.futures.CancelledError:
                # Cancelled as on the asyncio API: not a failure of the step (a BaseException, nothing recorded).
                raise asyncio.CancelledError from None

        def cancel() -> None:
            cancelled.set()
            for task in running:
                task.cancel()

        return await in_thread(functools.partial(self.run.step, name, call, **options), on_cancel=cancel)

    async def gate(
        self, name: str, prompt: str, *, data: Any, suspend: bool,
        timeout: float | None,  # noqa: ASYNC109 - run.gate's wait budget for a human, not a cancellation scope
    ) -> GateDecision:
        """`run.gate(...)`: the decision of gate `name`, created once per run (see AsyncRunGates.wait)."""
        if isinstance(self.run, AsyncRunContext):
            return await self.run.gates.wait(name, prompt, data=data, suspend=suspend, timeout=timeout)
        return await in_thread(
            functools.partial(self.run.gates.wait, name, prompt, data=data, suspend=suspend, timeout=timeout),
            join=False)

    async def begin_gate(self, name: str, prompt: str, *, data: Any) -> None:
        """Creates gate `name` now (visible in the gate inbox) without waiting for its decision; idempotent."""
        if isinstance(self.run, AsyncRunContext):
            await self.run.gates.begin(name, prompt, data=data)
        else:
            await in_thread(functools.partial(self.run.gates.begin, name, prompt, data=data))

    async def record_usage(self, **fields: Any) -> None:
        """`run.usage.record(...)`, attributed to the step whose function is running (replays report it saved)."""
        if isinstance(self.run, AsyncRunContext):
            await self.run.usage.record(**fields)
        else:
            await in_thread(functools.partial(self.run.usage.record, **fields))
