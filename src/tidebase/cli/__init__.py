"""The `tidebase` command: a thin shell over the sync library (`tidebase.cli.main`)."""

from __future__ import annotations

from tidebase.cli.main import create_parser, main

__all__ = ["create_parser", "main"]
