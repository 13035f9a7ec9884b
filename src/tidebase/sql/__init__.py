"""The only place that holds SQL text: named queries, numbered migrations and the function files.

`queries.sql` (the library's statements) and `queries_<area>.sql` (those of one area, e.g. the HTTP protocol or the
queues) are sequences of blocks, each opened by a `-- name: <name>` line and a one-line description comment;
`load_queries()` turns them into one `dict[str, LiteralString]` (names are unique across files) so Python code refers
to statements by name and never builds SQL from strings. Migrations are `migrations/NNNN_description.sql` (tables,
columns, indexes), applied once each, in order. Function files are `functions/NN_concern.sql` (every function and
trigger, `CREATE OR REPLACE`), re-applied whenever their checksum changes; `functions_checksum()` is the one value
that says whether a database has this package's functions. Both are applied by `tidebase.core.migrate`.
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
_FUNCTION_FILE = re.compile(r"^\d{2}_[a-z0-9_]+\.sql$")


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


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
                checksum=_checksum(sql),
            )
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migration versions must be 1..N without gaps, found {versions}")
    return tuple(found)


@dataclass(frozen=True)
class FunctionFile:
    """One file of `functions/`: its name (e.g. `40_steps.sql`), text and checksum."""

    name: str
    sql: LiteralString
    checksum: str


@functools.cache
def function_files() -> tuple[FunctionFile, ...]:
    """Every function file shipped with this package, by name."""
    folder = resources.files(__package__).joinpath("functions")
    found = []
    for entry in folder.iterdir():
        if _FUNCTION_FILE.match(entry.name):
            sql = entry.read_text("utf-8")
            found.append(FunctionFile(entry.name, sql, _checksum(sql)))
    found.sort(key=lambda f: f.name)
    return tuple(found)


def functions_checksum(files: tuple[FunctionFile, ...] | None = None) -> str:
    """One checksum over the (name, checksum) pairs of the function files: the value the `schema_state` statement
    computes from the ledger `tidebase.schema_functions`, so one comparison says whether a database is current."""
    chosen = function_files() if files is None else files
    return _checksum("".join(f"{f.name} {f.checksum}\n" for f in sorted(chosen, key=lambda f: f.name)))
