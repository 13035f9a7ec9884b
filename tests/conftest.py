"""Test configuration: fixtures live in the fix_* plugins listed here."""

from __future__ import annotations

pytest_plugins = ["fix_db", "fix_probe"]
