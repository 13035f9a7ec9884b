# Generated from the async source by tools/async_to_sync.py: do not edit, edit the *_async.py file.
"""Queued runs: `tide.enqueue(...)` and the per-queue caps of `tide.queues`.

An enqueued run is an ordinary run in status `queued` with a queue, a priority, the time it becomes available, a
retry policy and an optional deadline and dedupe key; workers claim it (see `worker`). Every rule lives in SQL
(migrations/0004_queues.sql): dedupe is a partial unique index, caps are counted under the queue's row lock. This
module validates arguments, serialises and shapes results; it never decides which worker runs what.
"""

from __future__ import annotations

import builtins
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import _serde
from ._base import check_name, check_run_id, new_run_id
from .errors import InvalidArgument
from .models import Run

if TYPE_CHECKING:
    from .engine import Tidebase


@dataclass(frozen=True)
class QueueInfo:
    """A queue's caps (None: unlimited) and its live counts."""

    queue: str
    concurrency: int | None
    rate_limit: int | None
    rate_window: float
    paused: bool
    queued: int
    running: int


def _seconds_ms(value: float | timedelta | None, what: str) -> int | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0:
        raise InvalidArgument(f"{what} must be >= 0 seconds")
    return int(seconds * 1000)


def check_url(url: Any, what: str = "webhook url") -> str:
    """An absolute http(s) URL of at most 2048 characters; InvalidArgument otherwise."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2048 or " " in url:
        raise InvalidArgument(f"{what} must be an absolute http(s) URL of at most 2048 characters, got {url!r}")
    return url


def webhooks_param(webhooks: list[dict[str, Any]] | None) -> str:
    """The run's `webhooks` column: channel entries ({"url", "secret"?, "events": [...]}, empty events = every
    type), each with a `chan_` id."""
    hooks: list[dict[str, Any]] = []
    for channel in webhooks or []:
        check_url(channel.get("url"))
        hooks.append({"id": "chan_" + uuid.uuid4().hex, "events": ["*"], **channel, "kind": "channel"})
    return json.dumps(hooks)


def recovery_param(recovery_webhook: Any) -> tuple[str | None, str | None]:
    """(url, secret) of a recovery webhook given as a URL or as {"url", "secret"}."""
    if recovery_webhook is None:
        return None, None
    hook = {"url": recovery_webhook} if isinstance(recovery_webhook, str) else dict(recovery_webhook)
    secret = hook.get("secret")
    return check_url(hook.get("url"), "recovery webhook url"), secret if isinstance(secret, str) else None


def enqueue(
    tide: Tidebase,
    workflow: str,
    *,
    input: Any = None,
    queue: str = "default",
    run_id: str | None = None,
    dedupe_key: str | None = None,
    delay: float | timedelta | None = None,
    priority: int = 0,
    max_attempts: int = 1,
    retry_backoff: float | timedelta = 1.0,
    deadline: datetime | timedelta | float | None = None,
    metadata: dict[str, Any] | None = None,
    recovery_webhook: Any = None,
    webhooks: list[dict[str, Any]] | None = None,
) -> Run:
    """Queues a run of `workflow` (see `Tidebase.enqueue`)."""
    check_name(workflow, "workflow name")
    check_name(queue, "queue")
    if max_attempts < 1:
        raise InvalidArgument("max_attempts must be >= 1")
    run_id = check_run_id(run_id) if run_id is not None else new_run_id()
    enc = tide.serializer
    input_text = _serde.encode(input if input is not None else {}, enc, limit=tide.max_payload_bytes, what="input",
                               run_id=run_id)
    db = tide._open()
    # a relative deadline is added to the database clock by the statement itself
    deadline_at = deadline if isinstance(deadline, datetime) else None
    deadline_ms = None if deadline is None or isinstance(deadline, datetime) else _seconds_ms(deadline, "deadline")
    params = {
        "run_id": run_id, "workflow": workflow, "input": input_text,
        "input_hash": _serde.canonical_hash(json.loads(input_text), enc),
        "metadata": _serde.encode(metadata or {}, enc, limit=tide.max_payload_bytes, what="metadata", run_id=run_id),
        "queue": queue, "priority": int(priority), "dedupe_key": dedupe_key,
        "run_at": None, "delay_ms": _seconds_ms(delay, "delay") or 0, "max_attempts": max_attempts,
        "backoff_ms": _seconds_ms(retry_backoff, "retry_backoff"), "deadline": deadline_at, "deadline_ms": deadline_ms,
        "lease_ms": int(tide.lease_seconds * 1000), "webhooks": webhooks_param(webhooks),
    }
    params["recovery_webhook"], params["recovery_secret"] = recovery_param(recovery_webhook)
    row = db.fetchone("enqueue_run", params, run_id=run_id)
    assert row is not None
    return Run.from_row(row)


class Queues:
    """Per-queue caps that hold across every competing worker (`tide.queues`)."""

    def __init__(self, tide: Tidebase) -> None:
        self._tide = tide

    def configure(
        self, queue: str, *, concurrency: int | None = None, rate_limit: int | None = None,
        rate_window: float = 1.0, paused: bool = False,
    ) -> QueueInfo:
        """Sets the queue's caps: at most `concurrency` runs running at once, and at most `rate_limit` claims per
        `rate_window` seconds (None: unlimited). Replaces the previous settings. Safe to retry."""
        check_name(queue, "queue")
        if concurrency is not None and concurrency < 0:
            raise InvalidArgument("concurrency must be >= 0")
        if rate_limit is not None and rate_limit < 0:
            raise InvalidArgument("rate_limit must be >= 0")
        if rate_window <= 0:
            raise InvalidArgument("rate_window must be > 0 seconds")
        db = self._tide._open()
        db.fetchone("configure_queue", {"queue": queue, "concurrency": concurrency, "rate_limit": rate_limit,
                                              "rate_window_ms": int(rate_window * 1000), "paused": paused})
        return self.get(queue)

    def get(self, queue: str) -> QueueInfo:
        """The queue's caps and its current queued and running counts."""
        db = self._tide._open()
        row = db.fetchone("get_queue", {"queue": queue})
        assert row is not None
        return QueueInfo(queue=queue, concurrency=row["concurrency"], rate_limit=row["rate_limit"],
                         rate_window=(row["rate_window_ms"] or 1000) / 1000, paused=row["paused"],
                         queued=row["queued"], running=row["running"])

    def list(self) -> builtins.list[QueueInfo]:
        """Every queue that has runs or a config, by name, with its caps and current queued and running counts."""
        db = self._tide._open()
        return [QueueInfo(queue=r["queue"], concurrency=r["concurrency"], rate_limit=r["rate_limit"],
                          rate_window=(r["rate_window_ms"] or 1000) / 1000, paused=r["paused"], queued=r["queued"],
                          running=r["running"]) for r in db.fetchall("list_queues", {})]
