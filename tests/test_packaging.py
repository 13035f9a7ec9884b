"""What users install: the distribution name is one PyPI leaves free for this project, the base install carries what
the README's commands need and no more, and no document tells people to install the upstream SDK by mistake."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]  # type: ignore[no-any-return]


def test_the_distribution_is_not_named_like_the_upstream_sdk() -> None:
    """The distribution is `tidebase-postgres` (PyPI's `tidebase` is the upstream HTTP SDK); the command is
    `tidebase`."""
    project = _project()
    assert project["name"] == "tidebase-postgres"
    assert project["scripts"] == {"tidebase": "tidebase.cli:main"}  # type: ignore[comparison-overlap]


def test_the_base_install_carries_the_server_but_not_uvicorns_extras() -> None:
    """`tidebase serve` works from the base install (plain uvicorn, Starlette, Jinja2); the compiled event loop and
    parser come with the `server` extra, and nothing pulls `uvicorn[standard]`."""
    project = _project()
    base = [str(d) for d in project["dependencies"]]  # type: ignore[attr-defined]
    assert any(d.startswith("uvicorn>=") for d in base) and any(d.startswith("starlette") for d in base)
    assert not any("[standard]" in d for d in base)
    extras = project["optional-dependencies"]
    assert {re.split(r"[<>=;\s]", d)[0] for d in extras["server"]} == {"uvloop", "httptools"}  # type: ignore[index]


def test_no_document_says_pip_install_tidebase_for_this_project() -> None:
    """Every `pip install` of this project in the docs names `tidebase-postgres` (or the checkout); a bare
    `tidebase` appears only pinned to the upstream SDK's version."""
    offending = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text("utf-8").splitlines(), 1):
            for match in re.finditer(r"pip install\s+(?:-\S+\s+)*([\w.=\-\[\]\"']+)", line):
                target = match.group(1).strip("\"'")
                if target.startswith("tidebase") and not target.startswith(("tidebase-postgres", "tidebase==")):
                    offending.append(f"{doc.name}:{number}: {line.strip()}")
    assert offending == []
