"""Errors to HTTP answers, in one table (docs/http-api.md#errors).

`STATUS` maps an error class to (status, code, human message); the handler looks a raised error up along its MRO, so
a subclass answers like its nearest listed ancestor unless it is listed itself. A class that is not listed is a
server fault: 500 with no detail in the body, the detail in the log.
"""

from __future__ import annotations

import logging
from typing import Any

from tidebase import errors as e
from tidebase.core.translate import loggable_traceback

log = logging.getLogger("tidebase.server")


class HttpError(e.TidebaseError):
    """An answer decided by the HTTP layer itself (routing, media type, body size, validation)."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.extra = extra


class InvalidRequest(HttpError):
    """400 with `issues: [{path, message}]`."""

    def __init__(self, issues: list[dict[str, Any]], message: str = "invalid request body") -> None:
        super().__init__(400, "invalid_request", message, issues=issues)


def invalid(path: list[str | int], message: str) -> InvalidRequest:
    """A 400 for one issue at `path`: "invalid request body" (upstream's wording) for the body, "invalid request"
    for the path, the query or a header, which upstream does not validate."""
    outside_body = bool(path) and path[0] in ("path", "query", "headers")
    return InvalidRequest([{"path": path, "message": message}],
                          "invalid request" if outside_body else "invalid request body")


STATUS: dict[type[BaseException], tuple[int, str, str]] = {
    e.RunNotFound: (404, "run_not_found", "run not found"),
    e.StepNotFound: (404, "step_not_found", "step not found"),
    e.GateNotFound: (404, "gate_not_found", "gate not found"),
    e.StateNotFound: (404, "state_not_found", "run state not found"),
    e.NotFound: (404, "run_not_found", "run not found"),
    e.RunCancelled: (409, "run_cancelled", "run is cancelled"),
    e.RunCompleted: (409, "run_completed", "run already completed"),
    e.LeaseHeld: (409, "run_leased", "run is leased"),
    e.LeaseLost: (409, "lease_lost", "lease lost"),
    e.ManualReviewRequired: (409, "step_needs_review", "step needs manual review"),
    e.StepCompleted: (409, "step_completed", "step already completed with a different output"),
    e.StepNotInReview: (409, "step_not_in_review", "step is not in manual review"),
    e.GateAlreadyResolved: (409, "gate_resolved", "gate already resolved"),
    e.ChildConflict: (409, "child_conflict", "child exists with another workflow or input"),
    e.WorkflowMismatch: (409, "workflow_mismatch", "run exists with another workflow"),
    e.InputMismatch: (409, "input_mismatch", "run exists with another input"),
    e.Conflict: (409, "conflict", "the run's state does not allow this"),
    e.InvalidToken: (403, "invalid_token", "invalid resolve token"),
    e.ScheduleNotFound: (404, "schedule_not_found", "schedule not found"),
    e.NoRecoveryWebhook: (422, "no_recovery_webhook", "run has no recoveryWebhook configured"),
    e.PayloadError: (400, "invalid_request", "invalid request body"),
    e.InvalidArgument: (400, "invalid_request", "invalid request body"),
    e.DatabaseUnavailable: (503, "unavailable", "database unavailable"),
    e.SchemaOutOfDate: (503, "unavailable", "database schema is out of date"),
}

# Codes whose body carries the run (`run`), read after the refusal.
WITH_RUN = frozenset({"run_cancelled", "run_completed", "run_leased", "lease_lost", "workflow_mismatch",
                      "input_mismatch", "child_conflict"})


def lookup(exc: BaseException) -> tuple[int, str, str, dict[str, Any]]:
    """(status, code, message, extra keys) for an error; (500, internal, ...) when it is a server fault."""
    if isinstance(exc, HttpError):
        return exc.status, exc.code, str(exc), dict(exc.extra)
    for cls in type(exc).__mro__:
        if cls in STATUS:
            status, code, message = STATUS[cls]
            extra: dict[str, Any] = {}
            if code == "run_leased":
                extra["leaseOwner"] = getattr(exc, "owner", None)
            if code == "invalid_request":
                extra["issues"] = [{"path": [], "message": str(exc)}]
            return status, code, message, extra
    log.error("internal error\n%s", loggable_traceback(exc))
    return 500, "internal", "internal server error", {}
