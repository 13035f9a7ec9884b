"""docs/http-api.md documents the server it ships with: its route reference is what tools/http_api_doc.py generates
from the app's own OpenAPI document (so a route, a body field or an error code that changes without the document
fails here), every link to one of its anchors resolves, and its input-hash vectors are the library's (no database)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tidebase.core.serde import JsonSerializer, canonical_hash, dumps

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "http-api.md"
TOOL = ROOT / "tools" / "http_api_doc.py"
ANCHOR = re.compile(r'<a id="([a-z0-9-]+)"></a>')
LINK = re.compile(r"http-api\.md#([A-Za-z0-9_-]+)")


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    """tools/http_api_doc.py as a module."""
    spec = importlib.util.spec_from_file_location("http_api_doc", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_reference_is_up_to_date() -> None:
    """`tools/http_api_doc.py --check` passes: the generated blocks are what the app's OpenAPI document gives."""
    done = subprocess.run([sys.executable, str(TOOL), "--check"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_a_stale_reference_is_detected(tool: ModuleType) -> None:
    """A document whose generated route block is stale (here: empty) is regenerated into something else, which is
    what makes `--check` fail."""
    text = DOC.read_text("utf-8")
    stale = re.sub(r"(<!-- generated: routes -->\n).*?(<!-- end -->)", r"\1\2", text, flags=re.S)
    assert stale != text
    assert tool.render(stale, tool.load_app()) == text


def test_an_operation_without_notes_fails(tool: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """An operation of the OpenAPI document that the generator has no notes for (its answers and error codes) is
    an error, not a silently thinner reference."""
    notes = dict(tool.ROUTES)
    del notes["POST /runs/{runId}/steps/begin"]
    monkeypatch.setattr(tool, "ROUTES", notes)
    with pytest.raises(tool.DocError, match="steps/begin"):
        tool.render(DOC.read_text("utf-8"), tool.load_app())


def test_every_route_the_app_serves_is_documented(tool: ModuleType) -> None:
    """Each operation the app serves has its section in the document, under the anchor the index links to."""
    text = DOC.read_text("utf-8")
    anchors = set(ANCHOR.findall(text))
    app = tool.load_app()
    assert len(app.served) >= 30
    for key in app.served:
        assert tool.slug(key) in anchors, key
        method, path = key.split(" ", 1)
        assert f"### `{method} {path}`" in text, key


def test_links_to_http_api_anchors_resolve() -> None:
    """Every link to an anchor of docs/http-api.md written in the sources, the tests and the documents names an anchor
    the document defines."""
    anchors = set(ANCHOR.findall(DOC.read_text("utf-8")))
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in (ROOT / "src", ROOT / "tests", ROOT / "tools"):
        files += [p for p in sorted(folder.rglob("*")) if p.suffix in (".py", ".sql", ".md", ".html")]
    broken = []
    for path in files:
        for number, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), start=1):
            broken += [f"{path.relative_to(ROOT)}:{number}: #{a}" for a in LINK.findall(line) if a not in anchors]
    assert broken == []


def test_input_hash_vectors_are_the_library_s() -> None:
    """Each row of the document's input-hash vectors: the library's canonical text and SHA-256 of the input."""
    text = DOC.read_text("utf-8")
    table = text.split('<a id="input-hash-vectors"></a>', 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "SHA-256" not in line]
    assert len(rows) >= 8
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        source, canonical, digest = (c.strip("`") for c in cells)
        value = None if source == "no input" else json.loads(source)
        assert dumps(value, JsonSerializer(), sort_keys=True) == canonical, row
        assert canonical_hash(value, JsonSerializer()) == digest, row


def test_the_documents_describe_the_contract_in_the_repository() -> None:
    """README.md and docs/ link the contract in docs/http-api.md, and name no other contract document."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert "wire-api" not in path.read_text("utf-8"), path
    assert "docs/http-api.md" in (ROOT / "README.md").read_text("utf-8")
    assert "(http-api.md" in (ROOT / "docs" / "server.md").read_text("utf-8")
