"""Prints the DDL that distributes the tidebase schema on Citus, from the classification of
tests/unit/test_distribution.py (the one list of distributed, reference and local tables); `--write` puts it into
docs/scaling.md between its markers, where the test checks it.

    python tools/distribution_ddl.py [--write]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tests" / "unit" / "test_distribution.py"


def _classification() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tidebase_distribution_check", CHECK)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {CHECK}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update the DDL block of docs/scaling.md")
    args = parser.parse_args(argv)
    check = _classification()
    ddl: str = check.distribution_ddl()
    if not args.write:
        print(ddl, end="")
        return 0
    doc: Path = check.SCALING_DOC
    text = doc.read_text("utf-8")
    begin, end = text.find(check.DDL_BEGIN), text.find(check.DDL_END)
    if begin < 0 or end < begin:
        raise SystemExit(f"{doc}: the markers {check.DDL_BEGIN!r} and {check.DDL_END!r} are missing")
    doc.write_text(text[:begin] + check.doc_block(ddl) + text[end + len(check.DDL_END):], "utf-8")
    print(f"updated {doc.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
