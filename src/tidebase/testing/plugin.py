"""The pytest plugin of the crash-test kit: `tide` and `atide` fixtures, each on a fresh database of its own.

Installed with tidebase-postgres and registered through the `pytest11` entry point, so a test suite only has to ask
for the fixtures (`-p no:tidebase` turns the plugin off). Without the entry point, list it in a conftest:
`pytest_plugins = ["tidebase.testing.plugin"]`. A fixture of the same name in a conftest overrides these, as pytest
does for every plugin fixture.

The server is the one named by TIDEBASE_TEST_DATABASE_URL (its database is used only to issue CREATE DATABASE), else
the embedded PostgreSQL. A template database is migrated once per session, and each test gets `CREATE DATABASE ...
TEMPLATE` of it (about a tenth of a second), dropped after the test: tests are isolated even when their runs are
committed and seen by several connections, which per-test transactions could not give. Nothing is created until a
test asks for one of the fixtures.

`atide` needs an asyncio test runner: it is a pytest-asyncio fixture when pytest-asyncio is installed, and otherwise
fails the test that asks for it with that explanation.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from tidebase import Tidebase
from tidebase.aio import AsyncTidebase
from tidebase.core.migrate import migrate

ENV = "TIDEBASE_TEST_DATABASE_URL"


def server_dsn() -> str:
    """The server tests create their databases on: TIDEBASE_TEST_DATABASE_URL, else the embedded PostgreSQL."""
    dsn = os.environ.get(ENV)
    if dsn:
        return dsn
    from tidebase.core import embedded  # noqa: PLC0415 - starts a server: only when no DSN is given

    return embedded.ensure_server()


def _admin(dsn: str, statement: sql.Composed) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(statement)


def create_database(server: str, name: str, template: str | None = None) -> str:
    """Creates database `name` (a copy of `template` when given) on `server`; returns its DSN."""
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
    _admin(server, statement)
    return conninfo.make_conninfo(server, dbname=name)


def drop_database(server: str, name: str) -> None:
    """Drops database `name` of `server`, closing its remaining connections."""
    _admin(server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def tidebase_server_dsn() -> str:
    """The DSN of the server the test databases live on."""
    return server_dsn()


@pytest.fixture(scope="session")
def tidebase_template(tidebase_server_dsn: str) -> Iterator[str]:
    """The name of a database migrated to the current schema, the template of every test's database."""
    name = f"tidebase_tpl_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    migrate(create_database(tidebase_server_dsn, name))
    yield name
    drop_database(tidebase_server_dsn, name)


@pytest.fixture
def tidebase_dsn(tidebase_server_dsn: str, tidebase_template: str) -> Iterator[str]:
    """A DSN to a fresh, migrated database of this test, dropped after it."""
    name = f"tidebase_test_{uuid.uuid4().hex[:16]}"
    dsn = create_database(tidebase_server_dsn, name, template=tidebase_template)
    yield dsn
    drop_database(tidebase_server_dsn, name)


@pytest.fixture
def tide(tidebase_dsn: str) -> Iterator[Tidebase]:
    """A `Tidebase` on this test's own database, closed after the test."""
    instance = Tidebase(tidebase_dsn)
    yield instance
    instance.close()


async def _atide(tidebase_dsn: str) -> AsyncIterator[AsyncTidebase]:
    """An `AsyncTidebase` on this test's own database, closed after the test."""
    instance = AsyncTidebase(tidebase_dsn)
    yield instance
    await instance.close()


def _atide_needs_an_asyncio_runner() -> None:
    pytest.fail("the atide fixture needs pytest-asyncio (pip install pytest-asyncio)")


atide: Any  # a pytest-asyncio fixture, or one that explains why there is none
try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is a dev dependency of this project
    atide = pytest.fixture(_atide_needs_an_asyncio_runner, name="atide")
else:
    atide = pytest_asyncio.fixture(_atide, name="atide")
