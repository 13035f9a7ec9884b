"""One place per rule, checked on the SQL text shipped with the package: every function and trigger is created by one
statement of one function file (migrations hold tables only, plus the clock and ids their defaults call), only
tidebase.next_seq advances the event counter, and the invariant map of sql/functions/README.md names files and tests
that exist."""

from __future__ import annotations

import re
from pathlib import Path

from tidebase.sql import function_files, load_queries, migrations

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "src" / "tidebase" / "sql" / "functions" / "README.md"
CREATED = re.compile(r"^CREATE (?:OR REPLACE )?(?:CONSTRAINT )?(FUNCTION|TRIGGER) (?:tidebase\.)?(\w+)",
                     re.MULTILINE | re.IGNORECASE)


def test_every_function_and_trigger_is_created_in_one_place() -> None:
    """No function or trigger is defined twice, and the migrations define only the two functions column defaults
    call: everything else is in exactly one function file."""
    places: dict[tuple[str, str], list[str]] = {}
    for file in function_files():
        for kind, name in CREATED.findall(file.sql):
            places.setdefault((kind.upper(), name), []).append(file.name)
    for migration in migrations():
        for kind, name in CREATED.findall(migration.sql):
            places.setdefault((kind.upper(), name), []).append(f"migration {migration.version}")
    twice = {key: where for key, where in places.items() if len(where) > 1}
    assert not twice, f"defined more than once: {twice}"
    in_migrations = {name for (_, name), [where] in places.items() if where.startswith("migration")}
    assert in_migrations == {"now", "new_id"}


def test_only_next_seq_advances_the_event_counter() -> None:
    """`event_seq = event_seq + …` appears once in all the SQL shipped, in tidebase.next_seq; no statement but
    tidebase.next_seq creates a counter row, and the baseline's run-row counter is dropped by migration 4."""
    texts = {f.name: f.sql for f in function_files()} | {f"query {n}": q for n, q in load_queries().items()}
    texts |= {f"migration {m.version}": m.sql for m in migrations()}
    advancing = [name for name, text in texts.items() for _ in re.finditer(r"event_seq\s*=\s*event_seq", text)]
    assert advancing == ["20_fence_and_events.sql"]
    body = next(f.sql for f in function_files() if f.name == "20_fence_and_events.sql")
    next_seq = body[body.index("FUNCTION tidebase.next_seq("):body.index("FUNCTION tidebase.fence(")]
    assert re.search(r"event_seq\s*=\s*event_seq", next_seq)
    creating = [name for name, text in texts.items() if re.search(r"INSERT INTO tidebase\.event_counters ", text)]
    assert creating == ["20_fence_and_events.sql", "migration 4"]
    assert re.search(r"INSERT INTO tidebase\.event_counters", next_seq)
    assert "ALTER TABLE tidebase.runs DROP COLUMN event_seq" in next(m.sql for m in migrations() if m.version == 4)


def test_the_invariant_map_names_files_and_tests_that_exist() -> None:
    """Each of I1-I9 has a row in sql/functions/README.md; every file it cites is shipped and every test it cites is
    defined (a parametrized test by its base name)."""
    text = README.read_text("utf-8")
    rows = re.findall(r"^\| (I\d) \|.*$", text, re.MULTILINE)
    assert rows == [f"I{n}" for n in range(1, 10)]
    shipped = {f.name.removesuffix(".sql") for f in function_files()}
    cited_files = set(re.findall(r"\((\d\d_[a-z_]+)\)", text))
    assert cited_files and cited_files <= shipped
    tests = re.findall(r"`(tests/[\w/]+\.py)::(\w+)(?:\[[\w-]+\])?`", text)
    assert len(tests) >= 9
    for path, name in tests:
        source = (ROOT / path).read_text("utf-8")
        assert re.search(rf"^(async )?def {name}\(", source, re.MULTILINE), f"{path}::{name} does not exist"
    listed = set(re.findall(r"^\| `(\d\d_[a-z_]+)\.sql` \|", text, re.MULTILINE))
    assert listed == shipped
