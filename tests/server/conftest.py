"""Fixtures of the server tests: a real `tidebase serve` process over a fresh database, the upstream SDK (PyPI
`tidebase` 0.7.0) installed in isolation once per session, and a runner for the SDK flow scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from server_proc import FLOWS, SDK_VERSION, Server, start_server, stop_server


@pytest.fixture
def server(dsn: str) -> Iterator[Server]:
    srv = start_server(dsn)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session")
def sdk_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The upstream SDK, pip-installed into a folder of its own (its import name is ours too)."""
    target = tmp_path_factory.mktemp("upstream-sdk")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--target", str(target), f"tidebase=={SDK_VERSION}"], check=True, timeout=300)
    return target


@pytest.fixture
def sdk_at(sdk_path: Path, tmp_path: Path) -> Callable[..., Any]:
    """Runs a scenario of sdk/flows.py with the upstream SDK against the server at `url`; returns its JSON output."""

    def run(name: str, *args: str, url: str, check: bool = True, timeout: float = 60,
            api_key: str | None = None) -> Any:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEBASE_")}
        env["PYTHONPATH"] = str(sdk_path)
        if api_key:
            env["TB_TEST_API_KEY"] = api_key
        done = subprocess.run([sys.executable, str(FLOWS), name, url, *args], env=env,
                              cwd=tmp_path, capture_output=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{name} exited {done.returncode}: {done.stderr.decode()[-3000:]}")
        lines = done.stdout.decode().strip().splitlines()
        return json.loads(lines[-1]) if lines else {"returncode": done.returncode}

    return run


@pytest.fixture
def sdk(sdk_at: Callable[..., Any], server: Server) -> Callable[..., Any]:
    """Runs a scenario of sdk/flows.py with the upstream SDK against the `server` fixture (or `url`)."""

    def run(name: str, *args: str, check: bool = True, timeout: float = 60, url: str | None = None) -> Any:
        return sdk_at(name, *args, url=url or server.url, check=check, timeout=timeout, api_key=server.api_key)

    return run
