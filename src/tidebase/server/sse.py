"""The SSE stream `GET /runs/{id}/events` (docs/http-api.md#sse): the events table is the source of truth, a LISTEN
connection per process is only the doorbell.

`Doorbell` holds one dedicated connection that LISTENs on `tidebase_events` (payload = run id), reconnects by itself
and runs a keep-alive query while idle; each notification wakes the streams of that run. A stream queries the events
with `seq` greater than the last one it sent, writes them, then waits for the bell, at most `POLL_S` seconds (which
covers lost notifications and a doorbell that is reconnecting), and writes a keep-alive comment whenever nothing was
written for the keep-alive period. It holds no database connection while it waits. Events commit in seq order (the
run row lock serialises their writers), so "seq > last" never skips one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator

import psycopg

from tidebase.core.connect import Timeouts, tuned_conninfo
from tidebase.core.deadline import guard
from tidebase.ops import render
from tidebase.server.http_engine import AsyncWire
from tidebase.sql import load_queries

log = logging.getLogger("tidebase.server")
POLL_S = 5.0
PAGE = 500


class Tail:
    """The recent events of one run, shared by its streams: one query per ring serves every subscriber of the run."""

    KEEP = 2000

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []  # contiguous seqs, ascending
        self.gen = 0  # rings (and polls) seen
        self.loaded_gen = -1  # the ring generation the rows are fresh for
        self.lock = asyncio.Lock()

    async def after(self, wire: AsyncWire, run_id: str, last: int) -> list[dict[str, object]]:
        """Events with seq > last committed before the latest ring, in order."""
        async with self.lock:
            if self.loaded_gen < self.gen:
                gen = self.gen
                top = int(self.rows[-1]["seq"]) if self.rows else last  # type: ignore[call-overload]
                while True:
                    new = await wire.events_after(run_id, top)
                    self.rows.extend(new)
                    if len(new) < PAGE:
                        break
                    top = new[-1]["seq"]
                del self.rows[:-self.KEEP]
                self.loaded_gen = gen
            rows = self.rows
        if rows and rows[0]["seq"] > last + 1:  # type: ignore[operator]
            return await wire.events_after(run_id, last, PAGE)  # behind the shared window: catch up alone
        return [r for r in rows if r["seq"] > last]  # type: ignore[operator]


class Doorbell:
    """One LISTEN connection per process, fanned out to per-run waiters."""

    def __init__(self, dsn: str, *, keepalive_s: float = 10.0, timeouts: Timeouts | None = None) -> None:
        self.dsn = dsn
        self.keepalive_s = keepalive_s
        self.timeouts = timeouts or Timeouts()
        self.waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.tails: dict[str, Tail] = {}
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="tidebase-doorbell")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self, run_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self.waiters[run_id].add(event)
        self.tails.setdefault(run_id, Tail())
        return event

    def unsubscribe(self, run_id: str, event: asyncio.Event) -> None:
        waiters = self.waiters.get(run_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self.waiters[run_id]
                self.tails.pop(run_id, None)

    def ring(self, run_id: str) -> None:
        tail = self.tails.get(run_id)
        if tail is not None:
            tail.gen += 1
        for event in self.waiters.get(run_id, ()):
            event.set()

    def ring_all(self) -> None:
        for run_id in list(self.waiters):
            self.ring(run_id)

    async def _loop(self) -> None:
        delay = 0.1
        while True:
            try:
                conninfo = tuned_conninfo(self.dsn, self.timeouts, application_name="tidebase-doorbell")
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    # registers this session first, so writers start ringing (tidebase.ring), then LISTENs
                    await conn.execute(load_queries()["listen_events"])
                    self.connected.set()
                    self.ring_all()  # anything missed while reconnecting
                    delay = 0.1
                    try:
                        while True:
                            async for note in conn.notifies(timeout=self.keepalive_s):
                                self.ring(note.payload)
                            # a stalled path would hang this forever: bounded, it raises and we reconnect
                            with guard(conn, self.timeouts.deadline, "the database (event doorbell)"):
                                await conn.execute(load_queries()["ping"])
                    finally:  # stop ringing for us (a session that dies instead is pruned by the reconciler)
                        with contextlib.suppress(Exception):
                            await conn.execute(load_queries()["unlisten_events"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of the doorbell means: reconnect, streams poll
                self.connected.clear()
                log.warning("event doorbell disconnected (%s: %s); reconnecting", type(exc).__name__, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


def frame(row: dict[str, object], public_url: str) -> bytes:
    data = json.dumps(render.event(row, public_url), separators=(",", ":"), ensure_ascii=False)
    return f"id: {row['seq']}\ndata: {data}\n\n".encode()


async def stream(wire: AsyncWire, bell: Doorbell, run_id: str, after: int, keepalive_s: float,
                 public_url: str) -> AsyncIterator[bytes]:
    """The SSE body: every event with seq > after, in order, then each new one; keep-alive comments while idle."""
    last = after
    wake = bell.subscribe(run_id)
    tail = bell.tails[run_id]
    try:
        yield b": connected\n\n"
        written = time.monotonic()
        rows = await wire.events_after(run_id, last, PAGE)
        while True:
            while rows:
                yield b"".join(frame(r, public_url) for r in rows)
                last = int(rows[-1]["seq"])
                written = time.monotonic()
                rows = await tail.after(wire, run_id, last) if len(rows) >= PAGE else []
            idle = keepalive_s - (time.monotonic() - written)
            if idle <= 0:
                yield b": keep-alive\n\n"
                written = time.monotonic()
                continue
            try:
                await asyncio.wait_for(wake.wait(), timeout=min(POLL_S, idle))
            except TimeoutError:
                tail.gen += 1  # the periodic poll: covers a lost notification
            wake.clear()
            rows = await tail.after(wire, run_id, last)
    finally:
        bell.unsubscribe(run_id, wake)
