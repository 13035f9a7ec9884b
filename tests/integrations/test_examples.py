"""The runnable agents of examples/ run offline, end to end: each suspends at its refund's approval gate, is resumed
after the approval, and shows its steps and the usage the resume saved."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(("script", "steps"), [
    ("pydantic_ai_support.py", ["pydantic_ai:support:model", "pydantic_ai:support:model#2"]),
    ("openai_agents_support.py", ["openai_agents:triage:guardrail:on_topic", "openai_agents:support:model#2"]),
])
def test_the_example_agent_runs_offline(dsn: str, script: str, steps: list[str]) -> None:
    """Without an API key the example uses its offline model against the given database and completes after the
    approval, printing the answer, the steps and the saved usage."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "TIDEBASE_DATABASE_URL")}
    done = subprocess.run([sys.executable, str(EXAMPLES / script)], env={**env, "TIDEBASE_DATABASE_URL": dsn},
                          capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("waiting for approval: Allow agent 'support' to call refund(")
    assert "refunded order" in lines[1]
    assert all(step in lines[2] for step in steps)
    assert lines[3].startswith("spent ") and not lines[3].endswith("saved 0")
