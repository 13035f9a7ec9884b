"""OpenTelemetry spans of runs and steps, when the application has configured OpenTelemetry.

Tidebase only uses the OpenTelemetry *API* (`pip install "tidebase-postgres[otel]"`), and only when the application
did configure tracing: it is on when `opentelemetry.trace` has already been imported by the application *and* a real
tracer provider is installed (`trace.set_tracer_provider(...)` with the SDK's provider, or `use_tracer_provider()`
below). Otherwise this module never imports OpenTelemetry (a `sys.modules` look-up per run invocation is the whole
cost), and every step hook returns at once.

What is traced (`docs/operations.md#traces` names every attribute):

- one span per run invocation, `run <workflow>` (kind INTERNAL), from before its lease is taken to its verdict; it is
  the current span while the workflow runs, so spans the workflow's own code starts are its children;
- one span per executed step attempt, `step <key>`, current while the step's function runs, so a child run started
  inside a step is a child of that step's span; a replayed step gets a span too (`tidebase.step.replayed` true) of
  the microseconds its replay took;
- trace context across resumes: when this process creates a run, the W3C `traceparent` (and `tracestate`) of the
  invocation's span, or for `enqueue` of the caller's current span, is stored in the run's metadata (unless the
  caller put one there already: an upstream service's context is honoured). A later invocation (a retry, a
  worker's claim, a resume after a crash or a gate) links its span to that stored context; an invocation that has no
  current span of its own (a worker) is its child, so every attempt of a run lands in the trace that created it.
"""

from __future__ import annotations

import json
import sys
import time
from contextvars import ContextVar
from typing import Any

from tidebase._version import __version__

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_override: Any = None  # a TracerProvider given to use_tracer_provider(), which wins over the global one
_cached: tuple[Any, Any] | None = None  # (provider, its tracer)
# The invocation whose span is current in this task or thread: step spans are made only inside one.
_CURRENT: ContextVar[Invocation | None] = ContextVar("tidebase_trace_invocation", default=None)


def use_tracer_provider(provider: Any) -> Any:
    """Makes Tidebase trace with `provider` (an OpenTelemetry TracerProvider) instead of the global one, or go back to
    the global one with None; returns the previous override. For applications that keep several providers, and
    tests."""
    global _override, _cached
    previous, _override, _cached = _override, provider, None
    return previous


def tracer() -> Any:
    """The tracer to use now, or None when tracing is off (see the module docstring). Cheap when off."""
    global _cached  # noqa: PLW0603
    provider = _override
    if provider is None:
        trace = sys.modules.get("opentelemetry.trace")
        if trace is None:
            return None  # the application never imported OpenTelemetry: it configured nothing
        provider = trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return None
    cached = _cached
    if cached is not None and cached[0] is provider:
        return cached[1]
    made = provider.get_tracer("tidebase", __version__)
    _cached = (provider, made)
    return made


class Invocation:
    """A run invocation's span and the context token that makes it current."""

    __slots__ = ("outer", "span", "token")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.token: Any = None
        self.outer: Any = None


def _api() -> Any:
    from opentelemetry import context, trace  # noqa: PLC0415 - only once tracing is on

    return context, trace


def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: PLC0415

    return TraceContextTextMapPropagator()


def carrier_of(span_context_source: Any = None) -> dict[str, str]:
    """The W3C trace context of the current context (or of the OpenTelemetry context given) as metadata entries."""
    carrier: dict[str, str] = {}
    _propagator().inject(carrier, context=span_context_source)
    return {k: v for k, v in carrier.items() if k in (TRACEPARENT, TRACESTATE) and v}


def stored_context(metadata: Any) -> Any:
    """The OpenTelemetry context stored in a run's metadata, or None."""
    if not isinstance(metadata, dict) or not isinstance(metadata.get(TRACEPARENT), str):
        return None
    carrier = {TRACEPARENT: metadata[TRACEPARENT]}
    if isinstance(metadata.get(TRACESTATE), str):
        carrier[TRACESTATE] = metadata[TRACESTATE]
    _, trace = _api()
    ctx = _propagator().extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def _amend_metadata(params: dict[str, Any], entries: dict[str, str]) -> None:
    """Adds `entries` to the JSON text `params["metadata"]`, unless it has a trace context already."""
    if not entries:
        return
    try:
        metadata = json.loads(params.get("metadata") or "{}")
    except ValueError:
        return
    if not isinstance(metadata, dict) or TRACEPARENT in metadata:
        return
    params["metadata"] = json.dumps({**metadata, **entries}, separators=(",", ":"))


def inject_current(params: dict[str, Any]) -> None:
    """Stores the caller's current span context in `params["metadata"]` (creation parameters) when tracing is on and
    a span is current (`enqueue`: the worker's invocation then becomes its child)."""
    if tracer() is None:
        return
    _, trace = _api()
    if trace.get_current_span().get_span_context().is_valid:
        _amend_metadata(params, carrier_of())


def begin(run_id: str, create: dict[str, Any] | None) -> Invocation | None:
    """Starts the span of an invocation of `run_id` about to take its lease (a child of the current span), and stores
    its context in the creation parameters `create` (when given)."""
    tr = tracer()
    if tr is None:
        return None
    _, trace = _api()
    workflow = create.get("workflow") if create else None
    span = tr.start_span(f"run {workflow}" if workflow else "run", kind=trace.SpanKind.INTERNAL,
                         attributes={"tidebase.run.id": run_id})
    if create is not None:
        _amend_metadata(create, carrier_of(trace.set_span_in_context(span)))
    return Invocation(span)


def started(ctx: Any, handle: Invocation | None) -> Invocation | None:
    """The invocation holds the lease: names its span, links it to the context stored at the run's creation, and
    makes it current. A claim from elsewhere (a worker: `handle` None) starts its span here, as a child of the
    stored context when no span is current."""
    if handle is None:
        tr = tracer()
        if tr is None:
            return None
        context, trace = _api()
        stored = stored_context(getattr(ctx, "metadata", None))
        current = trace.get_current_span().get_span_context()
        # no span of its own (a worker): a child of the run's stored context; else a child of the current span,
        # linked to the stored context
        parent = None if current.is_valid or stored is None else stored
        span = tr.start_span(f"run {ctx.workflow}", context=parent, kind=trace.SpanKind.INTERNAL)
        if parent is None and stored is not None:
            _link(span, trace.get_current_span(stored).get_span_context())
        handle = Invocation(span)
    else:
        context, trace = _api()
        span = handle.span
        span.update_name(f"run {ctx.workflow}")
        stored = stored_context(getattr(ctx, "metadata", None))
        if stored is not None:
            link_to = trace.get_current_span(stored).get_span_context()
            if link_to.span_id != span.get_span_context().span_id:  # a resume: not the span that created the run
                _link(span, link_to)
    span.set_attributes({"tidebase.run.id": ctx.run_id, "tidebase.workflow": ctx.workflow,
                         "tidebase.attempt": ctx.attempt})
    handle.token = context.attach(trace.set_span_in_context(span))
    handle.outer = _CURRENT.set(handle)
    return handle


def _link(span: Any, span_context: Any) -> None:
    if hasattr(span, "add_link"):  # API 1.23 and later
        span.add_link(span_context, {"tidebase.link": "run.created"})


def ended(handle: Invocation | None, outcome: str, error: BaseException | None) -> None:
    """Ends an invocation's span with its outcome (an error status for a failure) and restores the outer context."""
    if handle is None:
        return
    context, trace = _api()
    span = handle.span
    span.set_attribute("tidebase.outcome", outcome)
    if error is not None and outcome in ("failed", "requeued", "manual_review", "abandoned"):
        span.record_exception(error)
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}"))
    if handle.outer is not None:
        _CURRENT.reset(handle.outer)
    if handle.token is not None:
        context.detach(handle.token)
    span.end()


def step_began(ctx: Any, key: str, attempt: int) -> Any:
    """Starts and makes current the span of an executed step attempt, inside a traced invocation; None otherwise."""
    invocation = _CURRENT.get()
    if invocation is None:
        return None
    context, trace = _api()
    span = invocation_tracer().start_span(f"step {key}", attributes=_step_attributes(ctx, key, attempt, False))
    return span, context.attach(trace.set_span_in_context(span))


def step_ended(handle: Any, error: BaseException | None) -> None:
    if handle is None:
        return
    context, trace = _api()
    span, token = handle
    if error is not None:
        span.record_exception(error)
        span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
    context.detach(token)
    span.end()


def step_replayed(ctx: Any, key: str, seconds: float) -> None:
    """Records a replayed step as a span of the time its replay took, inside a traced invocation."""
    if _CURRENT.get() is None:
        return
    now = time.time_ns()
    span = invocation_tracer().start_span(f"step {key}", start_time=now - int(seconds * 1e9),
                                          attributes=_step_attributes(ctx, key, None, True))
    span.end(end_time=now)


def invocation_tracer() -> Any:
    tr = tracer()
    if tr is None:  # tracing was turned off mid-run: a non-recording tracer keeps the pairing of begin and end
        _, trace = _api()
        return trace.NoOpTracer()
    return tr


def _step_attributes(ctx: Any, key: str, attempt: int | None, replayed: bool) -> dict[str, Any]:
    attributes: dict[str, Any] = {"tidebase.run.id": ctx.run_id, "tidebase.workflow": ctx.workflow,
                                  "tidebase.step.key": key, "tidebase.step.replayed": replayed}
    if attempt is not None:
        attributes["tidebase.step.attempt"] = attempt
    return attributes
