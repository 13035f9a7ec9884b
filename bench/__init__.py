"""Benchmarks for Tidebase, run as commands: `python -m bench core --help`, `python -m bench compare --help`.

Nothing here is a test: the commands measure and print, and never fail on a timing goal.
"""

from __future__ import annotations
