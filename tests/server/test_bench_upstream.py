"""`python -m bench compare --smoke` with the `upstream` row: the upstream SDK (PyPI `tidebase` 0.7.0, the session's
isolated install) drives a real `tidebase serve` process named by TIDEBASE_URL, through bench/peers/run_upstream.py
and every task of its protocol (setup, round, throughput, count); and without TIDEBASE_URL the row is skipped with
its reason."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from server_proc import start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.compare import CompareConfig, CompareResults, include_upstream  # noqa: E402
from bench.compare_report import header  # noqa: E402
from bench.venvs import _COMPLETE, UPSTREAM, requirements, venv_dir  # noqa: E402

API_KEY = "bench-upstream-test-key-5f2c"


def seed_upstream_venv(root: Path, sdk_path: Path) -> None:
    """The folder bench/venvs.py would install the upstream SDK into, made from the session's SDK install instead
    (a virtualenv whose only package is the SDK), so the test downloads nothing more."""
    folder = venv_dir(UPSTREAM, root)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=60)
    purelib = sysconfig.get_path("purelib", vars={"base": str(folder), "platbase": str(folder)})
    (Path(purelib) / "upstream_sdk.pth").write_text(f"{sdk_path}\n", encoding="utf-8")
    (folder / _COMPLETE).write_text("\n".join(requirements(UPSTREAM)) + "\n", encoding="utf-8")


def test_compare_smoke_measures_the_upstream_server(dsn: str, server_dsn: str, sdk_path: Path,
                                                    tmp_path: Path) -> None:
    server = start_server(dsn, api_key=API_KEY)
    try:
        seed_upstream_venv(tmp_path / "venvs", sdk_path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEBASE_")}
        env |= {"TIDEBASE_URL": server.url, "TIDEBASE_API_KEY": API_KEY}
        done = subprocess.run([sys.executable, "-m", "bench", "compare", "--smoke", "--dsn", server_dsn,
                               "--venvs", str(tmp_path / "venvs")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        with server.client() as http:
            runs = http.get("/runs", params={"workflowName": "bench"}).json()["runs"]
    finally:
        stop_server(server)
    assert done.returncode == 0, done.stderr[-3000:]
    report = done.stdout
    host = server.url.removeprefix("http://")
    assert f"upstream server, SDK run.step @ {host}" in report
    assert "upstream: tidebase (SDK) 0.7.0" in report
    assert "installing upstream" not in done.stderr  # the seeded virtualenv was used
    # (d): SQL is not countable through the server; the SDK's HTTP requests are: begin + complete per executed step,
    # one steps/begin answered `return` per replayed step
    assert "upstream: n/a: the SDK talks HTTP" in report
    assert "2.00 per executed step, 1.00 per replayed step" in report
    assert API_KEY not in report + done.stderr
    assert runs  # the steps went to the server's database
    assert all(run["status"] == "completed" for run in runs)


def test_without_tidebase_url_the_upstream_row_is_skipped_with_its_reason() -> None:
    config = include_upstream(CompareConfig.smoke_config(), requested=True, environ={})
    assert "upstream" not in config.systems
    facts = {"cpu_count": 2, "platform": "p", "server_version": "15", "fsync": "on", "synchronous_commit": "on",
             "wal_sync_method": "fdatasync", "shared_buffers": "128MB"}
    lines = header("python -m bench compare --smoke", facts, config, "db", CompareResults())
    assert "skipped:  upstream: $TIDEBASE_URL is not set" in "\n".join(lines)

    included = include_upstream(CompareConfig.smoke_config(), requested=True,
                                environ={"TIDEBASE_URL": "http://user:secret@example.com:7373/api?token=t"})
    assert included.systems == ("floor", "tidebase", "upstream")
    assert included.upstream_host == "example.com:7373"
    assert included.skipped == ()
