"""OpenTelemetry spans of runs and steps (tidebase.ops.tracing), recorded by the SDK's in-memory exporter: a span per
invocation and per executed (or replayed) step with their attributes, the trace context stored at creation and
linked from a resumed invocation, a worker's invocation parented to the context its run was enqueued in, and child
runs under the parent's step span."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tidebase import Tidebase
from tidebase.ops import tracing


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    previous = tracing.use_tracer_provider(provider)
    yield exporter
    tracing.use_tracer_provider(previous)
    provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_a_run_and_its_steps_are_spans_with_their_attributes(tide: Tidebase, spans: InMemorySpanExporter) -> None:
    """One span per invocation (`run <workflow>`) and one per executed step (`step <key>`), the steps children of the
    run's span, with run id, workflow, step key, attempt and replayed attributes."""

    def wf(run: Any, input: Any) -> Any:
        return run.step("a", lambda: 1) + run.step("b", lambda: 2)

    assert tide.run("traced", wf, run_id="t-1") == 3
    [run_span] = named(spans, "run traced")
    attributes = dict(run_span.attributes or {})
    assert attributes["tidebase.run.id"] == "t-1" and attributes["tidebase.workflow"] == "traced"
    assert attributes["tidebase.attempt"] == 1 and attributes["tidebase.outcome"] == "completed"
    for key in ("a", "b"):
        [step] = named(spans, f"step {key}")
        assert step.parent is not None and step.parent.span_id == run_span.context.span_id
        assert step.context.trace_id == run_span.context.trace_id
        assert dict(step.attributes or {}) == {"tidebase.run.id": "t-1", "tidebase.workflow": "traced",
                                               "tidebase.step.key": key, "tidebase.step.replayed": False,
                                               "tidebase.step.attempt": 1}


def test_a_resumed_invocation_links_to_the_trace_stored_at_creation(
    tide: Tidebase, spans: InMemorySpanExporter
) -> None:
    """The first invocation stores its trace context in the run's metadata; after a failure, the next invocation's
    span links to it, its replayed step is a span with `tidebase.step.replayed` true, and the failed step's span
    carries the error."""
    fail = [True]

    def wf(run: Any, input: Any) -> Any:
        run.step("a", lambda: 1)

        def b() -> int:
            if fail[0]:
                raise RuntimeError("boom")
            return 2

        return run.step("b", b)

    with pytest.raises(RuntimeError):
        tide.run("resumed", wf, run_id="t-2")
    fail[0] = False
    assert tide.run("resumed", wf, run_id="t-2") == 2
    first, second = sorted(named(spans, "run resumed"), key=lambda s: s.start_time or 0)
    stored = tide.runs.get("t-2").metadata
    assert stored["traceparent"].split("-")[2] == format(first.context.span_id, "016x")
    assert first.status.is_ok is False and dict(first.attributes or {})["tidebase.outcome"] == "failed"
    assert [link.context.span_id for link in second.links] == [first.context.span_id]
    assert dict(second.attributes or {})["tidebase.attempt"] == 2
    replayed = [s for s in named(spans, "step a") if (s.attributes or {}).get("tidebase.step.replayed")]
    assert len(replayed) == 1 and replayed[0].parent is not None
    assert replayed[0].parent.span_id == second.context.span_id
    failed_b = [s for s in named(spans, "step b") if not s.status.is_ok]
    assert len(failed_b) == 1 and failed_b[0].events[0].name == "exception"


def test_a_worker_invocation_is_a_child_of_the_span_that_enqueued_it(
    tide: Tidebase, spans: InMemorySpanExporter
) -> None:
    """`enqueue` inside a span stores that span's context; the worker, which has no span of its own, makes the run's
    invocation a child of it."""

    @tide.workflow("queued-traced")
    def wf(run: Any, input: Any) -> Any:
        return run.step("only", lambda: "ok")

    tracer = tracing.tracer()
    with tracer.start_as_current_span("request") as request:
        run = tide.enqueue("queued-traced", queue="tq", run_id="t-3")
    assert tide.runs.get(run.id).metadata["traceparent"].split("-")[2] == format(request.get_span_context().span_id,
                                                                                 "016x")
    assert tide.work(["tq"], burst=True, poll_interval=0.05, handle_signals=False, webhooks=False) == 1
    [run_span] = named(spans, "run queued-traced")
    assert run_span.parent is not None and run_span.parent.span_id == request.get_span_context().span_id
    assert run_span.context.trace_id == request.get_span_context().trace_id
    [step] = named(spans, "step only")
    assert step.parent is not None and step.parent.span_id == run_span.context.span_id


def test_a_child_run_is_a_child_of_the_parent_step_span(tide: Tidebase, spans: InMemorySpanExporter) -> None:
    """A child run started inside a step of its parent gets a span whose parent is that step's span; its own steps
    are under it."""

    def child(run: Any, input: Any) -> Any:
        return run.step("inner", lambda: input["x"] * 2)

    def parent(run: Any, input: Any) -> Any:
        return run.step("spawn", lambda: run.child("kid", child, name="c1", input={"x": 21}))

    assert tide.run("parent", parent, run_id="t-4") == 42
    [parent_span] = named(spans, "run parent")
    [spawn] = named(spans, "step spawn")
    [child_span] = named(spans, "run kid")
    [inner] = named(spans, "step inner")
    assert spawn.parent is not None and spawn.parent.span_id == parent_span.context.span_id
    assert child_span.parent is not None and child_span.parent.span_id == spawn.context.span_id
    assert inner.parent is not None and inner.parent.span_id == child_span.context.span_id
    assert len({s.context.trace_id for s in (parent_span, spawn, child_span, inner)}) == 1


def test_nothing_is_traced_or_imported_when_opentelemetry_is_not_configured(dsn: str) -> None:
    """In a process that never imports OpenTelemetry, running workflows imports none of it, and the metadata holds no
    trace context; with the API imported but no SDK provider installed, nothing is traced either."""
    code = f"""
import sys
from tidebase import Tidebase
tide = Tidebase({dsn!r})
tide.run("plain", lambda run, input: run.step("s", lambda: 1), run_id="plain-1")
assert not [m for m in sys.modules if m.startswith("opentelemetry")], "imported"
assert "traceparent" not in tide.runs.get("plain-1").metadata
import opentelemetry.trace
from tidebase.ops import tracing
assert tracing.tracer() is None
tide.run("plain", lambda run, input: run.step("s", lambda: 1), run_id="plain-2")
assert "traceparent" not in tide.runs.get("plain-2").metadata
tide.close()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
