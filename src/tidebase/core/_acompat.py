"""Twins of the runtime primitives that differ between the sync and the async API.

The async modules (`*_async.py`) are the source; `tools/async_to_sync.py` generates their sync twins by renaming
(`asleep` -> `sleep`, `AEvent` -> `Event`, `aspawn` -> `spawn`, ...). Each pair below must therefore have the same
signature and meaning, so that renaming is all the conversion does.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FunctionType
from typing import Any, TypeVar

T = TypeVar("T")

sleep = time.sleep
asleep = asyncio.sleep
Lock = threading.Lock
ALock = asyncio.Lock
Event = threading.Event
AEvent = asyncio.Event


def check_fn(fn: Any, what: str, hint: str = "") -> None:
    """Refuses, before anything is written, what the sync API cannot call: a non-callable, or an `async def`
    function (its call would only create a coroutine). TypeError naming `what`."""
    if type(fn) is FunctionType:  # the common case (a lambda, a def), decided from its code flags alone
        if fn.__code__.co_flags & inspect.CO_COROUTINE:
            raise TypeError(_ASYNC_REFUSED.format(what=what, fn=_describe(fn)))
        return
    _check_callable(fn, what, hint)
    call_method = None if inspect.isroutine(fn) else type(fn).__dict__.get("__call__")  # an object with async __call__
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call_method):
        raise TypeError(_ASYNC_REFUSED.format(what=what, fn=_describe(fn)))


_ASYNC_REFUSED = ("{what} {fn} is an async function, which the sync API cannot run: use tidebase.aio.AsyncTidebase "
                  "(await tide.run(...)), or make the function synchronous")


def acheck_fn(fn: Any, what: str, hint: str = "") -> None:
    """Refuses, before anything is written, what the async API cannot call: a non-callable. Sync and async functions
    are both fine here. TypeError naming `what`."""
    _check_callable(fn, what, hint)


def _check_callable(fn: Any, what: str, hint: str) -> None:
    if not callable(fn):
        raise TypeError(f"{what} must be a function, not {type(fn).__name__} {_short(fn)}" + (f"; {hint}" if hint
                                                                                               else ""))


def _describe(fn: Any) -> str:
    return repr(getattr(fn, "__qualname__", None) or type(fn).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def call(fn: Callable[..., T], *args: Any) -> T:
    """Calls a step or workflow function; a coroutine coming back (a sync function that returned one) is refused."""
    result = fn(*args)
    if inspect.iscoroutine(result):
        result.close()  # never awaited: close it so Python does not warn about it
        raise TypeError(f"{_describe(fn)} returned a coroutine, which the sync API cannot await: use "
                        "tidebase.aio.AsyncTidebase, or make the function synchronous")
    return result


async def acall(fn: Callable[..., Any], *args: Any) -> Any:
    """Calls a step or workflow function that may be sync or async, and awaits its result when it is awaitable."""
    result = fn(*args)
    if inspect.isawaitable(result):
        return await result
    return result


def event_wait(event: threading.Event, timeout: float) -> bool:
    """Waits up to `timeout` seconds for the event; True when it is set."""
    return event.wait(timeout)


async def aevent_wait(event: asyncio.Event, timeout: float) -> bool:
    """Waits up to `timeout` seconds for the event; True when it is set."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


def spawn(fn: Callable[[], object], name: str) -> threading.Thread:
    """Runs `fn` in a daemon thread."""
    thread = threading.Thread(target=fn, name=name, daemon=True)
    thread.start()
    return thread


def aspawn(fn: Callable[[], Awaitable[object]], name: str) -> asyncio.Task[object]:
    """Runs the coroutine function `fn` as a task."""
    return asyncio.get_running_loop().create_task(_as_coro(fn), name=name)


async def _as_coro(fn: Callable[[], Awaitable[object]]) -> object:
    return await fn()


def gather(fns: Sequence[Callable[[], T]], limit: int | None) -> list[T | BaseException]:
    """Runs the functions concurrently in threads (at most `limit` at once); returns results or raised exceptions,
    in order."""
    if not fns:
        return []
    with ThreadPoolExecutor(max_workers=limit or len(fns), thread_name_prefix="tidebase-fanout") as pool:
        futures = [pool.submit(fn) for fn in fns]
        out: list[T | BaseException] = []
        for future in futures:
            try:
                out.append(future.result())
            except BaseException as exc:  # noqa: BLE001 - reported to the caller, in order
                out.append(exc)
        return out


async def agather(fns: Sequence[Callable[[], Awaitable[T]]], limit: int | None) -> list[T | BaseException]:
    """Runs the coroutine functions concurrently as tasks (at most `limit` at once); returns results or raised
    exceptions, in order."""
    semaphore = asyncio.Semaphore(limit or max(1, len(fns)))

    async def bounded(fn: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await fn()

    return list(await asyncio.gather(*(bounded(fn) for fn in fns), return_exceptions=True))


def join(worker: threading.Thread) -> None:
    """Waits for a spawned worker to end."""
    worker.join()


async def ajoin(worker: asyncio.Task[object]) -> None:
    """Waits for a spawned worker to end."""
    await worker
