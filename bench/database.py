"""The benchmark's own database, and the facts about the machine and server it runs on.

The command is given an *admin* DSN: any database on the server (usually `postgres`) reachable by a role allowed
to CREATE DATABASE. It creates a fresh *target* database next to it, runs every measurement there (Tidebase
migrates its `tidebase` schema into it on first use) and drops it at exit, so nothing is left on the server.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import tidebase

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
_SETTINGS = ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "shared_buffers")


def default_database_name() -> str:
    """A target database name unique to this process, so concurrent benchmark runs never share one."""
    return f"tidebase_bench_{os.getpid()}"


def with_database(dsn: str, dbname: str) -> str:
    """`dsn` pointing at database `dbname` instead (host, port, user and other options kept)."""
    return make_conninfo(dsn, dbname=dbname)


def with_settings(dsn: str, **settings: str) -> str:
    """`dsn` with server settings applied to every session it opens (libpq `options=-c name=value`)."""
    options = conninfo_to_dict(dsn).get("options") or ""
    extra = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return make_conninfo(dsn, options=f"{options} {extra}".strip())


@contextmanager
def scratch_database(admin_dsn: str, dbname: str) -> Iterator[str]:
    """Creates database `dbname` through the admin DSN, yields the target DSN, and drops the database on exit.

    Fails (DuplicateDatabase) rather than reuse a database that already exists: it only ever drops its own.
    """
    name = sql.Identifier(dbname)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    try:
        yield with_database(admin_dsn, dbname)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def show(conn: psycopg.Connection[Any], setting: str) -> str:
    """The value of a server setting as this session sees it (`SHOW setting`)."""
    row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
    return str(row[0]) if row else "?"


def machine_facts(dsn: str) -> dict[str, Any]:
    """CPU count, platform, library versions, and the server settings a session on `dsn` sees."""
    with psycopg.connect(dsn) as conn:
        server = {name: show(conn, name) for name in _SETTINGS}
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "psycopg": psycopg.__version__,
        "tidebase": tidebase.__version__,
        **server,
    }
