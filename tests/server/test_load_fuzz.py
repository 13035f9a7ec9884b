"""Load and fuzzing against a real `tidebase serve` process: 1,000 SSE subscribers receive every event in order
(latency recorded), and the API fuzzed from its own OpenAPI document yields no 5xx."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from load_sse import run_load
from server_proc import Server


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_thousand_subscribers_receive_every_event_in_order(server: Server, tmp_path: Path) -> None:
    result = asyncio.run(run_load(server.url, subscribers=1000, events=30, rate=10.0))
    print("sse-load", json.dumps(result))
    (tmp_path / "sse-load.json").write_text(json.dumps(result))
    assert result["subscribers_complete_in_order"] == 1000
    assert result["deliveries"] == 30 * 1000
    assert result["p99_ms"] < 5000  # far under the 5 s poll: delivered by the doorbell


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fuzzing_from_the_openapi_document_yields_no_5xx(server: Server, tmp_path: Path) -> None:
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if st is None:
        pytest.fail("schemathesis is not installed (it is a dev dependency)")
    done = subprocess.run(
        # The SSE route is left out: a stream that exists never ends, and its errors are tested in test_sse_auth.
        # One worker: hypothesis describes filter lambdas by parsing source with `ast`, which CPython 3.11 does not
        # make thread-safe ("AST constructor recursion depth mismatch" under --workers 2).
        [st, "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "30",
         "--workers", "1", "--seed", "7373", "--exclude-path-regex", "/events$", "--request-timeout", "20"],
        capture_output=True, timeout=800, check=False, cwd=tmp_path)
    report = done.stdout.decode()
    assert done.returncode == 0, report[-6000:]
    assert "Server error" not in report
