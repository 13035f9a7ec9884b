"""How the `tidebase` command prints: the one place that knows about terminals, colour, time zones and JSON.

Each command says what to print (lines, key/value fields, tables, JSON documents) through an `Output`; this module
decides how. On a terminal, tables and statuses are drawn with `rich`, in colour; piped, or with `NO_COLOR` set (or
`TERM=dumb`), the same content is printed as plain aligned text that a script can split on whitespace. The status
word is always printed, so colour never carries meaning on its own.

Times are shown in the machine's local zone with their offset (`2026-12-07 19:30:05 +01:00`), or in UTC when asked;
durations in human units (`340 ms`, `1.2 s`, `3 m 05 s`, `2 h 01 m`). JSON documents are indented, keep non-ASCII
text as it is (`…`, not `\\u2026`) and write datetimes as ISO 8601 with their offset.

The library and the HTTP API spell a gate cancelled by its run's cancellation `canceled` (the wire spelling); the
command line says `cancelled` for runs and gates alike, so `spell()` is applied to gate statuses and decisions
before they are printed. Stored values are never changed.

Deliberately not here: what to print (the commands decide) and anything that reads the database.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tidebase.ops.logs import format_duration, format_offset

__all__ = ["Output", "Styled", "format_duration", "format_time", "spell", "status"]

# The colour of each run, step and gate status; the word itself is always printed as well.
STATUS_STYLES = {
    "completed": "green", "approved": "green",
    "running": "cyan", "claimed": "cyan",
    "queued": "blue", "pending": "yellow", "waiting": "magenta",
    "manual_review": "bold yellow", "failed_retryable": "yellow",
    "failed": "bold red", "rejected": "red", "dead": "bold red",
    "cancelled": "dim",
}
CELL_WIDTH = 48


def spell(word: Any) -> Any:
    """The command line's spelling of a status or decision: `cancelled` for the gates' wire spelling `canceled`."""
    return "cancelled" if word == "canceled" else word


@dataclasses.dataclass(frozen=True)
class Styled:
    """Text with a rich style, printed plain (style dropped) when the output is not a colour terminal."""

    text: str
    style: str | None = None


def status(word: str | None) -> Styled | None:
    """A status or decision word, in the command line's spelling, coloured by meaning on a terminal."""
    if word is None:
        return None
    word = spell(word)
    return Styled(word, STATUS_STYLES.get(word))


def format_time(value: datetime, *, utc: bool = False) -> str:
    """`2026-12-07 19:30:05 +01:00`: the instant in the local zone (or UTC) with its offset. A naive value is UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    local = value.astimezone(UTC if utc else None)
    return f"{local:%Y-%m-%d %H:%M:%S} {format_offset(local)}"


def to_plain(value: Any, *, utc: bool = False) -> Any:
    """`value` as JSON-ready data: dataclasses as dicts (without their repr-hidden fields, such as a gate's resolve
    token), datetimes as ISO 8601 with their offset in the local zone (or UTC)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name), utc=utc) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, dict):
        return {k: to_plain(v, utc=utc) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v, utc=utc) for v in value]
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC if utc else None).isoformat()
    return value


def pretty_json(value: Any, *, utc: bool = False) -> str:
    """An indented JSON document, non-ASCII text kept as it is."""
    return json.dumps(to_plain(value, utc=utc), indent=2, ensure_ascii=False, default=str)


def compact_json(value: Any, *, utc: bool = False) -> str:
    """One line of JSON, non-ASCII text kept as it is."""
    return json.dumps(to_plain(value, utc=utc), ensure_ascii=False, default=str)


class Output:
    """Where one command prints: stdout, styled when it is a colour terminal (see the module docstring)."""

    def __init__(self, *, utc: bool = False, file: TextIO | None = None) -> None:
        self.file = file if file is not None else sys.stdout
        self.utc = utc
        # highlight/markup off: user data (ids, payloads) must never be reinterpreted as styles or recoloured.
        self.console = Console(file=self.file, highlight=False, markup=False, emoji=False, soft_wrap=True)
        self.styled = self.console.color_system is not None and not self.console.no_color

    # -- values ----------------------------------------------------------------------------------------------------

    def time(self, value: datetime | None) -> str:
        """A timestamp in the zone of this output, `-` for None."""
        return "-" if value is None else format_time(value, utc=self.utc)

    def text(self, value: Any, width: int | None = CELL_WIDTH) -> str:
        """The one-line text of a value: `-` for None, times in this output's zone, JSON for structures; cut to
        `width` characters with `…`."""
        if value is None:
            text = "-"
        elif isinstance(value, Styled):
            text = value.text
        elif isinstance(value, datetime):
            text = self.time(value)
        elif isinstance(value, str):
            text = value
        else:
            text = compact_json(value, utc=self.utc)
        text = text.replace("\n", " ")
        return text if width is None or len(text) <= width else text[: width - 1] + "…"

    def _rich(self, value: Any, width: int | None = CELL_WIDTH) -> Text:
        style = (value.style or "") if isinstance(value, Styled) else ""
        return Text(self.text(value, width), style=style)

    # -- printing --------------------------------------------------------------------------------------------------

    def line(self, *parts: Any, style: str | None = None) -> None:
        """One line made of `parts` (strings, or Styled words), joined without separators."""
        if self.styled:
            self.console.print(Text.assemble(*(self._rich(p, None) for p in parts), style=style or ""))
        else:
            self._plain("".join(self.text(p, None) for p in parts))

    def heading(self, text: str) -> None:
        """A section heading, after a blank line."""
        self._plain("")
        self.line(text, style="bold")

    def fields(self, pairs: Sequence[tuple[str, Any]], width: int = 100) -> None:
        """`key: value` lines with the values aligned; None values are skipped."""
        shown = [(k, v) for k, v in pairs if v is not None]
        pad = max((len(k) for k, _ in shown), default=0) + 2
        for key, value in shown:
            label = f"{key}:".ljust(pad)
            if self.styled:
                self.console.print(Text.assemble(Text(label, style="bold"), self._rich(value, width)))
            else:
                self._plain(label + self.text(value, width))

    def block(self, text: str, indent: int = 2) -> None:
        """Preformatted text (a traceback, a JSON document), indented, printed as it is."""
        for line in text.splitlines():
            self._plain(" " * indent + line)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], width: int = CELL_WIDTH,
              wide: str | None = None) -> None:
        """An aligned table with upper-case headers: drawn by rich on a terminal, plain text otherwise. Each cell is
        cut to `width` characters; on a terminal too narrow for the table, the column named `wide` (free text such as
        a payload) is cut further, and what still does not fit wraps as the terminal wraps any long line: no column
        is ever dropped or folded, so ids and statuses stay whole."""
        cells = [[self.text(v, width) for v in row] for row in rows]
        sizes = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
        if not self.styled:
            self._plain("  ".join(h.upper().ljust(w) for h, w in zip(headers, sizes, strict=True)).rstrip())
            for r in cells:
                self._plain("  ".join(c.ljust(w) for c, w in zip(r, sizes, strict=True)).rstrip())
            return
        total = sum(sizes) + 3 * (len(sizes) - 1)  # one space of padding each side of a one-space rule
        if wide is not None and total > self.console.width:
            i = list(headers).index(wide)
            sizes[i] = max(len(wide), 12, sizes[i] - (total - self.console.width))
            total = sum(sizes) + 3 * (len(sizes) - 1)
        grid = Table(box=box.SIMPLE_HEAD, header_style="bold", show_edge=False, pad_edge=False)
        for header, size in zip(headers, sizes, strict=True):
            grid.add_column(header.upper(), min_width=size, max_width=size, no_wrap=True, overflow="ellipsis")
        for row in rows:
            grid.add_row(*(self._rich(v, width) for v in row))
        fits = self.console.width
        self.console.width = max(fits, total)
        try:
            self.console.print(grid)
        finally:
            self.console.width = fits

    def json(self, value: Any) -> None:
        """One indented JSON document."""
        self._plain(pretty_json(value, utc=self.utc))

    def json_line(self, value: Any) -> None:
        """One JSON object on one line (for streams of documents, such as `runs tail --json`)."""
        self._plain(compact_json(value, utc=self.utc))

    def _plain(self, text: str) -> None:
        print(text, file=self.file, flush=True)


def error(message: str) -> None:
    """An error line on stderr, `tidebase: ` first."""
    print(f"tidebase: {message}", file=sys.stderr, flush=True)
