"""The only place that holds SQL text: named queries and numbered migrations.

`queries.sql` (the library's statements) and `queries_<area>.sql` (those of one area, e.g. the HTTP protocol or the
queues) are sequences of blocks, each opened by a `-- name: <name>` line and a one-line description comment;
`load_queries()` turns them into one `dict[str, LiteralString]` (names are unique across files) so Python code refers
to statements by name and never builds SQL from strings. Migrations are `migrations/NNNN_description.sql`, applied
in order by `tidebase.migrate`.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import LiteralString, cast

_BLOCK = re.compile(r"^-- name: (?P<name>[a-z_0-9]+)\s*$", re.MULTILINE)
_QUERY_FILE = re.compile(r"^queries(_[a-z]+)?\.sql$")
_MIGRATION = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


@functools.cache
def load_queries() -> dict[str, LiteralString]:
    """Parses the query files into {name: statement}. Raises ValueError on a duplicate name."""
    folder = resources.files(__package__)
    files = sorted(e.name for e in folder.iterdir() if _QUERY_FILE.match(e.name))
    queries: dict[str, LiteralString] = {}
    for file in files:
        parts = _BLOCK.split(folder.joinpath(file).read_text("utf-8"))
        # parts = [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise ValueError(f"duplicate query name {name!r} in {file}")
            queries[name] = cast(LiteralString, body.strip())
    return queries


@dataclass(frozen=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    sql: LiteralString
    checksum: str


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """Every migration shipped with this package, in version order."""
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match is None:
            continue
        sql = entry.read_text("utf-8")
        found.append(
            Migration(
                version=int(match["version"]),
                name=match["name"],
                sql=sql,  # our own package file, never user input
                checksum=hashlib.sha256(sql.encode("utf-8")).hexdigest(),
            )
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migration versions must be 1..N without gaps, found {versions}")
    return tuple(found)
