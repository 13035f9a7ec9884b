"""JSON for people: collapsible trees and line diffs, rendered to HTML on the server.

A tree is nested `<details>` elements, so it folds and unfolds without any script and with the keyboard. Rendering
is bounded (a budget of nodes and of characters per string) so one huge output cannot make a page slow; what is cut
says so, and the full value is one link away as raw JSON. A diff compares the pretty-printed JSON (sorted keys, two
spaces) of two values line by line, each line marked `+`, `-` or ` ` in text as well as in colour.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

NODE_BUDGET = 2000
STRING_LIMIT = 2000


def pretty(value: Any) -> str:
    """Stable pretty JSON: sorted keys, two-space indent, non-ASCII kept."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def compact(value: Any, limit: int = 120) -> str:
    """One-line JSON, cut at `limit` characters with an ellipsis."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Budget:
    def __init__(self, nodes: int) -> None:
        self.left = nodes


def _scalar(value: Any) -> str:
    if value is None:
        return '<span class="j-null">null</span>'
    if isinstance(value, bool):
        return f'<span class="j-bool">{"true" if value else "false"}</span>'
    if isinstance(value, int | float):
        return f'<span class="j-num">{escape(json.dumps(value))}</span>'
    text = str(value)
    cut = ""
    if len(text) > STRING_LIMIT:
        cut = f'<span class="j-cut">… {len(text) - STRING_LIMIT:,} more characters</span>'
        text = text[:STRING_LIMIT]
    return f'<span class="j-str">{escape(json.dumps(text, ensure_ascii=False))}</span>{cut}'


def _node(value: Any, depth: int, open_depth: int, budget: _Budget) -> str:
    budget.left -= 1
    if not isinstance(value, dict | list):
        return _scalar(value)
    items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
    brackets = "{}" if isinstance(value, dict) else "[]"
    if not items:
        return f'<span class="j-punct">{brackets}</span>'
    noun = ("key" if len(items) == 1 else "keys") if isinstance(value, dict) else (
        "item" if len(items) == 1 else "items")
    summary = f'<summary><span class="j-punct">{brackets[0]}</span> {len(items):,} {noun} ' \
              f'<span class="j-punct">{brackets[1]}</span></summary>'
    rows: list[str] = []
    for key, child in items:
        if budget.left <= 0:
            rows.append(f'<li class="j-cut">… {len(items) - len(rows):,} more not shown</li>')
            break
        label = (f'<span class="j-key">{escape(json.dumps(key, ensure_ascii=False))}</span>: '
                 if isinstance(value, dict) else f'<span class="j-idx">{key}</span>: ')
        rows.append(f"<li>{label}{_node(child, depth + 1, open_depth, budget)}</li>")
    is_open = " open" if depth < open_depth else ""
    return f'<details class="j-node"{is_open}>{summary}<ul>{"".join(rows)}</ul></details>'


def tree(value: Any, *, open_depth: int = 1, budget: int = NODE_BUDGET) -> Markup:
    """A collapsible HTML tree of a JSON value; objects and arrays deeper than `open_depth` start folded."""
    return Markup(f'<div class="json">{_node(value, 0, open_depth, _Budget(budget))}</div>')  # noqa: S704 - every piece is escaped above


@dataclass(frozen=True)
class DiffLine:
    """One line of a diff: `kind` is `added`, `removed` or `same`; numbers are 1-based, None where absent."""

    kind: str
    old: int | None
    new: int | None
    text: str

    @property
    def mark(self) -> str:
        return {"added": "+", "removed": "-"}.get(self.kind, " ")


def diff(old: Any, new: Any, *, context: int = 3) -> list[DiffLine | None]:
    """The line diff of two JSON values' pretty forms; None stands for elided unchanged lines between hunks."""
    a, b = pretty(old).splitlines(), pretty(new).splitlines()
    out: list[DiffLine | None] = []
    for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(context):
        if out:
            out.append(None)
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out.extend(DiffLine("same", i1 + k + 1, j1 + k + 1, a[i1 + k]) for k in range(i2 - i1))
                continue
            out.extend(DiffLine("removed", i + 1, None, a[i]) for i in range(i1, i2))
            out.extend(DiffLine("added", None, j + 1, b[j]) for j in range(j1, j2))
    return out
