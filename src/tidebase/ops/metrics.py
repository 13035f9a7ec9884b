"""Prometheus metrics: the process's instruments, the database-backed gauges, and their exposition.

Two kinds of numbers, kept apart on purpose:

- Instruments of this process (counters and histograms: runs, steps, gates, webhooks, the reconciler, database
  errors). They are plain in-process objects updated by `tidebase.ops.telemetry` on each transition the core
  reports (`tidebase.core.observe`): a lock, an addition, no database round trip, no import of `prometheus_client`
  (the client library is imported only to expose them). They count what *this* process did: scrape every process
  (the server, each worker) and sum in PromQL.
- Gauges of the database (queue depth, age of the oldest due run per queue), read at scrape time by one bounded
  statement (`DEPTH_QUERY`: a skip scan over the partial index of queued runs, then at most `DEPTH_CAP` index entries
  per queue), so a scrape costs the same on a million stored runs as on ten. They are the same from every process.

Workflow names are user-chosen, so the `workflow` label is capped: the first `max_workflows` names (100 unless
`Settings.metrics_max_workflows` says otherwise) seen by a process keep their own label, later ones share
`workflow="_other"`. Every other label has a fixed set of values. `docs/operations.md` lists every metric.

Exposition: `render()` (the process's instruments, plus the gauges when rows are given) in the Prometheus text
format; `/metrics` of `tidebase serve`, `tidebase metrics serve` and `tidebase worker --metrics-port` serve it.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

OTHER = "_other"
DEFAULT_MAX_WORKFLOWS = 100
# Per queue, the depth gauge counts at most this many queued runs (it then reads "at least DEPTH_CAP").
DEPTH_CAP = 10_000

# Seconds. Steps range from a replay (microseconds) to a model call (minutes); gates and ticks from ms to days.
STEP_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
GATE_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 7 * 86400.0)
TICK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Counter:
    """A monotonically increasing count per label values (a tuple, in the order of `labels`)."""

    kind = "counter"

    def __init__(self, name: str, doc: str, labels: Sequence[str] = ()) -> None:
        self.name, self.doc, self.labels = name, doc, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, labels: tuple[str, ...] = (), amount: float = 1.0) -> None:
        with self._lock:  # `+=` on a dict item is not atomic across threads
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, labels: tuple[str, ...] = ()) -> float:
        """The count for `labels` (0 when never incremented)."""
        return self._values.get(labels, 0.0)

    def samples(self) -> list[tuple[tuple[str, ...], float]]:
        with self._lock:
            values = dict(self._values)
        if not self.labels and not values:
            values[()] = 0.0  # a counter without labels is exposed from the start, at 0
        return list(values.items())


class Histogram:
    """Observations per label values, in cumulative buckets (upper bounds in seconds) with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = STEP_BUCKETS
                 ) -> None:
        self.name, self.doc, self.labels = name, doc, tuple(labels)
        self.buckets = tuple(sorted(buckets))
        # per label values: [count in each bucket (not cumulative) + the +Inf one, sum]
        self._series: dict[tuple[str, ...], list[Any]] = {}
        self._lock = threading.Lock()

    def observe(self, value: float, labels: tuple[str, ...] = ()) -> None:
        i = bisect.bisect_left(self.buckets, value)  # the first bound >= value (`le` is inclusive)
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = [[0] * (len(self.buckets) + 1), 0.0]
            series[0][i] += 1
            series[1] += value

    def count(self, labels: tuple[str, ...] = ()) -> int:
        """How many observations `labels` has."""
        series = self._series.get(labels)
        return 0 if series is None else sum(series[0])

    def samples(self) -> list[tuple[tuple[str, ...], list[int], float]]:
        """(labels, cumulative bucket counts ending with +Inf, sum) per series."""
        with self._lock:
            out = []
            for labels, (counts, total) in self._series.items():
                running, cumulative = 0, []
                for c in counts:
                    running += c
                    cumulative.append(running)
                out.append((labels, cumulative, total))
            return out


class Metrics:
    """The instruments of one process (`METRICS`); see the module docstring."""

    def __init__(self, max_workflows: int = DEFAULT_MAX_WORKFLOWS) -> None:
        self.max_workflows = max_workflows
        self._workflows: set[str] = set()
        self._workflow_lock = threading.Lock()
        w = ("workflow",)
        self.runs_started = Counter("tidebase_runs_started_total", "Run invocations started (the lease taken) by "
                                    "this process", w)
        self.runs_completed = Counter("tidebase_runs_completed_total", "Runs completed by this process", w)
        self.runs_failed = Counter("tidebase_runs_failed_total", "Run invocations that failed in this process, by "
                                   "what the failure left (failed, requeued, manual_review)", (*w, "outcome"))
        self.runs_stopped = Counter("tidebase_runs_stopped_total", "Run invocations stopped without a verdict: "
                                    "suspended, cancelled, lease_lost, interrupted (database), released (worker "
                                    "shutdown)", (*w, "reason"))
        self.steps = Histogram("tidebase_step_duration_seconds", "Latency of run.step from its call to its "
                               "result: executed (function run and checkpoint committed, retries included) or "
                               "replayed (served from the checkpoint)", (*w, "mode"), STEP_BUCKETS)
        self.lease_takeovers = Counter("tidebase_lease_takeovers_total", "Leases taken over by this process from "
                                       "a holder process that had exited")
        self.recoveries = Counter("tidebase_recoveries_total", "Runs whose lease expired, requeued by this "
                                  "process's reconciler")
        self.gate_wait = Histogram("tidebase_gate_wait_seconds", "Time from a gate's creation to its resolution, "
                                   "for gates resolved by this process", (), GATE_BUCKETS)
        self.webhook_deliveries = Counter("tidebase_webhook_deliveries_total", "Webhook delivery tries by this "
                                          "process, by outcome: delivered, retry (will be tried again), failed "
                                          "(no more tries)", ("outcome",))
        self.reconciler_tick = Histogram("tidebase_reconciler_tick_seconds", "Duration of this process's "
                                         "reconciler ticks, by whether it held the reconciler lock", ("active",),
                                         TICK_BUCKETS)
        self.database_errors = Counter("tidebase_database_errors_total", "Database calls of this process that "
                                       "failed (refusals by the rules, e.g. LeaseHeld, are not counted), by error "
                                       "class", ("error",))

    def instruments(self) -> list[Counter | Histogram]:
        return [v for v in vars(self).values() if isinstance(v, (Counter, Histogram))]

    def workflow(self, name: str) -> str:
        """The `workflow` label value for `name`: itself for the first `max_workflows` names, else `_other`."""
        if name in self._workflows:
            return name
        with self._workflow_lock:
            if len(self._workflows) < self.max_workflows:
                self._workflows.add(name)
                return name
        return OTHER

    def reset(self) -> None:
        """Forgets every observation and workflow name (tests)."""
        self.__init__(self.max_workflows)  # type: ignore[misc]


#: The instruments of this process.
METRICS = Metrics()


# -- gauges read from the database at scrape time ------------------------------------------------------------------

# A loose index scan: the distinct queues of queued runs, each found by one probe of the partial index runs_queue_due
# (queue first in its key); then, per queue, at most DEPTH_CAP of its index entries. Never a scan of the table.
DEPTH_QUERY = """
WITH RECURSIVE queues AS (
    (SELECT r.queue FROM tidebase.runs r WHERE r.status = 'queued' AND r.queue IS NOT NULL ORDER BY r.queue LIMIT 1)
    UNION ALL
    SELECT (SELECT r.queue FROM tidebase.runs r
             WHERE r.status = 'queued' AND r.queue > q.queue ORDER BY r.queue LIMIT 1)
      FROM queues q WHERE q.queue IS NOT NULL
)
SELECT q.queue, d.depth, extract(epoch FROM tidebase.now() - d.oldest_due)::float8 AS oldest_age
  FROM queues q, LATERAL (
      SELECT count(*) AS depth, min(s.due) FILTER (WHERE s.due <= tidebase.now()) AS oldest_due
        FROM (SELECT r.available_at AS due FROM tidebase.runs r
               WHERE r.status = 'queued' AND r.queue = q.queue
               ORDER BY r.priority DESC, r.available_at, r.created_at, r.id LIMIT %(cap)s) s
  ) d
 WHERE q.queue IS NOT NULL
"""


def queue_gauges(conninfo: str, *, connect_timeout: float = 5.0) -> list[dict[str, Any]]:
    """The queue rows of the gauges (`queue`, `depth`, `oldest_age` seconds or None), read now on a connection of
    its own (what `tidebase metrics serve` and a worker's metrics port do at each scrape)."""
    import psycopg  # noqa: PLC0415 - a scrape-time dependency only
    from psycopg.rows import dict_row  # noqa: PLC0415

    with psycopg.connect(conninfo, autocommit=True, connect_timeout=max(1, int(connect_timeout)),
                         application_name="tidebase-metrics") as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SET statement_timeout = 5000")
        cur.execute(DEPTH_QUERY, {"cap": DEPTH_CAP})
        return list(cur.fetchall())


async def queue_gauges_async(pool: Any) -> list[dict[str, Any]]:
    """`queue_gauges` on a connection of `pool` (an AsyncConnectionPool: the server's)."""
    from psycopg.rows import dict_row  # noqa: PLC0415

    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(DEPTH_QUERY, {"cap": DEPTH_CAP})
        rows: list[dict[str, Any]] = await cur.fetchall()
        return rows


# -- exposition ------------------------------------------------------------------------------------------------------

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Collector:
    """Hands the instruments (and the queue rows given, if any) to prometheus_client's exposition."""

    def __init__(self, metrics: Metrics, queues: list[dict[str, Any]] | None, scrape_error: bool | None) -> None:
        self.metrics, self.queues, self.scrape_error = metrics, queues, scrape_error

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (  # noqa: PLC0415 - only exposition needs the client library
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        for inst in self.metrics.instruments():
            base = inst.name.removesuffix("_total")
            if isinstance(inst, Counter):
                family: Any = CounterMetricFamily(base, inst.doc, labels=inst.labels)
                for labels, value in inst.samples():
                    family.add_metric(list(labels), value)
            else:
                family = HistogramMetricFamily(inst.name, inst.doc, labels=inst.labels)
                bounds = [_bound(b) for b in inst.buckets] + ["+Inf"]
                for labels, cumulative, total in inst.samples():
                    family.add_metric(list(labels), list(zip(bounds, cumulative, strict=True)), total)
            yield family
        if self.queues is not None:
            depth = GaugeMetricFamily("tidebase_queue_depth", f"Queued runs per queue (due or not), counted up to "
                                      f"{DEPTH_CAP}", labels=["queue"])
            age = GaugeMetricFamily("tidebase_queue_oldest_age_seconds", "Age of the oldest due queued run per "
                                    "queue, since it became due (0 when none is due)", labels=["queue"])
            for row in self.queues:
                depth.add_metric([row["queue"]], float(row["depth"]))
                age.add_metric([row["queue"]], max(0.0, float(row["oldest_age"] or 0.0)))
            yield depth
            yield age
        if self.scrape_error is not None:
            yield GaugeMetricFamily("tidebase_scrape_database_error", "1 when this scrape could not read the "
                                    "database gauges", value=1.0 if self.scrape_error else 0.0)


def _bound(value: float) -> str:
    return repr(float(value))


def render(queues: list[dict[str, Any]] | None = None, *, scrape_error: bool | None = None,
           metrics: Metrics | None = None) -> bytes:
    """The Prometheus text exposition of `metrics` (this process's), plus the database gauges of `queues` (rows of
    `queue_gauges`) when given, plus `tidebase_scrape_database_error` when `scrape_error` is not None."""
    from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(metrics or METRICS, queues, scrape_error))
    return generate_latest(registry)


class Served:
    """A metrics endpoint serving from its thread: `port` (the bound one), `stop()`."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread
        self.port: int = server.server_address[1]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve(port: int, *, host: str = "127.0.0.1", conninfo: str | Callable[[], str | None] | None = None
          ) -> Served:
    """Serves `GET /metrics` (any path answers the same) on `host:port` from a daemon thread until `stop()`.
    With `conninfo` (a DSN, or a function giving one), each scrape also reads the database gauges
    (its failure is reported by `tidebase_scrape_database_error`, never as an error answer)."""
    import http.server  # noqa: PLC0415

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = scrape(conninfo)
            self.send_response(200)
            self.send_header("content-type", CONTENT_TYPE)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # scrapes are not worth a log line each
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="tidebase-metrics", daemon=True)
    thread.start()
    return Served(server, thread)


def scrape(conninfo: str | Callable[[], str | None] | None) -> bytes:
    """One scrape: the process's instruments, and the database gauges read from `conninfo` when given."""
    dsn = conninfo() if callable(conninfo) else conninfo
    if dsn is None:
        return render()
    try:
        rows = queue_gauges(dsn)
    except Exception as exc:  # noqa: BLE001 - a scrape reports a database failure as a gauge, never as a 500
        METRICS.database_errors.inc((type(exc).__name__,))
        return render(scrape_error=True)
    return render(rows, scrape_error=False)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a text exposition, through prometheus_client's parser (tests,
    tools)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out

