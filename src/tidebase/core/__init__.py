"""The core: runs, steps, leases, state and events, and the database they live in.

What a workflow's `run.step()` costs, and every invariant of a run (fenced writes, gap-free events, input hashes,
resume contracts), is decided here and in `tidebase/sql`. Nothing in this package imports the features above it
(`tidebase.agents`, `tidebase.ops`) or the doors (`tidebase.client`, `tidebase.server`, `tidebase.cli`).
"""
