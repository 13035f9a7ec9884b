"""Fixtures of the Studio's browser suite: per module, one headless Chromium (Debian's), a fresh database and a real
`tidebase serve` over it.

Without `/usr/bin/chromium` the suite is skipped with the reason, except in CI (`CI=true`), where it fails: the
browser tests cannot be silently skipped there. Screenshots go to `$TIDEBASE_STUDIO_SHOTS` when set (that is how
`docs/images/` is made), else to a temporary folder.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from studio_proc import CHROMIUM, CHROMIUM_ARGS, Studio, start, stop

from tidebase import Tidebase


def _browser_or_skip() -> Any:
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed: pip install -e '.[dev]'"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (no browser download). One per module, not per session:
    Playwright's sync API holds a running event loop in this thread while it is started, so it must be stopped
    before any asyncio test runs (a launch costs well under a second)."""
    sync_playwright = _browser_or_skip()
    manager = sync_playwright().start()
    chromium = manager.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    manager.stop()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go."""
    target = os.environ.get("TIDEBASE_STUDIO_SHOTS")
    folder = Path(target) if target else tmp_path_factory.mktemp("studio-shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def module_dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh migrated database shared by the tests of one module (one server per module keeps the suite fast)."""
    name = f"tidebase_s_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def studio_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("studio-home")


@pytest.fixture(scope="module")
def tide(module_dsn: str) -> Iterator[Tidebase]:
    """The library, in the test process: the other process that writes while the browser watches."""
    t = Tidebase(module_dsn)
    yield t
    t.close()


@pytest.fixture(scope="module")
def sql(module_dsn: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """An autocommit connection for checking what the database holds."""
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def open_server(module_dsn: str, studio_home: Path) -> Iterator[Studio]:
    """A server without an API key: the Studio is open on loopback."""
    server = start(module_dsn, studio_home)
    yield server
    stop(server)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page at desktop width."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()
