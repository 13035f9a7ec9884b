"""The client-side deadline: a connection that stays silent past it is abandoned, so no call waits forever.

Server-side timeouts and TCP keepalives (see `tidebase._connect`) cannot help when something in the network path
keeps the TCP connection open but forwards nothing: the kernel sees a live peer and the server never sees the query.
`guard(conn, seconds)` bounds such a wait from the client: one daemon thread per process checks, about four times a
second, the connections whose guarded block is still running; when one has outlived its deadline it shuts the
connection's socket down. The blocked driver call then fails at once (in threads and in asyncio alike), and the guard
raises `DatabaseUnavailable` saying that the database did not answer in time. The shutdown happens under the same
lock that the guarded block's exit takes, so it can only hit a connection that is still inside that block, never
one already handed back to its pool; a connection that was shut down is broken, and the pool discards it.

The cost on the hot path is two dict operations under a lock: no round trip, no extra wake-up.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from tidebase.errors import DatabaseUnavailable

logger = logging.getLogger("tidebase")

_TICK = 0.25


class _Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[float, Any]] = {}
        self._expired: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @contextlib.contextmanager
    def guard(self, conn: Any, seconds: float | None, what: str = "the database") -> Iterator[None]:
        if seconds is None:
            yield
            return
        key = next(self._ids)
        with self._lock:
            self._watched[key] = (time.monotonic() + seconds, conn)
            self._ensure_thread()
        try:
            yield
        except psycopg.Error as exc:
            with self._lock:
                expired = key in self._expired
            if expired:
                raise DatabaseUnavailable(
                    f"no answer from {what} within {seconds:g} s: the connection was abandoned (the network path "
                    "may be stalled); the operation can be retried"
                ) from exc
            raise
        finally:
            with self._lock:
                self._watched.pop(key, None)
                self._expired.discard(key)

    def _ensure_thread(self) -> None:
        # A forked child inherits the registry but not the thread: start a new one there.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._loop, name="tidebase-deadline", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(_TICK)
            now = time.monotonic()
            with self._lock:
                overdue = [(k, conn) for k, (deadline, conn) in self._watched.items()
                           if deadline <= now and k not in self._expired]
                for key, conn in overdue:
                    self._expired.add(key)
                    _shut_down(conn)


def _shut_down(conn: Any) -> None:
    """Shuts the connection's socket down for both directions, which wakes up whoever waits on it."""
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return  # already closed
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError as exc:
        logger.debug("could not shut down an overdue connection: %s", exc)


_WATCHDOG = _Watchdog()


def guard(conn: Any, seconds: float | None, what: str = "the database") -> contextlib.AbstractContextManager[None]:
    """Bounds the block's use of `conn` to `seconds` (no bound when None); see the module docstring.

    Raises DatabaseUnavailable when the bound was hit; any other error passes through unchanged.
    """
    return _WATCHDOG.guard(conn, seconds, what)
