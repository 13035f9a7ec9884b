"""Real PostgreSQL for every test: a template database migrated once, and a fresh clone per test.

The server is the one named by TIDEBASE_TEST_DATABASE_URL (a DSN whose database is used only to issue CREATE
DATABASE), else the embedded default. Per-test databases (not per-test transactions) because the concurrency tests
need data committed and seen by several connections and processes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import conninfo

from tidebase import Tidebase
from tidebase.aio import AsyncTidebase
from tidebase.core.migrate import migrate


def _server_dsn() -> str:
    dsn = os.environ.get("TIDEBASE_TEST_DATABASE_URL")
    if dsn:
        return dsn
    from tidebase.core import embedded as _embedded

    return _embedded.ensure_server()


def with_db(dsn: str, dbname: str, **extra: str) -> str:
    """`dsn` pointed at another database, with extra connection parameters."""
    return conninfo.make_conninfo(dsn, dbname=dbname, **extra)


@pytest.fixture(scope="session")
def server_dsn() -> str:
    return _server_dsn()


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> Iterator[str]:
    name = f"tidebase_tpl_{os.getpid()}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    migrate(with_db(server_dsn, name))
    yield name
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """A DSN to a fresh database of this test, already migrated."""
    name = f"tidebase_t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield with_db(server_dsn, name)
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """A DSN to a fresh database without the Tidebase schema."""
    name = f"tidebase_e_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield with_db(server_dsn, name)
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit admin connection to the test database, for setting up and inspecting."""
    with psycopg.connect(dsn, autocommit=True, application_name="test-admin") as conn:
        yield conn


@pytest.fixture
def observer(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A second autocommit connection for watching pg_stat_activity: a session inside a transaction keeps seeing
    the activity snapshot it took first, so probes must not observe from the connection that holds the lock."""
    with psycopg.connect(dsn, autocommit=True, application_name="test-observer") as conn:
        yield conn


@pytest.fixture
def tide(dsn: str) -> Iterator[Tidebase]:
    t = Tidebase(dsn)
    yield t
    t.close()


@pytest.fixture
async def atide(dsn: str) -> AsyncIterator[AsyncTidebase]:
    t = AsyncTidebase(dsn)
    yield t
    await t.close()
