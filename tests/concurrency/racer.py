"""A racing worker process: runs the shared 5-step workflow on run `contended` and prints what happened as JSON.

Every step execution is also recorded in the `executions` table, so the test can count executions across processes.
Usage: python racer.py DSN INDEX
"""

from __future__ import annotations

import json
import sys
from typing import Any

import psycopg
from psycopg import conninfo

from tidebase import LeaseHeld, Tidebase


def main(dsn: str, index: int) -> None:
    tide = Tidebase(conninfo.make_conninfo(dsn, application_name=f"racer-{index}"))

    def effect(name: str) -> str:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO executions (step, worker) VALUES (%s, %s)", (name, index))
        return name

    def wf(run: Any, input: Any) -> Any:
        return [run.step(f"s{i}", lambda i=i: effect(f"s{i}")) for i in range(5)]

    try:
        print(json.dumps({"index": index, "outcome": "ran", "result": tide.run("race", wf, run_id="contended")}))
    except LeaseHeld as exc:
        print(json.dumps({"index": index, "outcome": "held", "owner": exc.owner}))
    finally:
        tide.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
