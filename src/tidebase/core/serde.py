"""Turning Python values into stored JSON, and hashing inputs.

Every payload Tidebase stores (step outputs, run inputs and results, state values, errors) is `jsonb`. Values that
are not JSON are converted by a pluggable `Serializer`. The default one knows the types agent code returns every
day (the table in `JsonSerializer`) and refuses the rest: no pickle, ever, because a checkpoint store must not
execute code when it reads. A value that cannot be
stored (not serializable, NaN, U+0000, a lone surrogate, or larger than the payload limit) raises `PayloadError`
*before* anything is sent to the database, naming the run and the step.

Input hashes follow the published algorithm (SHA-256 of canonical JSON: sorted keys, compact separators, UTF-8,
`ensure_ascii=False`), so the HTTP SDKs and this library agree on every checkpoint.

Decoding is plain JSON: a value read back is what `json.loads` gives for its stored text. A step's first execution
returns that same decoded form, so a workflow sees identical values on its first run and on every replay.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import json
import os
import re
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from tidebase.errors import PayloadError

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
    """The default serializer. What a replay returns for each type (a first execution returns the same):

    | value | stored and returned as |
    |---|---|
    | `datetime` | ISO 8601 string, with its offset when aware: `"2026-12-07T18:30:00+01:00"`; a naive one has none |
    | `date`, `time` | ISO 8601 string: `"2026-12-07"`, `"18:30:00"` (`"18:30:00+01:00"` when aware) |
    | `timedelta` | seconds, a number: `90.5` |
    | `UUID` | its canonical string: `"0b9f…"` |
    | `Decimal` | its exact string: `"12.30"` (a JSON number would round it) |
    | `Enum` member | its value, converted in turn |
    | `set`, `frozenset` | a list, sorted by each element's canonical JSON (so equal sets hash alike) |
    | `tuple` | a list |
    | `bytes`, `bytearray`, `memoryview` | a standard base64 string: decode it with `base64.b64decode` |
    | `pathlib.Path` and other `os.PathLike` | its string |
    | dataclass instance | an object of its fields (`dataclasses.asdict`), converted in turn |
    | pydantic model | `model.model_dump(mode="json")` |

    Anything else raises TypeError, which the caller reports as PayloadError naming the run and the step.
    """

    def default(self, value: Any) -> Any:
        if isinstance(value, datetime | date | time):
            return value.isoformat()
        if isinstance(value, timedelta):
            return value.total_seconds()
        if isinstance(value, UUID | Decimal):
            return str(value)
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, set | frozenset):
            return sorted(value, key=lambda item: dumps(item, self, sort_keys=True))
        if isinstance(value, bytes | bytearray | memoryview):
            return base64.b64encode(bytes(value)).decode("ascii")
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        dump = getattr(value, "model_dump", None)
        if callable(dump):  # pydantic v2 models
            return dump(mode="json")
        raise TypeError(f"{type(value).__name__} is not JSON serializable (see tidebase.JsonSerializer for the "
                        "supported types, or pass Tidebase(serializer=...))")


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


_DECODER = json.JSONDecoder()


def decode(text: str) -> Any:
    """The value of stored JSON text: a jsonb value as Postgres prints it, or `dumps`' output (neither has white
    space around the value). The same result as `json.loads`, for about a third of its cost on a small document:
    `loads` spends more checking the text's encoding and surrounding white space than a 200-byte output takes to
    parse. Any other text takes the general path, which decodes or raises exactly as `json.loads` does."""
    try:
        value, end = _DECODER.raw_decode(text)
    except json.JSONDecodeError:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


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
