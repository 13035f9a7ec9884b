"""Where the database is: the configured DSN (`Settings.database_url`), else the embedded default."""

from __future__ import annotations

from tidebase.errors import DatabaseUnavailable


def resolve_dsn(dsn: str | None) -> str:
    """`dsn`, or, when it is None, the embedded PostgreSQL's (started or reused)."""
    if dsn:
        return dsn
    # imported lazily: only the zero-setup path needs it
    from tidebase.core import embedded as _embedded  # noqa: PLC0415

    try:
        return _embedded.ensure_server()
    except _embedded.EmbeddedError as exc:  # the module runs standalone too (its watchdog), so it raises its own
        raise DatabaseUnavailable(str(exc)) from exc
