"""The crash-test kit for users' own workflows: `crash_test` and the pytest plugin's `tide`/`atide` fixtures.

`crash_test(tide, workflow, input=...)` crashes a workflow at every step boundary and checks that resuming it keeps
Tidebase's guarantees (see `tidebase.testing.crash_async`); `acrash_test` is the same for `AsyncTidebase`. The
fixtures come from `tidebase.testing.plugin`, registered with pytest through an entry point. See docs/testing.md.
"""

from __future__ import annotations

from tidebase.testing._probe import (
    AFTER_COMMIT,
    BEFORE_COMMIT,
    Boundary,
    BoundaryOutcome,
    CrashReport,
    CrashSignal,
    CrashTestFailure,
    SimulatedCrash,
)
from tidebase.testing.crash import crash_test
from tidebase.testing.crash_async import crash_test as acrash_test

__all__ = ["crash_test", "acrash_test", "CrashReport", "BoundaryOutcome", "Boundary", "CrashTestFailure",
           "CrashSignal", "SimulatedCrash", "AFTER_COMMIT", "BEFORE_COMMIT"]

for _name in ("CrashReport", "BoundaryOutcome", "Boundary", "CrashTestFailure", "CrashSignal", "SimulatedCrash"):
    globals()[_name].__module__ = "tidebase.testing"  # where users import them from
del _name
