"""Turning Python values into stored JSON, and hashing inputs.

Every payload Tidebase stores (step outputs, run inputs and results, state values, errors) is `jsonb`. Values that
are not JSON are converted by a pluggable `Serializer`, whose default handles dataclasses and pydantic models and
nothing else: no pickle, ever, because a checkpoint store must not execute code when it reads. A value that cannot be
stored (not serializable, NaN, U+0000, a lone surrogate, or larger than the payload limit) raises `PayloadError`
*before* anything is sent to the database, naming the run and the step.

Input hashes follow the published algorithm (SHA-256 of canonical JSON: sorted keys, compact separators, UTF-8,
`ensure_ascii=False`), so the HTTP SDKs and this library agree on every checkpoint.

Decoding is plain JSON: a value read back is what `json.loads` gives for its stored text. A step's first execution
returns that same decoded form, so a workflow sees identical values on its first run and on every replay.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, Protocol, runtime_checkable

from .errors import PayloadError

DEFAULT_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024

# A JSON escape of U+0000 is `\u0000` preceded by an even number of backslashes (an odd count would make the
# backslash before `u` itself escaped, i.e. the literal text "\u0000" in a string).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@runtime_checkable
class Serializer(Protocol):
    """Converts values that JSON cannot represent into values it can.

    `default(value)` is called for every object the JSON encoder does not know; it returns a JSON-compatible
    replacement or raises `TypeError`. It must be deterministic: input hashes are computed through it.
    """

    def default(self, value: Any) -> Any: ...


class JsonSerializer:
    """The default serializer: dataclasses and pydantic models become JSON objects; anything else is refused."""

    def default(self, value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        dump = getattr(value, "model_dump", None)
        if callable(dump):  # pydantic v2 models
            return dump(mode="json")
        raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any, serializer: Serializer, *, sort_keys: bool = False) -> str:
    """JSON text of `value` (compact, non-ASCII kept raw). Raises TypeError/ValueError for unstorable values."""
    return json.dumps(
        value, default=serializer.default, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
        sort_keys=sort_keys,
    )


def encode(
    value: Any, serializer: Serializer, *, limit: int, what: str, run_id: str | None = None, step: str | None = None
) -> str:
    """Encodes a payload for storage, or raises `PayloadError` naming what was refused and where."""
    where = _where(what, run_id, step)
    try:
        text = dumps(value, serializer)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"{where} is not JSON-serializable: {exc}", run_id=run_id, step=step) from exc
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise PayloadError(f"{where} contains U+0000, which Postgres cannot store", run_id=run_id, step=step)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise PayloadError(f"{where} contains a lone surrogate: {exc.reason}", run_id=run_id, step=step) from exc
    if size > limit:
        raise PayloadError(
            f"{where} is {size} bytes, over the payload limit of {limit} bytes", run_id=run_id, step=step
        )
    return text


def canonical_hash(value: Any, serializer: Serializer) -> str:
    """SHA-256 (hex) of the canonical JSON of `value`; `None` hashes as `null`."""
    try:
        text = dumps(value, serializer, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"input is not JSON-serializable: {exc}") from exc
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


NULL_HASH = hashlib.sha256(b"null").hexdigest()  # the hash of a step without explicit input


def _where(what: str, run_id: str | None, step: str | None) -> str:
    parts = [what]
    if step is not None:
        parts.append(f"of step {step!r}")
    if run_id is not None:
        parts.append(f"in run {run_id!r}")
    return " ".join(parts)
