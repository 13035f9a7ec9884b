"""Lease owners that name their process, so that a lease left by a process that is gone can be taken over at once.

A library lease owner reads `[role:]host:pid:start:nonce`: the host name, the process id, the process's start time
(centiseconds since the epoch, as the kernel reports it) and a random nonce that makes every acquisition distinct
(two threads of one process exclude each other too). An HTTP client's owner is whatever it chose and is never
judged.

`holder_exited(owner)` is True only when the owner names a process of *this* host (same host name and the same pid
namespace, so a container sharing the host name is not judged) and that pid is either gone or now belongs to a
process that started at another time: a reused pid is never mistaken for the dead holder. It is also True for an
owner of this very process that no run context of the process holds any more (an invocation that ended on a
database outage without releasing its lease), so re-invoking the run at once takes it back. Any doubt answers False,
and the caller then waits for the lease to expire as before. The judgement only decides when to take a lease over;
the fencing token still refuses every later write of the old holder, whatever the judgement was.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import psutil

_OWNER = re.compile(
    r"^(?:(?P<role>[a-z]+):)?(?P<host>[^:\s]+):(?P<pid>\d{1,10}):(?P<start>\d{1,16})(?:\.(?P<ns>[0-9a-z]{1,13}))?"
    r":(?P<nonce>[0-9a-f]{12})$"
)


@dataclass(frozen=True)
class Holder:
    """What a lease owner string says about the process that holds the lease."""

    role: str | None
    host: str
    pid: int
    started_at: datetime
    namespace: str | None


def _start_stamp(pid: int) -> int | None:
    """The start time of process `pid` in centiseconds since the epoch, or None when there is no such process."""
    try:
        return round(psutil.Process(pid).create_time() * 100)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


@functools.cache
def _namespace() -> str | None:
    """This process's pid namespace, in base 36: processes of another container see other pids."""
    try:
        return _base36(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return None


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


@functools.cache
def _process_label(pid: int) -> str:
    # keyed by pid: a forked child computes its own
    stamp = _start_stamp(pid) or 0
    ns = _namespace()
    return f"{socket.gethostname()}:{pid}:{stamp}" + (f".{ns}" if ns else "")


def process_label() -> str:
    """`host:pid:start[.namespace]` of the calling process."""
    return _process_label(os.getpid())


def new_owner(role: str | None = None) -> str:
    """A lease owner for one acquisition by this process (`role` prefixes it, e.g. `worker`)."""
    prefix = f"{role}:" if role else ""
    return f"{prefix}{process_label()}:{uuid.uuid4().hex[:12]}"


_HELD: Counter[str] = Counter()
_HELD_LOCK = threading.Lock()


def hold(owner: str) -> None:
    """Marks `owner` as used by a live run context of this process (counted: a worker's runs share its owner)."""
    with _HELD_LOCK:
        _HELD[owner] += 1


def drop(owner: str) -> None:
    """Ends one use of `owner` started with `hold`."""
    with _HELD_LOCK:
        _HELD[owner] -= 1
        if _HELD[owner] <= 0:
            del _HELD[owner]


def parse_owner(owner: str | None) -> Holder | None:
    """The process an owner string names, or None when it is not a library owner."""
    match = _OWNER.match(owner or "")
    if match is None:
        return None
    return Holder(
        role=match["role"], host=match["host"], pid=int(match["pid"]),
        started_at=datetime.fromtimestamp(int(match["start"]) / 100, UTC), namespace=match["ns"],
    )


def holder_exited(owner: str | None) -> bool:
    """True when `owner` names a process of this host and pid namespace that no longer runs (see the docstring)."""
    match = _OWNER.match(owner or "")
    if match is None or match["host"] != socket.gethostname() or match["ns"] != _namespace():
        return False
    pid = int(match["pid"])
    if pid == os.getpid():
        if int(match["start"]) != (_start_stamp(pid) or 0):
            return True  # an earlier process with our pid
        with _HELD_LOCK:
            return owner not in _HELD  # this process, but no context of it holds the lease any more
    return _start_stamp(pid) != int(match["start"])


def describe_holder(owner: str | None) -> str:
    """`process 1234 on host h (started 2026-12-07 18:30:01 UTC)`, or the owner string as it is."""
    holder = parse_owner(owner)
    if holder is None:
        return repr(owner) if owner else "nobody"
    role = f"{holder.role} " if holder.role else ""
    return (f"{role}process {holder.pid} on host {holder.host} "
            f"(started {holder.started_at:%Y-%m-%d %H:%M:%S} UTC)")
