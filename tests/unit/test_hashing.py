"""Input hashes follow the published algorithm: the vectors of the wire contract, bit for bit (no database)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidebase.core.serde import JsonSerializer, canonical_hash

VECTORS = [
    (None, "74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b"),
    ({"b": 2, "a": 1}, "43258cff783fe7036d8a43033f830adfc60ec037382473548ac742b888292777"),
    ({"nested": {"y": 2, "x": 1}, "a": 1}, "8a2fa904814b995fc8ca73fb30f16f62438b97f7cba151dca363a78278f08b05"),
    ([1, "x", True, None], "195b179e8a94fa7d25916303b6af04b98d7ae67ac0ef86f513e15d47767ee727"),
    ({}, "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"),
    ("h\u00e9llo\n", "4b8b5a6914ef9b41e4170d61b0d088b04cd65f08adba45ef7d9c2a82021205d7"),
    ({"é": 1, "z": 2, "Z": 3, "aa": 4, "a": 5}, "af3ee4170d7c0b3281ebe2949769a8796fa7a52c305bc40db1376752240b0039"),
    ({"slash": "a/b\\c", "quote": '"q"', "ctrl": "a\tb\u0001"},
     "2294d6682a872e975c79e78b0b49981f3250f8b4f532368a974c717140196e71"),
    ({"n": 1.0}, "3b6b06ecd1c968c8e738e0f11c4bb361fca80a9a694de22fe66a05286afbd081"),
    ({"n": 1}, "2bfd14f43d17fc7cea24e0917a8879b4b2f880b8baeec1b9d90fbaad655e71bd"),
]


@pytest.mark.parametrize(("value", "digest"), VECTORS)
def test_published_vectors(value: Any, digest: str) -> None:
    """Each published input hashes to its published SHA-256."""
    assert canonical_hash(value, JsonSerializer()) == digest


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(json_values)
def test_hash_ignores_key_order(value: Any) -> None:
    """Re-serializing a value with shuffled key order does not change its hash."""
    reordered = value
    if isinstance(value, dict):
        reordered = dict(reversed(list(value.items())))
    assert canonical_hash(reordered, JsonSerializer()) == canonical_hash(value, JsonSerializer())
