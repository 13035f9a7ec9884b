"""What every system's benchmark script shares: the step payload, the task runner, the worker pool, the wire counter.

Each `run_<system>.py` script next to this file defines a `System` (connect, run one workflow of N steps, leave a
failed run with k completed steps, resume it) and hands it to `main()`. The same script runs in that system's own
virtualenv, so this module uses the standard library only (and the script's own libraries).

Tasks (`python run_<system>.py TASK --dsn URL --params JSON`), each printing one JSON object on stdout:

- `setup`: create the system's tables once (migrations), so that no measurement includes them.
- `round`: warm up, then `runs` workflows of `steps` steps (wall time, client CPU time, single-step latencies),
  then one resume measurement per size in `resume_ks`.
- `throughput`: `workers` forked processes, each with its own connection(s), run workflows back to back for
  `duration_s`; reports the steps completed inside that window, the workers' own CPU time, and how busy the
  machine's CPUs were (all processes, the server's included).
- `count`: the same operations through `WireCounter`, a TCP relay that counts round trips and statements.

Clocks: `time.perf_counter` (CLOCK_MONOTONIC on Linux, so comparable between the processes of one machine) for
wall time, `time.process_time` for this process's CPU time (all its threads).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import selectors
import socket
import struct
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

PAYLOAD_CHARS = 180
RESUME_WARMUP_K = 10
RESUME_WARMUP_TIMES = 3


def step_output(i: int) -> dict[str, Any]:
    """The value every step of every system returns: a dict whose JSON is about 200 bytes (the same as in
    `bench.workloads.step_output`)."""
    return {"i": i, "payload": "x" * PAYLOAD_CHARS}


@dataclass
class RunResult:
    """One workflow run: when it was called and returned, and when each step's result was durable, as seen by the
    workflow code (perf_counter instants). A step cut short by a throughput deadline is not in `completed`."""

    started: float
    finished: float
    completed: list[float] = field(default_factory=list)


@dataclass
class ResumeResult:
    """Seconds from the call that resumes a failed run until its workflow code is first entered (`entered_s`) and
    until it reaches the step after the last completed one (`resume_s`)."""

    resume_s: float
    entered_s: float


class System(Protocol):
    """One checkpointing system, driven the same way as every other."""

    def run(self, steps: int, deadline: float | None = None) -> RunResult:
        """Runs one fresh workflow of `steps` steps, each returning `step_output(i)` at once; stops at a step boundary
        once `deadline` (perf_counter) has passed."""
        ...

    def prepare_failed(self, k: int) -> Any:
        """Leaves a failed run whose first `k` steps completed; returns what `resume` needs to resume it."""
        ...

    def resume(self, handle: Any) -> ResumeResult:
        """Resumes the run left by `prepare_failed`, times it, and lets it finish (step k+1 executes)."""
        ...

    def close(self) -> None:
        """Releases connections and background threads."""
        ...


Factory = Callable[[str], System]


# -- the tasks ---------------------------------------------------------------------------------------------------------


def task_round(factory: Factory, dsn: str, params: dict[str, Any]) -> dict[str, Any]:
    """Warm-up, `runs` x `steps` executed steps, then a resume of a failed run per size in `resume_ks`."""
    system = factory(dsn)
    try:
        system.run(params["warmup_steps"])
        cpu0 = time.process_time()
        runs = [system.run(params["steps"]) for _ in range(params["runs"])]
        cpu = time.process_time() - cpu0
        for _ in range(RESUME_WARMUP_TIMES):
            system.resume(system.prepare_failed(RESUME_WARMUP_K))
        resumes = {str(k): vars(system.resume(system.prepare_failed(k))) for k in params["resume_ks"]}
    finally:
        system.close()
    return {
        "steps": sum(len(r.completed) for r in runs),
        "wall_s": sum(r.finished - r.started for r in runs),
        "cpu_s": cpu,
        "latencies_s": [lat for r in runs for lat in step_latencies(r)],
        "resume": resumes,
    }


def step_latencies(run: RunResult) -> list[float]:
    """Time between consecutive step completions of one run. The first step is left out: its time includes
    starting the run, which is not a step's cost."""
    return [b - a for a, b in zip(run.completed, run.completed[1:], strict=False)]


def _worker(factory: Factory, dsn: str, params: dict[str, Any], ready: Any, go: Any, start: Any, out: Any) -> None:
    """One forked throughput worker: set up and warm up, report ready, wait for the common start, then run workflows
    until the window closes; reports its steps completed inside the window and its own CPU time."""
    try:
        system = factory(dsn)
        system.run(params["warmup_steps"])
        ready.put(None)
        go.wait()
        t0 = start.value
        deadline = t0 + params["duration_s"]
        done = runs = 0
        cpu0 = time.process_time()
        while time.perf_counter() < deadline:
            result = system.run(params["steps"], deadline)
            done += sum(1 for t in result.completed if t0 <= t <= deadline)
            runs += 1
        cpu = time.process_time() - cpu0
        system.close()
        out.put({"steps": done, "runs": runs, "cpu_s": cpu})
    except BaseException:
        out.put({"error": traceback.format_exc()})
        ready.put(None)
        raise


def task_throughput(factory: Factory, dsn: str, params: dict[str, Any]) -> dict[str, Any]:
    """`workers` forked processes, each warmed up with its own connection(s), start together and run workflows of
    `steps` steps back to back; counts the steps completed within the same `duration_s` window."""
    ctx = multiprocessing.get_context("fork")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    start = ctx.Value("d", 0.0)
    workers = [ctx.Process(target=_worker, args=(factory, dsn, params, ready, go, start, out))
               for _ in range(params["workers"])]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=300)
    start.value = time.perf_counter() + 0.05
    go.set()
    time.sleep(0.05)
    cpu_before = cpu_times()
    time.sleep(params["duration_s"])
    busy = cpu_busy(cpu_before, cpu_times())
    results = [out.get(timeout=300 + params["duration_s"]) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError("a throughput worker failed:\n" + errors[0])
    return {"steps": sum(r["steps"] for r in results), "duration_s": params["duration_s"],
            "per_worker": [r["steps"] for r in results], "runs": sum(r["runs"] for r in results), "cpu_busy": busy,
            "workers_cpu_s": sum(r["cpu_s"] for r in results), "cpu_count": os.cpu_count()}


def cpu_times() -> list[int] | None:
    """The machine's aggregate CPU time counters (the `cpu` line of /proc/stat), or None where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            return [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return None


def cpu_busy(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of the machine's CPU time (all cores, all processes, the server's included) that was not idle or
    waiting for I/O between two `cpu_times()` readings."""
    if before is None or after is None:
        return None
    delta = [b - a for a, b in zip(before, after, strict=False)]
    idle = delta[3] + (delta[4] if len(delta) > 4 else 0)
    total = sum(delta[:8])
    return (total - idle) / total if total else None


def task_count(factory: Factory, dsn: str, params: dict[str, Any]) -> dict[str, Any]:
    """Round trips and statements through a `WireCounter`: runs of `small` and `large` steps, and resumes of runs
    with `ks[0]` and `ks[1]` completed steps; the per-step figures are the differences divided by the size
    differences, so what a run costs once (start, completion) cancels out."""
    return count_through(WireCounter(dsn), factory, params)


def count_through(counter: WireCounter, factory: Factory, params: dict[str, Any]) -> dict[str, Any]:
    """`task_count`'s operations on a system connected through `counter` (closed at the end)."""
    system = factory(counter.dsn)
    try:
        system.run(params["warmup_steps"])
        system.resume(system.prepare_failed(RESUME_WARMUP_K))
        executed = {}
        for size in (params["small"], params["large"]):
            with counter.region() as region:
                system.run(size)
            executed[str(size)] = region
        replayed = {}
        for k in params["ks"]:
            handle = system.prepare_failed(k)
            with counter.region() as region:
                system.resume(handle)
            replayed[str(k)] = region
    finally:
        system.close()
        counter.close()
    return {"executed": executed, "replayed": replayed}


def task_setup(factory: Factory, dsn: str, params: dict[str, Any]) -> dict[str, Any]:
    """Creates the system's tables (migrations) and runs one step, once, before any measurement: so that concurrent
    workers never race to create them, and no timed region includes a migration."""
    system = factory(dsn)
    try:
        system.run(1)
    finally:
        system.close()
    return {}


Task = Callable[[Factory, str, dict[str, Any]], dict[str, Any]]

TASKS: dict[str, Task] = {
    "setup": task_setup,
    "round": task_round,
    "throughput": task_throughput,
    "count": task_count,
}


def main(factory: Factory, versions: Callable[[], dict[str, str]], extra: dict[str, Task] | None = None) -> int:
    """Command line of a system script: runs one task and prints its JSON result (with the library versions) on
    stdout. Anything the libraries print goes to stderr, so stdout holds that one object only."""
    tasks = {**TASKS, **(extra or {})}
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=sorted(tasks))
    parser.add_argument("--dsn", required=True, help="postgresql:// URL of the benchmark database")
    parser.add_argument("--params", default="{}", help="the task's parameters, as a JSON object")
    args = parser.parse_args()
    out, sys.stdout = sys.stdout, sys.stderr
    params = json.loads(args.params)
    result = tasks[args.task](factory, args.dsn, params)
    result["versions"] = versions()
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


# -- counting round trips and statements -------------------------------------------------------------------------------

_UNTYPED_PRELUDES = {80877103, 80877104}  # SSLRequest, GSSENCRequest: another untyped message follows


class _Conn:
    """The relay state of one client connection."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.last_from_client = False
        self.started = False
        self.buffer = b""
        self.statements: dict[str, str] = {}  # prepared statement name -> SQL
        self.portals: dict[str, str] = {}  # portal name -> SQL


def statement_label(sql: str) -> str:
    """A short, stable label for one SQL text: `--` comments dropped, whitespace collapsed, cut after 70
    characters. An empty statement (`;`, what SQLAlchemy's pool pre-ping sends) is labelled as such."""
    text = re.sub(r"\s+", " ", re.sub(r"--[^\n]*", "", sql)).strip()
    return "(empty statement: ping)" if text in {"", ";"} else text[:70]


class WireCounter:
    """A TCP relay in front of PostgreSQL that counts what the client sends, on every connection through it.

    - round trips: the times a client sends after the server last sent to it (or sends first on a connection),
      i.e. each time it waits for an answer. Statements sent together in a pipeline make one round trip.
    - statements: each Execute message of the extended protocol and each simple-protocol Query, labelled with its
      SQL (prepared statements and portals are followed from Parse to Bind to Execute). BEGIN and COMMIT count.
    - syncs: Sync messages (the end of one extended-protocol request).

    Connections through it must not use TLS (`sslmode=disable` is set on the URL it hands out). It relays in one
    background thread; it slows every round trip, so it is used only for counting, never for timing.
    """

    default_port = 5432

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or self.default_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        netloc = f"{userinfo}127.0.0.1:{self.listener.getsockname()[1]}"
        self.dsn = self._through(parts._replace(netloc=netloc))
        self.lock = threading.Lock()
        self.round_trips = 0
        self.syncs = 0
        self.statements: Counter[str] = Counter()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, name="wire-counter", daemon=True)
        self.thread.start()

    @staticmethod
    def _through(relayed: SplitResult) -> str:
        """The URL clients use: the relay's address, TLS and GSS encryption off (the relay reads the messages)."""
        query = [(k, v) for k, v in parse_qsl(relayed.query) if k not in {"sslmode", "gssencmode"}]
        query += [("sslmode", "disable"), ("gssencmode", "disable")]
        return urlunsplit(relayed._replace(query=urlencode(query), fragment=""))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"round_trips": self.round_trips, "syncs": self.syncs, "statements": dict(self.statements)}

    @contextmanager
    def region(self) -> Iterator[dict[str, Any]]:
        """Yields a dict that, on exit, holds the counts of what happened inside the block."""
        result: dict[str, Any] = {}
        before = self.snapshot()
        yield result
        after = self.snapshot()
        statements = {k: v - before["statements"].get(k, 0) for k, v in after["statements"].items()}
        result.update(round_trips=after["round_trips"] - before["round_trips"], syncs=after["syncs"] - before["syncs"],
                      statements={k: v for k, v in statements.items() if v})

    def close(self) -> None:
        self.stopping = True
        self.thread.join(timeout=5)
        self.listener.close()

    def _serve(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.1):
                if key.data is None:
                    self._accept()
                else:
                    conn, from_client = key.data
                    try:
                        self._relay(conn, from_client)
                    except OSError:
                        self._drop(conn)

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(self.upstream)
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(client, server)
        self.selector.register(client, selectors.EVENT_READ, (conn, True))
        self.selector.register(server, selectors.EVENT_READ, (conn, False))

    def _drop(self, conn: _Conn) -> None:
        for sock in (conn.client, conn.server):
            with suppress(KeyError, ValueError):
                self.selector.unregister(sock)
            sock.close()

    def _relay(self, conn: _Conn, from_client: bool) -> None:
        source, target = (conn.client, conn.server) if from_client else (conn.server, conn.client)
        data = source.recv(1 << 16)
        if not data:
            self._drop(conn)
            return
        if from_client:
            with self.lock:
                if not conn.last_from_client:
                    self.round_trips += 1
                conn.last_from_client = True
                self._parse(conn, data)
        else:
            conn.last_from_client = False
        target.sendall(data)

    def _parse(self, conn: _Conn, data: bytes) -> None:
        conn.buffer += data
        while True:
            if not conn.started:
                if len(conn.buffer) < 8:
                    return
                length, code = struct.unpack("!ii", conn.buffer[:8])
                if len(conn.buffer) < length:
                    return
                conn.buffer = conn.buffer[length:]
                conn.started = code not in _UNTYPED_PRELUDES
                continue
            if len(conn.buffer) < 5:
                return
            kind = conn.buffer[:1]
            (length,) = struct.unpack("!i", conn.buffer[1:5])
            if len(conn.buffer) < 1 + length:
                return
            body = conn.buffer[5:1 + length]
            conn.buffer = conn.buffer[1 + length:]
            self._message(conn, kind, body)

    def _message(self, conn: _Conn, kind: bytes, body: bytes) -> None:
        fields = body.split(b"\0")
        if kind == b"P":  # Parse: statement name, SQL
            conn.statements[fields[0].decode()] = statement_label(fields[1].decode(errors="replace"))
        elif kind == b"B":  # Bind: portal name, statement name
            conn.portals[fields[0].decode()] = conn.statements.get(fields[1].decode(), "?")
        elif kind == b"E":  # Execute: portal name
            self.statements[conn.portals.get(fields[0].decode(), "?")] += 1
        elif kind == b"Q":  # simple Query: SQL
            self.statements[statement_label(fields[0].decode(errors="replace"))] += 1
        elif kind == b"S":
            self.syncs += 1


class HttpCounter(WireCounter):
    """The same relay in front of a plain-HTTP server (`http://` URL): counts round trips only, i.e. HTTP requests
    when each one waits for its response (statements and syncs stay 0: the bytes are not PostgreSQL's). Cannot
    stand in front of an `https://` server: the client would check the relay's address against the certificate."""

    default_port = 80

    @staticmethod
    def _through(relayed: SplitResult) -> str:
        return urlunsplit(relayed._replace(fragment=""))

    def _parse(self, conn: _Conn, data: bytes) -> None:
        return


# -- small helpers for the system scripts ------------------------------------------------------------------------------


def wait_for(event: threading.Event, what: str, timeout: float = 120.0) -> None:
    """Waits for `event`, failing with a clear message instead of hanging the benchmark."""
    if not event.wait(timeout):
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def fresh_id(kind: str) -> str:
    """An id never used before (run id, workflow id, thread id)."""
    return f"bench-{kind}-{os.urandom(6).hex()}"


__all__ = ["HttpCounter", "ResumeResult", "RunResult", "System", "WireCounter", "count_through", "fresh_id", "main",
           "step_output", "wait_for"]
