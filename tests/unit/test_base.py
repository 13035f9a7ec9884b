"""The I/O-free rules: resume contracts, step plans, names, cursors, payload checks, the query file (no database)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidebase import InputMismatch, InvalidArgument, ManualReviewRequired, PayloadError
from tidebase.core.rules import (
    Action,
    Checkpoint,
    ResumeContract,
    StepKeys,
    decode_cursor,
    encode_cursor,
    plan_step,
    seconds_of,
)
from tidebase.core.serde import JsonSerializer, decode, encode
from tidebase.sql import load_queries, migrations

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("effects", "key", "replay", "expected", "marker"),
    [
        ((), None, None, "auto", False),
        (["read"], None, None, "auto", True),
        (["email.send"], None, None, "manual", True),
        (["email.send"], "welcome:42", None, "auto", True),
        ((), None, "never", "never", True),
    ],
)
def test_resume_contract_defaults(effects: object, key: str | None, replay: str | None, expected: str,
                                  marker: bool) -> None:
    """replay defaults to auto for pure, read-only or keyed steps and to manual for unkeyed writes."""
    contract = ResumeContract.build(effects, key, replay)
    assert (contract.replay, contract.needs_marker) == (expected, marker)


def test_step_plans() -> None:
    """A stored checkpoint is replayed, re-executed, parked or refused according to its status and contract."""
    cp = Checkpoint("k", "completed", "h", '{"n": 5}', None, 1, False)
    assert plan_step(cp, "h", run_id="r", key="k").output == {"n": 5}  # the stored text, decoded by the replay
    with pytest.raises(InputMismatch):
        plan_step(cp, "other", run_id="r", key="k")
    running = cp._replace(status="running", output=None, contract={"replay": "manual"})
    assert plan_step(running, "h", run_id="r", key="k").action is Action.PARK
    assert plan_step(running._replace(contract={"replay": "auto"}), "h", run_id="r", key="k").attempt == 2
    with pytest.raises(ManualReviewRequired):
        plan_step(cp._replace(status="manual_review"), "h", run_id="r", key="k")
    assert plan_step(None, "h", run_id="r", key="k").action is Action.EXECUTE


def test_occurrence_keys() -> None:
    """Repeated names are numbered from the second occurrence."""
    keys = StepKeys()
    assert [keys.next("a")[0], keys.next("b")[0], keys.next("a")[0], keys.next("a")[0]] == ["a", "b", "a#2", "a#3"]


def test_cursor_round_trip_and_garbage() -> None:
    """A cursor decodes to what was encoded; garbage is an InvalidArgument."""
    at, _ = decode_cursor(None)
    assert decode_cursor(encode_cursor(at, "x")) == (at, "x")
    with pytest.raises(InvalidArgument):
        decode_cursor("%%%")


def test_nul_detection_ignores_escaped_backslash_u() -> None:
    """The literal text backslash-u-0000 is storable; a real U+0000 is not."""
    assert encode({"t": "\\u0000"}, JsonSerializer(), limit=100, what="x")
    with pytest.raises(PayloadError):
        encode({"t": "\x00"}, JsonSerializer(), limit=100, what="x")


def test_queries_and_migrations_load() -> None:
    """Every named query loads, and migrations are numbered 1..N."""
    queries = load_queries()
    assert {"complete_step", "acquire_run", "create_run", "load_checkpoints"} <= set(queries)
    assert [m.version for m in migrations()] == list(range(1, len(migrations()) + 1))


def test_generated_sync_code_is_up_to_date() -> None:
    """The sync modules and tests are exactly what the converter generates from their async sources."""
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "async_to_sync.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("value", [True, float("nan"), float("inf"), -1, "30d", None, timedelta(seconds=-1)])
def test_seconds_are_refused_unless_a_finite_span(value: object) -> None:
    """Timers, queue delays and retention ages share one check: a bool, NaN, infinity, a negative span, or a text
    where no duration is accepted, is an InvalidArgument naming the argument."""
    with pytest.raises(InvalidArgument, match="delay"):
        seconds_of(value, "delay")


def test_seconds_accept_numbers_timedeltas_and_durations_where_asked() -> None:
    assert seconds_of(1.5, "x") == 1.5 and seconds_of(timedelta(minutes=2), "x") == 120.0
    assert seconds_of("2h", "age", durations=True) == 7200.0
    with pytest.raises(InvalidArgument, match="at most 10"):
        seconds_of(11, "x", maximum=10)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(_json_values, st.sampled_from(["", " ", "\n\t "]))
def test_stored_json_decodes_as_json_loads_does(value: Any, space: str) -> None:
    """`decode` (the replay's fast path) returns what `json.loads` returns, for compact text and for text with white
    space around the value."""
    text = space + json.dumps(value, ensure_ascii=False, separators=(",", ":")) + space
    assert decode(text) == json.loads(text)


@pytest.mark.parametrize("text", ["1 2", "{} x", "[1]]", "", "nul"])
def test_stored_json_that_is_not_one_value_is_refused_as_json_loads_refuses_it(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        decode(text)
