"""Pure logic of `tidebase.server.http_engine`: the resume contract of docs/http-api.md#resume-contract, and the retry
of serialization failures."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import errors as pg_errors

from tidebase.core.translate import translate_error
from tidebase.errors import DatabaseUnavailable
from tidebase.ops import render
from tidebase.server.http_engine import AsyncWire, resume_contract


@pytest.mark.parametrize(("options", "effects", "replay"), [
    ({}, [], "auto"),
    ({"sideEffects": ["read"]}, ["read"], "auto"),
    ({"sideEffects": ["write", ""]}, ["write"], "manual"),
    ({"sideEffects": ["write"], "idempotencyKey": "k"}, ["write"], "auto"),
    ({"sideEffect": "email"}, ["email"], "manual"),
    ({"sideEffect": "none"}, [], "auto"),
    ({"sideEffects": ["write"], "onAmbiguousFailure": "retry"}, ["write"], "auto"),
    ({"onAmbiguousFailure": "fail"}, [], "never"),
    ({"replay": "never", "onAmbiguousFailure": "retry"}, [], "never"),
])
def test_resume_contract(options: dict[str, Any], effects: list[str], replay: str) -> None:
    c = render.contract(resume_contract(options))  # the stored form, shown with every field as the API shows it
    assert (c["sideEffects"], c["replay"]) == (effects, replay)
    assert c["credentials"] == [] and c["checkpointInvariant"] is None


class FlakyDb:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def fetchall(self, name: str, params: Any, **context: Any) -> list[dict[str, Any]]:
        self.calls += 1
        if self.calls <= self.failures:
            try:
                raise pg_errors.DeadlockDetected("deadlock detected")
            except pg_errors.DeadlockDetected as cause:
                raise translate_error(cause) from cause
        return [{"id": "r", "status": "pending"}]


async def test_deadlocks_are_retried_then_reported_unavailable() -> None:
    db = FlakyDb(failures=2)
    assert (await AsyncWire(db).require_run("r"))["id"] == "r"  # type: ignore[arg-type]
    assert db.calls == 3
    db = FlakyDb(failures=3)
    with pytest.raises(DatabaseUnavailable):
        await AsyncWire(db).require_run("r")  # type: ignore[arg-type]
    assert db.calls == 3
