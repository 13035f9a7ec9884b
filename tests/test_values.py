"""The values agent code returns every day are stored, and read back the same on first execution and on replay;
mistakes in what is passed to the API are refused before anything is written, naming what was wrong."""

from __future__ import annotations

import base64
import dataclasses
import enum
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

import psycopg
import pytest

from tidebase import PayloadError, Tidebase
from tidebase.aio import AsyncTidebase
from tidebase.core.db_async import TUPLE_ROWS
from tidebase.core.rules import Checkpoint
from tidebase.core.serde import JsonSerializer, canonical_hash
from tidebase.sql import load_queries


class Color(enum.Enum):
    RED = "red"
    NESTED = ("a", 1)


@dataclasses.dataclass
class Meeting:
    at: datetime
    room: uuid.UUID


PARIS = timezone(timedelta(hours=1))
ROOM = uuid.UUID("0b9f6b7e-8a43-4b9e-9f1e-3d9a2c1b5e77")

CASES: list[tuple[str, Any, Any]] = [
    ("aware datetime", datetime(2026, 12, 7, 18, 30, tzinfo=PARIS), "2026-12-07T18:30:00+01:00"),
    ("utc datetime", datetime(2026, 12, 7, 17, 30, 0, 250000, tzinfo=UTC), "2026-12-07T17:30:00.250000+00:00"),
    ("naive datetime", datetime(2026, 12, 7, 18, 30), "2026-12-07T18:30:00"),
    ("date", date(2026, 12, 7), "2026-12-07"),
    ("time", time(18, 30, 5), "18:30:05"),
    ("aware time", time(18, 30, tzinfo=PARIS), "18:30:00+01:00"),
    ("timedelta", timedelta(minutes=1, seconds=30.5), 90.5),
    ("uuid", ROOM, str(ROOM)),
    ("decimal", Decimal("12.30"), "12.30"),
    ("enum", Color.RED, "red"),
    ("enum with a tuple value", Color.NESTED, ["a", 1]),
    ("set", {3, 1, 2}, [1, 2, 3]),
    ("frozenset of strings", frozenset({"b", "a"}), ["a", "b"]),
    ("tuple", (1, "two", None), [1, "two", None]),
    ("bytes", b"\x00\xffhi", base64.b64encode(b"\x00\xffhi").decode()),
    ("bytearray", bytearray(b"abc"), "YWJj"),
    ("path", PurePosixPath("/tmp/report.md"), "/tmp/report.md"),
    ("dataclass with nested values", Meeting(datetime(2026, 1, 2, tzinfo=UTC), ROOM),
     {"at": "2026-01-02T00:00:00+00:00", "room": str(ROOM)}),
    # Replay decodes the stored JSON text itself (tidebase.core.rules.plan_step): integers past 64 bits stay exact.
    ("integers past 64 bits", [2**70, -(2**64) - 1, 0], [2**70, -(2**64) - 1, 0]),
    ("none", None, None),
    ("text with escapes and astral characters", 'naïve ☃ 🎉 "q" \\ \n\t', 'naïve ☃ 🎉 "q" \\ \n\t'),
    ("nested empty containers", {"a": [], "b": {}, "c": [[{}]]}, {"a": [], "b": {}, "c": [[{}]]}),
]


@pytest.mark.parametrize(("label", "value", "stored"), CASES, ids=[c[0] for c in CASES])
def test_everyday_values_round_trip_the_same_on_first_execution_and_replay(
    tide: Tidebase, label: str, value: Any, stored: Any
) -> None:
    """A step returning the value gets back its documented JSON form on the first execution, and the same on
    replay without running the step again."""
    executed: list[int] = []
    seen: list[Any] = []

    def wf(run: Any, input: Any) -> Any:
        def produce() -> Any:
            executed.append(1)
            return value

        seen.append(run.step("value", produce))
        if len(seen) == 1:
            raise RuntimeError("crash after the checkpoint")
        return seen[-1]

    with pytest.raises(RuntimeError):
        tide.run("values", wf, run_id="r")
    assert tide.run("values", wf, run_id="r") == stored
    assert seen == [stored, stored]
    assert executed == [1]


def test_checkpoints_are_named_in_the_order_load_checkpoints_returns_its_columns(db: psycopg.Connection[Any]) -> None:
    """`Checkpoint` names the tuple rows of `load_checkpoints` by position: a column added to, moved in or renamed in
    the statement without the record would silently shift every field a replay reads."""
    with db.cursor() as cur:
        cur.execute(load_queries()["load_checkpoints"], {"run_id": "no-such-run"})
        assert cur.description is not None
        assert tuple(column.name for column in cur.description) == Checkpoint._fields
    assert "load_checkpoints" in TUPLE_ROWS


def test_sets_hash_alike_whatever_their_iteration_order() -> None:
    """Equal sets give the same input hash, so a set input is a stable checkpoint key."""
    serializer = JsonSerializer()
    assert canonical_hash({"tags": {"z", "a", "m"}}, serializer) == canonical_hash({"tags": ["a", "m", "z"]},
                                                                                 serializer)
    assert canonical_hash({1.5, "x", 2}, serializer) == canonical_hash({2, "x", 1.5}, serializer)


def test_an_unknown_type_is_refused_naming_the_step_and_the_type(tide: Tidebase) -> None:
    """An object of an unknown type raises PayloadError naming the step and the type."""

    class Opaque:
        pass

    with pytest.raises(PayloadError, match=r"output of step 'x' in run 'r' is not JSON-serializable: Opaque"):
        tide.run("values", lambda run, input: run.step("x", Opaque), run_id="r")


def _row_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM tidebase.runs) + (SELECT count(*) FROM tidebase.steps)"
                           ).fetchone()
    assert row is not None
    return int(row[0])


async def _async_workflow(run: Any, input: Any) -> int:
    return 1


def test_an_async_workflow_on_the_sync_api_is_refused_before_anything_is_written(tide: Tidebase, dsn: str) -> None:
    """tide.run with an `async def` workflow raises TypeError pointing at AsyncTidebase, and writes nothing."""
    with pytest.raises(TypeError, match=r"async function.*tidebase\.aio\.AsyncTidebase"):
        tide.run("wf", _async_workflow)
    with pytest.raises(TypeError, match="async function"):
        tide.workflow("wf")(_async_workflow)
    assert _row_count(dsn) == 0


def test_an_async_step_on_the_sync_api_is_refused_before_the_step_is_written(tide: Tidebase, dsn: str) -> None:
    """run.step with an `async def` function, or an object whose __call__ is async, raises TypeError naming the step
    before any step row exists."""

    class Caller:
        async def __call__(self) -> int:
            return 1

    async def fetch() -> int:
        return 1

    for fn in (fetch, Caller()):
        with pytest.raises(TypeError, match=r"the function of step 'fetch'.*async function"):
            tide.run("wf", lambda run, input, fn=fn: run.step("fetch", fn))
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM tidebase.steps").fetchone() == (0,)


def test_a_step_given_data_instead_of_a_function_names_the_step_and_what_was_passed(tide: Tidebase) -> None:
    """run.step("plan", ["a", "b"]) raises TypeError naming the step, the type and the value, and how to pass data."""
    with pytest.raises(TypeError) as info:
        tide.run("wf", lambda run, input: run.step("plan", ["a", "b"]))
    assert "step 'plan'" in str(info.value) and "list ['a', 'b']" in str(info.value)
    assert "input=" in str(info.value)


async def test_the_async_api_accepts_sync_and_async_functions(atide: AsyncTidebase) -> None:
    """The asyncio API runs async and sync workflows and steps alike, and refuses a non-function step by name."""

    async def wf(run: Any, input: Any) -> Any:
        async def later() -> date:
            return date(2026, 12, 7)

        return [await run.step("a", later), await run.step("b", lambda: uuid.UUID(int=1))]

    assert await atide.run("wf", wf, run_id="a") == ["2026-12-07", str(uuid.UUID(int=1))]
    with pytest.raises(TypeError, match="the function of step 'x' must be a function, not int 3"):
        await atide.run("wf", lambda run, input: run.step("x", 3))
