"""Where the database is: an explicit DSN, TIDEBASE_DATABASE_URL, DATABASE_URL, else the embedded default."""

from __future__ import annotations

import os

from tidebase.errors import DatabaseUnavailable


def configured_dsn(explicit: str | None = None) -> str | None:
    """The DSN given or found in the environment, or None when the embedded default should be used."""
    return explicit or os.environ.get("TIDEBASE_DATABASE_URL") or os.environ.get("DATABASE_URL") or None


def resolve_dsn(explicit: str | None = None) -> str:
    """The DSN to use, starting (or reusing) the embedded PostgreSQL when nothing is configured."""
    dsn = configured_dsn(explicit)
    if dsn:
        return dsn
    # imported lazily: only the zero-setup path needs it
    from tidebase.core import embedded as _embedded  # noqa: PLC0415

    try:
        return _embedded.ensure_server()
    except _embedded.EmbeddedError as exc:  # the module runs standalone too (its watchdog), so it raises its own
        raise DatabaseUnavailable(str(exc)) from exc
