"""The price table of the integrations (`prices=`), without a database: how a response's model finds its price."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tidebase.integrations._common import check_prices, cost_usd

PRICES = check_prices({"gpt-4.1": (2.0, 8.0), "gpt-4.1-mini": (0.40, 1.60)})


def test_a_model_is_priced_by_its_own_entry_or_the_longest_one_it_is_a_snapshot_of() -> None:
    """An exact entry wins; a dated snapshot takes the longest entry its name extends; anything else has no cost."""
    assert cost_usd(PRICES, "gpt-4.1", 1_000_000, 0) == Decimal("2.0")
    assert cost_usd(PRICES, "gpt-4.1-mini-2025-04-14", 1_000_000, 1_000_000) == Decimal("2.00")
    assert cost_usd(PRICES, "gpt-4.1-2025-04-14", 0, 1_000_000) == Decimal("8.0")
    assert cost_usd(PRICES, "gpt-4.10", 1_000_000, 0) is None  # not a snapshot of gpt-4.1
    assert cost_usd(PRICES, None, 1_000_000, 0) is None


def test_a_malformed_price_is_refused() -> None:
    """A price is a pair of non-negative numbers per million input and output tokens."""
    for bad in ((1.0,), (1.0, -2.0), ("1", "2")):
        with pytest.raises(ValueError, match="input_per_mtok, output_per_mtok"):
            check_prices({"m": bad})  # type: ignore[dict-item]
