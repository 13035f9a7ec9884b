"""The command line: a thin shell over the library, driven in-process and once as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tidebase.cli.main import main


def test_migrate_reports_the_schema_version(empty_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`tidebase migrate --dsn` applies the migrations and says so; a second call applies none."""
    assert main(["migrate", "--dsn", empty_dsn]) == 0
    assert "applied now: 1" in capsys.readouterr().out
    assert main(["migrate", "--dsn", empty_dsn]) == 0
    assert "applied now: none" in capsys.readouterr().out


def test_demo_crashes_then_resumes_from_checkpoints(dsn: str) -> None:
    """`tidebase demo` (a real process) shows the two completed steps replayed and only the rest executed."""
    env = {**os.environ, "TIDEBASE_DATABASE_URL": dsn}
    result = subprocess.run([sys.executable, "-m", "tidebase", "demo"], capture_output=True, text=True, env=env,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "crashed" in out
    assert "replayed  plan" in out and "replayed  search" in out
    assert "executed  summarize" in out and "executed  finalize" in out
    assert "status: completed, attempt 2" in out


def test_errors_exit_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    """A Tidebase error becomes exit code 2 and one line on stderr, without a traceback."""
    code = main(["migrate", "--dsn", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("tidebase: ") and "Traceback" not in err
