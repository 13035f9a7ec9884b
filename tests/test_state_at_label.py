"""Time travel by label: a label finds its snapshot in whichever stream holds it, unless it is ambiguous."""

from __future__ import annotations

from typing import Any

import pytest

from tidebase import InvalidArgument, NotFound, Tidebase


def _writer(run: Any, input: Any) -> None:
    run.state.set({"phase": "drafting"})
    run.snapshots.create("draft-1", state={"title": "Tides"}, target={"type": "report", "id": "r-7"})
    run.state.set({"phase": "review"}, label="shared")
    run.snapshots.create("shared", state={"title": "Tides, v2"}, target={"type": "report", "id": "r-7"})


def test_a_label_finds_its_snapshot_without_naming_the_stream(tide: Tidebase) -> None:
    """`state_at(run_id, label=...)` right after `run.snapshots.create(label, ...)` returns that snapshot, found in
    its target's stream; naming the stream still works."""
    tide.run("writer", _writer, run_id="w")
    found = tide.runs.state_at("w", label="draft-1")
    assert (found.stream, found.value) == ("report:r-7", {"title": "Tides"})
    assert tide.runs.state_at("w", label="draft-1", stream="report:r-7").value == {"title": "Tides"}


def test_an_ambiguous_label_names_its_streams_and_a_missing_one_is_not_found(tide: Tidebase) -> None:
    """A label present in two streams raises InvalidArgument naming both; an unknown label raises NotFound;
    versions and steps without a stream still read the run's own stream."""
    tide.run("writer", _writer, run_id="w")
    with pytest.raises(InvalidArgument, match=r"'report:r-7', 'run'.*stream="):
        tide.runs.state_at("w", label="shared")
    with pytest.raises(NotFound, match="no state version labelled 'nope'"):
        tide.runs.state_at("w", label="nope")
    assert tide.runs.state_at("w", version=1).value == {"phase": "drafting"}
