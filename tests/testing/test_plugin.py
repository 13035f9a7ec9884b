"""The pytest plugin, as a user's suite meets it: registered through its entry point, with `tide` and `atide` on a
fresh database per test. The documented example suite runs in a pytest of its own (a subprocess), where no conftest
overrides the fixtures."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- snippet: not run: a pytest module; tests/testing/test_plugin.py runs it with the plugin -->"


def documented_suite() -> str:
    """The example test module of docs/testing.md: the python block after its marker."""
    text = (ROOT / "docs" / "testing.md").read_text("utf-8")
    block = text.split(MARKER + "\n```python\n", 1)[1]
    return block.split("\n```", 1)[0] + "\n"


def test_the_entry_point_registers_the_plugin() -> None:
    """The distribution registers `tidebase.testing.plugin` with pytest under the name `tidebase`."""
    found = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}

    assert found.get("tidebase") == "tidebase.testing.plugin"


def test_the_documented_agent_test_passes_with_the_plugins_fixtures(tmp_path: Path) -> None:
    """docs/testing.md's example module, in a suite with no conftest: `tide` and `atide` come from the plugin, each
    on a database of its own, and the crash tests of the agent pass."""
    (tmp_path / "test_support.py").write_text(documented_suite(), encoding="utf-8")
    # Without the dev environment's slowest plugins, which a user's suite would not have (3 s of imports).
    quiet = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:schemathesis"]

    done = subprocess.run([sys.executable, "-m", "pytest", "-q", *quiet, str(tmp_path)], cwd=tmp_path,
                          env=dict(os.environ), capture_output=True, text=True, timeout=120, check=False)

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
