"""A fan-out parent to be killed mid-way: runs run `fan-parent`, a fan-out of 20 children, 4 at a time.

Each child's step records its execution in the `child_executions` table (committed before it goes on), then children
from HOLD_FROM on take a share lock on the `fanout_gate` row, so they block while the test holds that row: the test
can then see (in the database) the children before HOLD_FROM completed and the next ones stuck mid-step, and kill this
process at exactly that point. The test imports the same workflows to resume the parent in-process.
Usage: python fanout_worker.py DSN
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import conninfo

from tidebase import Child, Tidebase

PARENT_ID = "fan-parent"
PARENT_WORKFLOW = "fanout-parent"
CHILDREN = 20
HOLD_FROM = 10
MAX_CONCURRENCY = 4
CHILD_APP = "fanout-child"


def child_name(i: int) -> str:
    return f"c{i:02d}"


def make_parent(dsn: str) -> Callable[[Any, Any], Any]:
    """The parent workflow: fan-out `work` of CHILDREN children whose step writes to the database."""

    def body(i: int) -> int:
        app = conninfo.make_conninfo(dsn, application_name=f"{CHILD_APP}-{i}")
        with psycopg.connect(app, autocommit=True) as conn:
            conn.execute("INSERT INTO child_executions (child, pid) VALUES (%s, %s)", (child_name(i), os.getpid()))
            if i >= HOLD_FROM:
                conn.execute("SELECT 1 FROM fanout_gate WHERE id = 1 FOR SHARE")
        return i * i

    def square(run: Any, input: Any) -> Any:
        return {"i": input["i"], "sq": run.step("work", lambda: body(input["i"]))}

    def parent(run: Any, input: Any) -> Any:
        children = [Child(child_name(i), square, input={"i": i}) for i in range(CHILDREN)]
        return run.fanout("fan", children, max_concurrency=MAX_CONCURRENCY)

    return parent


def main(dsn: str) -> None:
    tide = Tidebase(conninfo.make_conninfo(dsn, application_name="fanout-worker"))
    try:
        tide.run(PARENT_WORKFLOW, make_parent(dsn), run_id=PARENT_ID)
    finally:
        tide.close()


if __name__ == "__main__":
    main(sys.argv[1])
