"""The I/O-free half of the crash-test kit: the probe on the step hook, the simulated crash, and the verdicts.

`crash_test` (`tidebase.testing.crash_async`, and its generated sync twin) only sequences invocations of a run; what
it observes and how it judges live here, so that both APIs share them. The probe is installed as the core's step hook
(`tidebase.core.context_async.step_hook`, None unless a kit installs one): it counts, per run under test and step key,
how many times a step's function was called, records the order in which checkpoints were committed, and raises the
simulated crash at the one boundary it is armed for.

A crash is simulated in-process. At the armed point the probe stops the run's context (so nothing of that invocation
writes again, even if user code catches what follows) and raises `CrashSignal`, a BaseException, so that no `except
Exception` of the workflow swallows it. The kit's wrapper around the workflow turns whatever then leaves the workflow
into `SimulatedCrash`, a DatabaseUnavailable: the engine records nothing for an invocation that lost its database, so
the run stays `running` under a lease whose owner no context of this process holds any more, exactly as a killed
process leaves it, and the next invocation takes the lease over at once (`tidebase.core.owners.holder_exited`).

Deliberately not here: child runs' steps (only the steps of the run under test are boundaries), and real process
death (a SIGKILL leaves the same database state; the project's own suite covers that path in tests/test_takeover.py).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tidebase.core.rules import ResumeContract
from tidebase.errors import DatabaseUnavailable

AFTER_COMMIT = "after_commit"
BEFORE_COMMIT = "before_commit"
# The probe's hook points for each crash point (see tidebase.core.context_async.step_hook).
_HOOK_POINT = {AFTER_COMMIT: "committed", BEFORE_COMMIT: "ran"}


class CrashSignal(BaseException):
    """The simulated crash, raised at the armed step boundary; a BaseException so `except Exception` cannot stop it."""


def carries_crash(exc: BaseException) -> bool:
    """Whether `exc` is the crash signal or holds it (in an exception group, or as its cause or context): whether
    the signal left the workflow rather than being caught in it."""
    stack, seen = [exc], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, CrashSignal):
            return True
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


class SimulatedCrash(DatabaseUnavailable):
    """The invocation ended in a simulated crash: nothing more of it was recorded, and its lease is left behind."""


class CrashTestFailure(AssertionError):
    """A workflow broke a durability guarantee at a step boundary; the message names the boundary and the step."""


@dataclass(frozen=True)
class Boundary:
    """A crash point: right after step `step` (the `index`-th checkpoint of the uninterrupted run, from 1) committed,
    or, for a step that writes a `running` marker (side effects or a non-auto replay mode), after its function
    returned and before its checkpoint was written."""

    index: int
    step: str
    point: str

    def __str__(self) -> str:
        where = "after its checkpoint committed" if self.point == AFTER_COMMIT else "before its checkpoint"
        return f"boundary {self.index} ({where}) of step {self.step!r}"


@dataclass(frozen=True)
class BoundaryOutcome:
    """What happened when the run crashed at `boundary` and was invoked again.

    `outcome` is `resumed` (the run finished), `parked` (an unkeyed side effect was interrupted mid-flight: the run
    waits for an operator at step `parked`, which is its resume contract), `failed` (the resumed run raised) or `not
    reached` (the crash point never came). `executions` counts, per step key, the calls of the step's function across
    both invocations; `interrupted` maps each step the crash interrupted (its function had been called, or its
    `running` marker written, and its checkpoint was not) to its contract's replay mode. `problems` is empty when
    every guarantee held."""

    boundary: Boundary
    run_id: str
    outcome: str
    result: Any
    executions: dict[str, int]
    interrupted: dict[str, str]
    parked: str | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class CrashReport:
    """Every boundary the kit crashed a run at, with the uninterrupted run (`run_id`), its `result` and its `steps`
    (in commit order)."""

    workflow: str
    run_id: str
    result: Any
    steps: tuple[str, ...]
    outcomes: tuple[BoundaryOutcome, ...]

    @property
    def failures(self) -> tuple[BoundaryOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.ok)

    @property
    def parked(self) -> tuple[BoundaryOutcome, ...]:
        """Boundaries whose run was parked for review, as the interrupted step's resume contract requires."""
        return tuple(o for o in self.outcomes if o.outcome == "parked")

    def describe(self) -> str:
        """One line per boundary: where it crashed, what followed, and each problem."""
        lines = [f"crash test of workflow {self.workflow!r}: {len(self.steps)} steps, {len(self.outcomes)} boundaries"]
        for o in self.outcomes:
            parked = f" at step {o.parked!r}" if o.parked else ""
            lines.append(f"  {o.boundary}: {o.outcome}{parked} (run {o.run_id})")
            lines.extend(f"    - {problem}" for problem in o.problems)
        return "\n".join(lines)


@dataclass
class _Invocation:
    """What the steps of one invocation (one run context) did: key -> replay mode of each step whose function it
    called, and the keys it committed."""

    entered: dict[str, str] = field(default_factory=dict)
    committed: set[str] = field(default_factory=set)


@dataclass
class _Tracked:
    executions: Counter[str] = field(default_factory=Counter)
    values: dict[str, Any] = field(default_factory=dict)
    committed: list[tuple[str, ResumeContract]] = field(default_factory=list)
    invocations: dict[Any, _Invocation] = field(default_factory=dict)  # by run context (held: ids are not reused)
    crashed: Any = None  # the run context the probe crashed
    swallowed: bool = False


class Probe:
    """The step hook of one crash test: observes the runs it tracks and crashes the armed one (thread-safe: sync
    integrations run steps from worker threads).

    An execution is a call of a step's function (counted as it is entered). A crash stops more than the step it hits:
    every later hook of the crashed invocation (its run context) raises too, so no function of it is called after
    the crash, and steps running concurrently with it (an agent's parallel tool calls, maybe in worker threads) stop
    at their next hook, as they would in a dead process, also when they get there after the run was invoked again. A
    step whose function was called and whose checkpoint the invocation did not commit was interrupted; a checkpoint a
    concurrent step committed before reaching its hook stays committed, as if the process had died a moment
    later."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, _Tracked] = {}
        self._armed: tuple[str, str, str] | None = None

    def track(self, run_id: str) -> None:
        with self._lock:
            self._runs.setdefault(run_id, _Tracked())

    def arm(self, run_id: str, boundary: Boundary) -> None:
        """Crashes run `run_id` at `boundary`, once."""
        with self._lock:
            self._armed = (run_id, boundary.step, _HOOK_POINT[boundary.point])

    def disarm(self) -> None:
        with self._lock:
            self._armed = None

    def crashed(self, run: Any) -> bool:
        """Whether the probe crashed the invocation that runs in context `run`."""
        with self._lock:
            tracked = self._runs.get(run.run_id)
            return tracked is not None and tracked.crashed is run

    def interrupted(self, run_id: str) -> dict[str, str]:
        """The steps whose function the crashed invocation called without committing their checkpoint, with the
        replay mode of their resume contracts (steps whose `running` marker it left are interrupted too)."""
        with self._lock:
            tracked = self._runs[run_id]
            invocation = tracked.invocations.get(tracked.crashed, _Invocation())
            return {k: mode for k, mode in invocation.entered.items() if k not in invocation.committed}

    def mark_swallowed(self, run_id: str) -> None:
        """Notes that the workflow of crashed run `run_id` caught the crash signal and went on."""
        with self._lock:
            self._runs[run_id].swallowed = True

    def swallowed(self, run_id: str) -> bool:
        with self._lock:
            return self._runs[run_id].swallowed

    def committed(self, run_id: str) -> list[tuple[str, ResumeContract]]:
        with self._lock:
            return list(self._runs[run_id].committed)

    def executions(self, run_id: str) -> dict[str, int]:
        with self._lock:
            return dict(self._runs[run_id].executions)

    def value(self, run_id: str, key: str) -> Any:
        """What the function of step `key` of run `run_id` returned last."""
        with self._lock:
            return self._runs[run_id].values[key]

    def __call__(self, point: str, run: Any, key: str, contract: ResumeContract, value: Any) -> None:
        with self._lock:
            tracked = self._runs.get(run.run_id)
            if tracked is None:  # a child run, or a run of no crash test
                return
            invocation = tracked.invocations.setdefault(run, _Invocation())
            if point == "committed":  # also after the crash: the checkpoint is in the database
                tracked.committed.append((key, contract))
                invocation.committed.add(key)
            stop = tracked.crashed is run  # the crashed invocation: nothing more of it happens
            fire = not stop and self._armed == (run.run_id, key, point)
            if not stop and point == "enter":
                tracked.executions[key] += 1
                invocation.entered[key] = contract.replay
            elif point == "ran":
                tracked.values[key] = value
            if fire:
                tracked.crashed = run
                self._armed = None
        if fire:
            run.stop(SimulatedCrash(f"simulated crash of run {run.run_id!r} at step {key!r}", run_id=run.run_id,
                                    step=key))
        if fire or stop:
            raise CrashSignal(f"simulated crash at step {key!r} ({point})")

    @contextmanager
    def installed(self, module: Any) -> Iterator[Probe]:
        """Installs this probe as the step hook of `module` (tidebase.core.context or context_async) meanwhile."""
        if module.step_hook is not None:
            raise RuntimeError("another crash test is running in this process; crash tests do not nest")
        module.step_hook = self
        try:
            yield self
        finally:
            module.step_hook = None


def boundaries(committed: list[tuple[str, ResumeContract]]) -> list[Boundary]:
    """Every crash point of a run whose checkpoints were committed in this order: after each commit, and before the
    commit of each step that writes a `running` marker."""
    out: list[Boundary] = []
    for index, (key, contract) in enumerate(committed, 1):
        out.append(Boundary(index, key, AFTER_COMMIT))
        if contract.needs_marker:
            out.append(Boundary(index, key, BEFORE_COMMIT))
    return out


def same_result(result: Any, run_id: str, baseline: Any, baseline_run_id: str) -> bool:
    """Whether two runs' results are equal, compared as JSON with each run's own id replaced by one placeholder: a
    result may embed its run's id (an idempotency key made of it), which differs from run to run by design."""
    def normal(value: Any, own: str) -> str:
        return json.dumps(value, sort_keys=True, default=str).replace(own, "<run id>")

    return normal(result, run_id) == normal(baseline, baseline_run_id)


def judge(
    boundary: Boundary, *, baseline_result: Any, baseline_run_id: str, baseline_steps: tuple[str, ...],
    baseline_executions: dict[str, int], outcome: str, run_id: str, result: Any, executions: dict[str, int],
    completed: tuple[str, ...], interrupted: dict[str, str], parked: str | None, released: set[str],
    errors: list[str],
) -> tuple[str, ...]:
    """The problems of one boundary (none when every guarantee held).

    Every step's function is called over both invocations as often as in the uninterrupted run (once, unless it
    retried), except a step the crash interrupted (`interrupted` maps each to its replay mode) when its contract
    re-runs it (pure or keyed: `auto`) or an operator released it: twice as often then. A run may be parked only at
    an interrupted step whose contract forbids a blind re-run. A resumed run returns the uninterrupted run's result
    (see `same_result`) and completed the same steps, each of them executed in this run."""
    problems = list(errors)
    for key, count in sorted(executions.items()):
        mode = interrupted.get(key)
        allowed = baseline_executions.get(key, 1) * (2 if mode is not None and (mode == "auto" or key in released)
                                                     else 1)
        if count > allowed:
            problems.append(f"step {key!r} executed {count} times (at most {allowed} allowed)")
    if parked is not None and interrupted.get(parked, "auto") == "auto":
        problems.append(f"the run was parked for review at step {parked!r}, whose contract re-runs it")
    if outcome == "resumed":
        if not same_result(result, run_id, baseline_result, baseline_run_id):
            problems.append(f"the resumed run returned {result!r}, the uninterrupted run {baseline_result!r}")
        if set(completed) != set(baseline_steps):
            missing = sorted(set(baseline_steps) - set(completed))
            extra = sorted(set(completed) - set(baseline_steps))
            problems.append(f"the resumed run's steps differ from the uninterrupted run's (missing {missing}, "
                            f"extra {extra}): the workflow is not deterministic")
        for key in baseline_steps:
            if key in completed and executions.get(key, 0) == 0:
                problems.append(f"step {key!r} completed without its function ever running in this run")
    return tuple(problems)
