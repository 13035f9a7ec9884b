"""Webhooks: delivery from the durable outbox, HMAC signing and verification, and a recovery handler.

A delivery row is written by the transaction that appends the event it reports (deferred trigger `runs_webhooks`,
see sql/functions/95_webhooks.sql), so a webhook exists if and only if its event committed. The `Dispatcher` delivers
them after commit from its own thread and connection: it claims due rows with SKIP LOCKED (pushing each a hold time into
the future, so a dispatcher that dies mid-delivery leaves it to be retried), POSTs each body on a small thread pool
with a bounded timeout, and records every attempt, win or lose, with exponential backoff up to the row's max
attempts. A slow or dead endpoint therefore only ever occupies one delivery thread: it never blocks a writer, the
reconciler, or other deliveries.

Bodies are signed with HMAC-SHA256 over the exact bytes sent: header `x-tidebase-signature: sha256=<hex>`.
Receivers check it with `verify_webhook_signature(body, header, secret)`. `handle_recovery_webhook` is a small,
framework-agnostic handler (bytes and a header in, a status and a JSON-able body out) that resumes the run named by a
recovery webhook. This module is deliberately not async: deliveries run in threads in both APIs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from tidebase._version import __version__
from tidebase.core.connect import Timeouts, tuned_conninfo
from tidebase.core.deadline import guard
from tidebase.errors import DatabaseUnavailable, NotFound, TidebaseError
from tidebase.ops.metrics import METRICS
from tidebase.ops.render import delivery_body
from tidebase.settings import Settings
from tidebase.sql import load_queries

if TYPE_CHECKING:
    from tidebase.client import Tidebase

logger = logging.getLogger("tidebase.webhooks")

SIGNATURE_HEADER = "x-tidebase-signature"
USER_AGENT = f"tidebase-python/{__version__}"


def sign(body: bytes, secret: str) -> str:
    """The signature header value for `body`: `sha256=<hex HMAC-SHA256 of the exact body bytes>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_webhook_signature(body: bytes, header: str | None, secret: str) -> bool:
    """True when `header` (the x-tidebase-signature value) signs exactly `body` with `secret`. Constant-time."""
    if not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(sign(body, secret), header.strip())


class Dispatcher:
    """Delivers due outbox rows from a daemon thread with its own connection. `start()`, `wake()`, `stop()`."""

    def __init__(self, conninfo: str, *, timeout: float = 10.0, poll_interval: float = 1.0, batch: int = 32,
                 threads: int = 8, backoff: float = 1.0, recovery_secret: str | None = None,
                 max_attempts: int | None = None, public_url: str | None = None,
                 timeouts: Timeouts | None = None) -> None:
        # bounded like every connection of the library: a stalled path fails a tick instead of hanging the loop
        self.timeouts = timeouts or Timeouts()
        self.conninfo = tuned_conninfo(conninfo, self.timeouts, application_name="tidebase-dispatcher")
        # base of a gate's resolveUrl in deliveries
        self.public_url = (public_url or "").rstrip("/")
        self.max_attempts = max_attempts
        # signs recovery and invoke webhooks that carry no secret of their own; every process that delivers from
        # one database needs the same one
        self.recovery_secret = recovery_secret
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.batch = batch
        self.backoff = backoff
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tidebase-webhook")
        self._busy = threading.Semaphore(threads)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._queries = load_queries()

    @classmethod
    def from_settings(cls, conninfo: str, settings: Settings, **options: Any) -> Dispatcher:
        """A dispatcher configured by `settings` (webhook secret, timeout, attempts, public URL, database bounds)."""
        return cls(conninfo, timeout=settings.webhook_timeout_seconds, recovery_secret=settings.webhook_secret,
                   max_attempts=settings.webhook_max_attempts, public_url=settings.resolved_public_url,
                   timeouts=Timeouts(connect=settings.connect_timeout_seconds,
                                     statement=settings.statement_timeout_seconds), **options)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tidebase-dispatcher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stops claiming; deliveries in flight finish (each bounded by the timeout) in the background."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self._pool.shutdown(wait=False)

    def deliver_once(self, conn: psycopg.Connection[Any]) -> int:
        """Claims due deliveries (as many as there are free delivery threads) and hands them to the pool."""
        free = 0
        while free < self.batch and self._busy.acquire(blocking=False):
            free += 1
        if free == 0:
            return 0
        hold_ms = int((self.timeout + 30) * 1000)
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(self._queries["claim_deliveries"], {"limit": free, "hold_ms": hold_ms})
            rows = cur.fetchall()
            for row in rows:
                if row["source"] is not None:  # first claim: render the public body once, for every try
                    row["body"] = delivery_body(row, self.public_url)
                    cur.execute(self._queries["set_delivery_body"], {"id": row["id"], "body": row["body"]})
        for _ in range(free - len(rows)):
            self._busy.release()
        for row in rows:
            self._pool.submit(self._deliver, row)
        return len(rows)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    while not self._stopping.is_set():
                        with guard(conn, self.timeouts.deadline, "the database (webhook dispatcher)"):
                            claimed = self.deliver_once(conn)
                        if claimed == 0:
                            self._wake.wait(self.poll_interval)
                            self._wake.clear()
            except (psycopg.Error, DatabaseUnavailable) as exc:
                logger.warning("webhook dispatcher: %s; reconnecting", _reason(exc))
                self._stopping.wait(self.poll_interval)

    def _deliver(self, row: dict[str, Any]) -> None:
        try:
            body = row["body"].encode()
            headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                       "x-tidebase-delivery": row["public_id"], "x-tidebase-attempt": str(row["attempts"]),
                       "x-tidebase-event": row["event_type"]}
            if row.get("event_seq") is not None:
                headers["x-tidebase-event-seq"] = str(row["event_seq"])
            secret = row["secret"] or (self.recovery_secret if row["kind"] == "recovery" else None)
            if secret:
                headers[SIGNATURE_HEADER] = sign(body, secret)
            started = datetime.now(UTC)
            t0 = time.monotonic()
            status, error, response, retry_after = self._post(row["url"], body, headers)
            ok = status is not None and 200 <= status < 300
            retry = status is None or status in RETRY_STATUSES or status >= 500
            wait = retry_delay(row["attempts"], retry_after, self.backoff)
            duration = int((time.monotonic() - t0) * 1000)
            # the same rule as tidebase.record_delivery: a retryable failure is tried again while attempts remain
            limit = row.get("max_attempts") or self.max_attempts or 1
            limit = min(limit, self.max_attempts) if self.max_attempts else limit
            final = not ok and (not retry or row["attempts"] >= limit)
            METRICS.webhook_deliveries.inc(("delivered" if ok else "failed" if final else "retry",))
            with psycopg.connect(self.conninfo, autocommit=True) as conn, guard(conn, self.timeouts.deadline):
                conn.execute(self._queries["record_delivery"], {
                    "id": row["id"], "attempt": row["attempts"], "started_at": started, "duration_ms": duration,
                    "status_code": status, "error": error, "ok": ok, "retry": retry,
                    "retry_ms": int(wait * 1000), "response": response, "max_attempts": self.max_attempts,
                })
        except psycopg.Error as exc:
            logger.error("webhook delivery %s could not be recorded (%s); it will be retried", row["id"], _reason(exc))
        except Exception:
            logger.exception("webhook delivery %s could not be recorded; it will be retried", row["id"])
        finally:
            self._busy.release()
            self._wake.set()

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None, str | None,
                                                                            float | None]:
        """One try: (HTTP status or None, error text, first 8000 characters of the answer, Retry-After seconds)."""
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s)
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return response.status, None, _text(response.read(MAX_RESPONSE_BYTES)), None
        except urllib.error.HTTPError as exc:
            return (exc.code, f"HTTP {exc.code}", _text(exc.read(MAX_RESPONSE_BYTES)),
                    _retry_after(exc.headers.get("retry-after")))
        except Exception as exc:  # noqa: BLE001 - every failure is recorded as a failed try
            return None, f"{type(exc).__name__}: {exc}"[:2000], None, None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answers, not instructions: a 3xx is recorded as a permanent failure."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)
MAX_RESPONSE_BYTES = 32000
RETRY_STATUSES = frozenset({408, 425, 429})
MAX_RETRY_WAIT = 600.0


def _reason(exc: psycopg.Error | TidebaseError) -> str:
    """What a log line says of a database error: its primary message, never its DETAIL, which may quote a row of the
    outbox (a body with a resolve token, a secret)."""
    diag = getattr(exc, "diag", None)
    primary = (diag.message_primary if diag is not None else None) or str(exc).partition("\n")[0]
    return f"{type(exc).__name__}: {primary}"


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").replace("\x00", "")[:8000]


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def retry_delay(tries: int, retry_after: float | None, base: float = 1.0) -> float:
    """Seconds before the next try after `tries` failed ones: min(600, base * 2^(tries-1)) with +-20 % jitter, or
    Retry-After when that is longer and still within the 600 s cap."""
    wait: float = min(MAX_RETRY_WAIT, base * 2.0 ** max(tries - 1, 0)) * random.uniform(0.8, 1.2)  # noqa: S311 - jitter
    if retry_after is not None and wait < retry_after <= MAX_RETRY_WAIT:
        wait = retry_after
    return wait


def handle_recovery_webhook(tide: Tidebase, body: bytes, signature: str | None, secret: str) -> tuple[int, Any]:
    """Resumes the run named by a recovery webhook, in the caller's thread; for any web framework.

    Returns (HTTP status, JSON-able body): 401 for a bad signature, 400 for a body that names no run, 404 when the run
    or its workflow (registered with `@tide.workflow`) is unknown here, 200 with the run's result once it completed,
    409 when the run could not be resumed now (another worker holds it, it is cancelled, ...).
    """
    if not verify_webhook_signature(body, signature, secret):
        return 401, {"error": "bad signature"}
    try:
        message = json.loads(body)
        run_id = message["runId"]
    except (ValueError, KeyError, TypeError):
        return 400, {"error": "the body names no run"}
    try:
        run = tide.runs.get(run_id)
    except NotFound:
        return 404, {"error": f"run {run_id!r} not found"}
    workflow = tide.registry.get(run.workflow)
    if workflow is None:
        return 404, {"error": f"workflow {run.workflow!r} is not registered here"}
    try:
        result = tide.run(run.workflow, workflow, run_id=run_id)
    except TidebaseError as exc:
        return 409, {"error": str(exc), "runId": run_id}
    return 200, {"runId": run_id, "result": result}
