"""Running Tidebase: the workflow registry, queues, schedules, workers, the reconciler, webhooks and the read-only
insights the Studio shows; plus the public forms of rows and the log setup the commands use."""

# Installs the observer of the core's run and step transitions (metrics, spans, log lines) in every process that
# imports any part of ops: the facade, the worker and the server all do.
from __future__ import annotations

from tidebase.ops import telemetry as _telemetry  # noqa: F401
