"""The I/O-free core shared by the sync and the async API.

Everything here is plain computation: validating names, numbering step occurrences, deriving a step's resume
contract, deciding what a step call must do given its stored checkpoint, classifying failures, and shaping payloads.
The `*_async.py` modules run SQL around these decisions and the sync modules are generated from them, so the rules
exist once. Nothing here may decide something a concurrent writer could invalidate: those decisions are made by the
SQL statements (fencing, conditional upserts), and this module only chooses which statement to send.
"""

from __future__ import annotations

import base64
import contextvars
import enum
import json
import math
import re
import secrets
import threading
import traceback
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from tidebase.core import serde as _serde
from tidebase.errors import InputMismatch, InvalidArgument, ManualReviewRequired
from tidebase.settings import span_seconds

RUN_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_OCCURRENCE_SUFFIX = re.compile(r"#\d+$")
REPLAY_MODES = ("auto", "manual", "never")
RESERVED_EVENT_PREFIXES = ("run.", "step.", "state.", "gate.", "usage.", "snapshot.", "recovery.",
                           "timer.")
MAX_NAME = 512


# The key of the step whose function is running in this thread or task, so that usage recorded inside a step is
# attributed to it (and reported as saved when the step is later replayed).
CURRENT_STEP: contextvars.ContextVar[str | None] = contextvars.ContextVar("tidebase_current_step", default=None)


def new_run_id() -> str:
    """A fresh run id: `run_` + 32 lowercase hex digits."""
    return "run_" + uuid.uuid4().hex


def new_step_id() -> str:
    """A fresh step id: `step_` + 32 lowercase hex digits (128 random bits; `secrets` costs a quarter of uuid4)."""
    return "step_" + secrets.token_hex(16)


def check_run_id(run_id: str) -> str:
    """Returns `run_id`, or raises InvalidArgument.

    A run id is 1-128 characters of `A-Z a-z 0-9 _ . : -`, starting with a letter, digit or `_`.
    """
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise InvalidArgument(
            f"invalid run id {run_id!r}: use 1 to 128 characters from A-Z a-z 0-9 _ . : - "
            "starting with a letter, digit or _"
        )
    return run_id


def check_name(value: str, what: str) -> str:
    """Returns `value`, or raises InvalidArgument: a name is 1-512 characters without control characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME or _CONTROL.search(value):
        raise InvalidArgument(f"invalid {what} {value!r}: use 1 to {MAX_NAME} characters, no control characters")
    return value


def check_step_name(name: str) -> str:
    """A step name is a name that does not end in `#<digits>`, the suffix reserved for occurrence keys."""
    check_name(name, "step name")
    if _OCCURRENCE_SUFFIX.search(name):
        raise InvalidArgument(f"invalid step name {name!r}: the suffix #<n> is reserved for repeated steps")
    return name


def check_event_type(event_type: str) -> str:
    """A custom event type is a name outside the prefixes Tidebase reserves for its own events."""
    check_name(event_type, "event type")
    if event_type.startswith(RESERVED_EVENT_PREFIXES):
        raise InvalidArgument(f"event type {event_type!r} uses a reserved prefix {RESERVED_EVENT_PREFIXES}")
    return event_type


class StepKeys:
    """Numbers repeated step names within one run invocation: `search`, `search#2`, ... (thread- and task-safe).

    The lock is a threading lock in both APIs: it is never held across an await, so it cannot block the event loop.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def next(self, name: str) -> tuple[str, int]:
        with self._lock:
            occurrence = self._counts.get(name, 0) + 1
            self._counts[name] = occurrence
        return (name if occurrence == 1 else f"{name}#{occurrence}"), occurrence


@dataclass(frozen=True)
class ResumeContract:
    """What may happen to a step that was interrupted mid-flight (started, never completed).

    `replay` defaults to `auto` when the step has no side effects (or only `read`s) or carries an idempotency key,
    and to `manual` otherwise: an unkeyed external write must not fire twice. A step needs a durable `started`
    marker before its function runs whenever it has side effects or a non-`auto` replay mode; a pure step needs none.
    Both doors store it in one form (`as_json`): the library builds it from `run.step`'s arguments, the HTTP door
    from a step's `options` (`from_options`).
    """

    side_effects: tuple[str, ...]
    idempotency_key: str | None
    replay: str
    checkpoint_invariant: Any = None
    verified_by: Any = None
    credentials: tuple[Any, ...] = ()

    @staticmethod
    def default_replay(effects: tuple[str, ...], idempotency_key: str | None) -> str:
        """`auto` for a step without side effects other than reads, or with an idempotency key; else `manual`."""
        return "auto" if all(e == "read" for e in effects) or idempotency_key else "manual"

    @classmethod
    def build(cls, side_effects: Any, idempotency_key: str | None, replay: str | None) -> ResumeContract:
        """The contract of `run.step`'s arguments, validated (InvalidArgument)."""
        if (side_effects is None or side_effects == ()) and idempotency_key is None and replay is None:
            return PURE  # most steps: no validation to do, and no new object on the hot path
        if isinstance(side_effects, str):
            side_effects = (side_effects,)
        effects = tuple(check_name(e, "side effect") for e in (side_effects or ()))
        if idempotency_key is not None:
            check_name(idempotency_key, "idempotency key")
        if replay is None:
            replay = cls.default_replay(effects, idempotency_key)
        elif replay not in REPLAY_MODES:
            raise InvalidArgument(f"replay must be one of {REPLAY_MODES}, not {replay!r}")
        return cls(effects, idempotency_key, replay)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ResumeContract:
        """The contract of a step from its `options` as docs/http-api.md#failure-classification reads them; what does
        not fit is ignored."""
        raw = options.get("sideEffects")
        if isinstance(raw, list):
            effects = tuple(e for e in raw if isinstance(e, str) and e)
        else:
            legacy = options.get("sideEffect")
            effects = (legacy,) if isinstance(legacy, str) and legacy and legacy != "none" else ()
        key = options.get("idempotencyKey")
        key = key if isinstance(key, str) and key else None
        replay = options.get("replay")
        if replay not in REPLAY_MODES:
            replay = {"retry": "auto", "review": "manual", "fail": "never"}.get(str(options.get("onAmbiguousFailure")))
        credentials = options.get("credentials")
        return cls(effects, key, replay or cls.default_replay(effects, key), options.get("checkpointInvariant"),
                   options.get("verifiedBy"), tuple(credentials) if isinstance(credentials, list) else ())

    @property
    def needs_marker(self) -> bool:
        return bool(self.side_effects) or self.replay != "auto"

    def as_json(self) -> dict[str, Any]:
        """The stored form: the three keys every contract sets, and those of the other three wire fields that are
        set (`tidebase.contract_document` gives the full resumeContract of docs/http-api.md#object-resume-contract
        where one is shown)."""
        stored: dict[str, Any] = {"sideEffects": list(self.side_effects), "idempotencyKey": self.idempotency_key,
                                  "replay": self.replay}
        if self.checkpoint_invariant is not None:
            stored["checkpointInvariant"] = self.checkpoint_invariant
        if self.verified_by is not None:
            stored["verifiedBy"] = self.verified_by
        if self.credentials:
            stored["credentials"] = list(self.credentials)
        return stored

    def as_text(self) -> str:
        """The stored JSON text; the pure default is a constant, so the hot path does not re-encode it."""
        if self == PURE:
            return PURE_TEXT
        return json.dumps(self.as_json(), separators=(",", ":"))

    def final_failure(self) -> tuple[str, str]:
        """(step status, decision) for a step whose last allowed attempt raised."""
        if self.replay == "never":
            return "failed", "fail_hard"
        if self.replay == "manual":
            return "manual_review", "manual_review"
        return "failed_retryable", "safe_replay"


PURE = ResumeContract((), None, "auto")
PURE_TEXT = json.dumps(PURE.as_json(), separators=(",", ":"))


class Action(enum.Enum):
    REPLAY = "replay"
    EXECUTE = "execute"
    PARK = "park"


class Checkpoint(NamedTuple):
    """A step row as the `load_checkpoints` statement returns it, its columns in order (the database sends these as
    plain tuples: see `tidebase.core.db_async.TUPLE_ROWS`). `output` is the JSON text, decoded only by a replay;
    `contract` is set only for a step that is not completed; `has_usage`: its replay must report saved usage."""

    key: str
    status: str
    input_hash: str
    output: str | None
    contract: dict[str, Any] | None
    attempt: int
    has_usage: bool


def checkpoints_by_key(rows: Iterable[Any]) -> dict[str, Checkpoint]:
    """The rows of `load_checkpoints` (tuples, typed as the database's rows), by step key."""
    return {row[0]: Checkpoint._make(row) for row in rows}


class StepPlan(NamedTuple):
    """What `plan_step` decided: the action, the decoded output of a REPLAY, the attempt of an EXECUTE or PARK."""

    action: Action
    output: Any = None
    attempt: int = 1


def plan_step(checkpoint: Checkpoint | None, input_hash: str, *, run_id: str, key: str) -> StepPlan:
    """Decides a step call from the checkpoint loaded when the run started (None when there is none).

    It answers only what that snapshot settles, without a round trip: a replay (the step is completed), and the
    refusals of other input and of a parked step (steps 3, 4 and 7 of the decision procedure of `tidebase.begin_step`,
    on rows only an operator can change under this holder's lease); the rest is decided in SQL, by `begin_step` for a
    step with a marker and by the conditions of `tidebase.complete_step` for a pure one.
    Raises InputMismatch when the stored input hash differs (whatever the status), and ManualReviewRequired for a
    step an operator has not released yet. A `running` checkpoint was left by an earlier holder (this holder loaded
    the checkpoints after taking the lease), so the step was interrupted: its stored contract decides, and one that
    forbids a blind re-run is PARK, which sends the step to the step decision both doors share (`tidebase.begin_step`,
    sql/functions/40_steps.sql): it parks the step, or runs it when an operator released it meanwhile.
    A REPLAY carries the checkpoint's output decoded (it is loaded as JSON text, and decoded only here).
    """
    if checkpoint is None:
        return StepPlan(Action.EXECUTE, attempt=1)
    if checkpoint.input_hash != input_hash:
        raise InputMismatch(
            f"step {key!r} of run {run_id!r} was checkpointed for other input "
            f"(stored hash {checkpoint.input_hash[:12]}…, now {input_hash[:12]}…)",
            run_id=run_id, step=key, kind="step",
        )
    status = checkpoint.status
    if status == "completed":
        text = checkpoint.output
        return StepPlan(Action.REPLAY, output=None if text is None else _serde.decode(text))
    if status == "manual_review":
        raise ManualReviewRequired(
            f"step {key!r} of run {run_id!r} is parked for manual review; release or skip it first",
            run_id=run_id, step=key,
        )
    if status == "running" and (checkpoint.contract or {}).get("replay", "auto") != "auto":
        return StepPlan(Action.PARK, attempt=checkpoint.attempt)
    return StepPlan(Action.EXECUTE, attempt=checkpoint.attempt + 1)


# Errors are always recorded, whatever the payload limit: their text is bounded here instead (the end of a traceback
# is the part that matters, so that is what is kept).
MAX_ERROR_MESSAGE = 4_000
MAX_ERROR_TRACEBACK = 16_000
ERROR_LIMIT = 64 * 1024


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The stored form of an exception: qualified type, message and formatted traceback, each bounded in size."""
    cls = type(exc)
    # U+0000 cannot be stored in jsonb; an error must still be recorded, so it is spelled out instead.
    message = str(exc).replace("\x00", "\\x00")
    trace = "".join(traceback.format_exception(exc)).replace("\x00", "\\x00")
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": message if len(message) <= MAX_ERROR_MESSAGE else message[:MAX_ERROR_MESSAGE] + "…",
        "traceback": trace if len(trace) <= MAX_ERROR_TRACEBACK else "…" + trace[-MAX_ERROR_TRACEBACK:],
    }


def retry_delay(failures: int, backoff: float, cap: float = 60.0) -> float:
    """Seconds to wait after the n-th consecutive failure: backoff × 2^(n-1), capped."""
    return min(cap, backoff * (2 ** (failures - 1))) if backoff > 0 else 0.0


# Keyset cursors are opaque to callers: base64 of "<created_at isoformat>|<id>".
LIST_START = (datetime.fromisoformat("9999-12-31T00:00:00+00:00"), "")


def encode_cursor(created_at: datetime, run_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{run_id}".encode()).decode()


def decode_cursor(cursor: str | None) -> tuple[datetime, str]:
    if cursor is None:
        return LIST_START
    try:
        at, _, run_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), run_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"invalid cursor {cursor!r}") from exc


def list_query(status: str | None, workflow: str | None) -> str:
    """The name of the list statement that serves these filters from an index."""
    if status and workflow:
        return "list_runs_by_status_workflow"
    if status:
        return "list_runs_by_status"
    if workflow:
        return "list_runs_by_workflow"
    return "list_runs"


def seconds_of(value: Any, what: str, *, durations: bool = False, maximum: float | None = None) -> float:
    """`value` as a finite number of seconds, 0 or more: a number of seconds, a timedelta, or with `durations` a text
    such as `30d` (s, m, h, d, w). InvalidArgument naming `what` for anything else (a bool, NaN, a negative or, past
    `maximum`, too long a span), raised before anything is sent."""
    kinds = ("a duration such as 30d, 12h or 90m (s, m, h, d, w), a number of seconds or a timedelta" if durations
             else "a number of seconds or a timedelta")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif durations and isinstance(value, str):
        try:
            seconds = span_seconds(value)
        except ValueError:
            raise InvalidArgument(f"{what} must be {kinds}, not {value!r}") from None
    else:
        raise InvalidArgument(f"{what} must be {kinds}, not {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgument(f"{what} must be a finite span of 0 or more seconds, not {value!r}")
    if maximum is not None and seconds > maximum:
        raise InvalidArgument(f"{what} must be at most {maximum:.0f} seconds, not {seconds:g}")
    return seconds
