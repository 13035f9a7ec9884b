"""Every setting of Tidebase in one typed model, read once and passed down.

`Settings` names each setting with its unit (`*_seconds`, `*_bytes`), gives its default, and says which environment
variable sets it (variables keep the names and units the HTTP API's deployments already use, e.g.
`TIDEBASE_LEASE_MS`). `Settings.from_env()` reads the environment once; the library (`Tidebase(...)` keywords),
the server, the worker and the commands start from it and override what their caller gives explicitly, then hand
the object down: nothing below reads the environment again. The one exception is the embedded PostgreSQL's
watchdog, a separate process started with the module as a script, which reads `TIDEBASE_HOME` and
`TIDEBASE_EMBEDDED_IDLE_SECONDS` itself; they are listed here so that the table is complete.

`docs/configuration.md` is generated from this module (`python -m tidebase.settings`), so the table and the code
cannot drift.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tidebase.errors import ConfigurationError

MIB = 1024 * 1024


def _setting(default: Any, env: str | None, doc: str, *, unit: str = "", scope: str = "all",
             secret: bool = False) -> Any:
    return field(default=default, repr=not secret,
                 metadata={"env": env, "doc": doc, "unit": unit, "scope": scope, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """The configuration of one process (see the module docstring). Construct it with `from_env()`, then
    `replace(...)` what the caller sets explicitly. Secrets are left out of `repr`."""

    database_url: str | None = _setting(
        None, "TIDEBASE_DATABASE_URL", "where runs are stored (a libpq DSN); `DATABASE_URL` is read when it is unset; "
        "none: the embedded PostgreSQL", secret=True)
    lease_seconds: float = _setting(
        30.0, "TIDEBASE_RUN_LEASE_MS", "lease of a run held by the library or a worker; its heartbeat renews it every "
        "third of that", unit="ms")
    max_payload_bytes: int = _setting(16 * MIB, "TIDEBASE_MAX_PAYLOAD_BYTES", "largest stored value (step output, "
                                      "input, state, event payload)")
    auto_migrate: bool = _setting(True, "TIDEBASE_AUTO_MIGRATE", "apply schema migrations on first use (0: raise "
                                  "SchemaOutOfDate instead)")
    pool_min_size: int = _setting(1, "TIDEBASE_POOL_MIN_SIZE", "connections the library's pool keeps open")
    pool_max_size: int = _setting(10, "TIDEBASE_POOL_MAX_SIZE", "connections the library's pool may open")
    connect_timeout_seconds: float = _setting(
        5.0, "TIDEBASE_CONNECT_TIMEOUT_MS", "to establish a connection; a wrong DSN fails with the target, the "
        "reason and what to do", unit="ms")
    statement_timeout_seconds: float | None = _setting(
        30.0, "TIDEBASE_STATEMENT_TIMEOUT_MS", "how long one of Tidebase's statements may run on the server; a "
        "connection silent for 1.5 times that (at most 15 s more) is abandoned: DatabaseUnavailable, never a hang "
        "(0: no bound)", unit="ms")
    sleep_inline_max_seconds: float = _setting(
        5.0, "TIDEBASE_SLEEP_INLINE_MAX_MS", "a durable timer (`run.sleep`) with at most this long left waits in the "
        "process that runs it; a longer one gives the run's lease back until its wake time", unit="ms")
    api_key: str | None = _setting(None, "TIDEBASE_API_KEY", "the server's shared key (`Authorization: Bearer`); "
                                   "unset: open on loopback only", scope="server", secret=True)
    port: int = _setting(7373, "PORT", "the server's port (`tidebase serve --port`)", scope="server")
    public_url: str | None = _setting(None, "TIDEBASE_PUBLIC_URL", "base of a gate's resolveUrl and of the Studio's "
                                      "links; unset: http://localhost:PORT", scope="server")
    cors_origin: str = _setting("*", "TIDEBASE_CORS_ORIGIN", "`*`, one origin or a comma-separated list",
                                scope="server")
    http_lease_seconds: float = _setting(
        60.0, "TIDEBASE_LEASE_MS", "lease of a run or step held by an HTTP client (the HTTP SDKs renew only when "
        "asked, so it is longer)", unit="ms", scope="server")
    max_body_bytes: int = _setting(8 * MIB, "TIDEBASE_MAX_BODY_BYTES", "request body limit (413 above it)",
                                   scope="server")
    body_timeout_seconds: float = _setting(30.0, "TIDEBASE_BODY_TIMEOUT_MS", "a request body must arrive whole "
                                           "within it (else 408)", unit="ms", scope="server")
    keepalive_timeout_seconds: float = _setting(5.0, "TIDEBASE_KEEPALIVE_TIMEOUT_MS", "an idle HTTP connection is "
                                                "closed after it", unit="ms", scope="server")
    sse_keepalive_seconds: float = _setting(15.0, "TIDEBASE_SSE_KEEPALIVE_MS", "keep-alive comment interval of the "
                                            "event stream", unit="ms", scope="server")
    server_pool_max_size: int = _setting(20, "TIDEBASE_SERVER_POOL_MAX", "connections the server's pool may open",
                                         scope="server")
    reconciler: bool = _setting(True, "TIDEBASE_RECONCILER", "run the reconciler and the webhook dispatcher in the "
                                "server (0: off)", scope="server")
    reconcile_interval_seconds: float = _setting(5.0, "TIDEBASE_RECONCILE_MS", "period of the server's reconciler "
                                                 "tick", unit="ms", scope="server")
    studio_secret: str | None = _setting(None, "TIDEBASE_STUDIO_SECRET", "signs the Studio's session cookies; unset: "
                                         "a secret kept in the Tidebase home", scope="server", secret=True)
    webhook_secret: str | None = _setting(None, "TIDEBASE_WEBHOOK_SECRET", "signs recovery and invoke webhooks "
                                          "that carry no secret of their own (same value in every process of one "
                                          "database)", scope="server, worker", secret=True)
    webhook_timeout_seconds: float = _setting(10.0, "TIDEBASE_WEBHOOK_TIMEOUT_MS", "timeout of one webhook try",
                                              unit="ms", scope="server, worker")
    webhook_max_attempts: int = _setting(10, "TIDEBASE_WEBHOOK_MAX_ATTEMPTS", "tries of a webhook delivery before "
                                         "it is dead", scope="server, worker")
    max_auto_recoveries: int = _setting(10, "TIDEBASE_MAX_AUTO_RECOVERIES", "automatic recovery webhooks per "
                                        "run", scope="server, worker")
    retention_seconds: float | None = _setting(
        None, "TIDEBASE_RETENTION", "periodic retention: the reconciler deletes finished run trees that finished "
        "longer ago than this (`30d`, `12h`; s, m, h, d, w), a few batches per tick (docs/operations.md#retention); "
        "unset or 0: off", unit="span", scope="server, worker")
    log_format: str = _setting("text", "TIDEBASE_LOG_FORMAT", "`text` lines, or `json`: one JSON object per line "
                               "(`tidebase serve`, `tidebase worker`; `--log-format` wins)", scope="server, worker")
    metrics_public: bool = _setting(False, "TIDEBASE_METRICS_PUBLIC", "serve `GET /metrics` without the API key "
                                    "(1: for scrapers that carry none; off: /metrics takes the key like every "
                                    "route)", scope="server")
    metrics_max_workflows: int = _setting(100, "TIDEBASE_METRICS_MAX_WORKFLOWS", "workflow names that get their "
                                          "own `workflow` label in a process's metrics; later ones share "
                                          "`_other`")
    home: str | None = _setting(None, "TIDEBASE_HOME", "where the embedded PostgreSQL keeps its data; unset: the "
                                "user data folder (/var/lib/tidebase as root)", scope="embedded")
    embedded_idle_seconds: float = _setting(2.0, "TIDEBASE_EMBEDDED_IDLE_SECONDS", "the embedded PostgreSQL stops "
                                            "this long after its last client exits", unit="s", scope="embedded")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings the environment gives (defaults for the rest). ConfigurationError names a variable whose
        value is not what its setting takes."""
        source = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            raw = source.get(name) if name else None
            if f.name == "database_url" and not raw:
                raw = source.get("DATABASE_URL")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f, raw)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` (values of None are ignored: the caller did not set them)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def resolved_public_url(self) -> str:
        """The public URL, or http://localhost:PORT."""
        return (self.public_url or f"http://localhost:{self.port}").rstrip("/")


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    name, unit, kind = f.metadata["env"], f.metadata["unit"], str(f.type)
    try:
        if "bool" in kind:
            if raw.lower() not in ("0", "1", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if unit == "span":
            return span_seconds(raw) or None
        if "float" in kind:
            number = float(raw)
            if number < 0:
                raise ValueError(raw)
            seconds = number / 1000 if unit == "ms" else number
            return None if (seconds == 0 and "None" in kind) else seconds
        if "int" in kind:
            number = int(raw)
            if number < 0:
                raise ValueError(raw)
            return number
        return raw
    except ValueError:
        what = {"ms": "whole milliseconds", "s": "seconds", "span": "a duration such as 30d, 12h or 90m"}.get(
            unit, "an integer" if "int" in kind else "a boolean")
        raise ConfigurationError(f"{name}={raw!r} is not valid: it takes {what}") from None


_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_SPAN_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def span_seconds(text: str) -> float:
    """The seconds of a duration written as a number and a unit: `30d`, `12h`, `90m`, `45s`, `2w`, `1.5d`.
    ValueError for anything else (callers raise their own typed error naming where the text came from)."""
    match = _SPAN.match(text.strip().lower())
    if match is None:
        raise ValueError(text)
    return float(match[1]) * _SPAN_SECONDS[match[2]]


def table() -> str:
    """The settings as a Markdown table: setting, environment variable, default, who reads it, meaning."""
    rows = ["| setting | environment | default | read by | meaning |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(Settings):
        shown = _shown(f.name, f.default)
        env = f.metadata["env"]
        if f.metadata["unit"] == "ms":
            env += " (ms)"
        if f.name == "database_url":
            env += ", DATABASE_URL"
        rows.append(f"| `{f.name}` | `{env}` | {shown} | {f.metadata['scope']} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"


def _shown(name: str, default: Any) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "on" if default else "off"
    if name.endswith("_seconds"):
        return f"{default:g} s"
    if name.endswith("_bytes") and default >= MIB:
        return f"{default // MIB} MiB"
    return f"`{default}`" if isinstance(default, str) else str(default)


def _main(write: Callable[[str], object] = sys.stdout.write) -> int:
    write(table())
    return 0


if __name__ == "__main__":
    sys.exit(_main())
