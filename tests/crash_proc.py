"""A process that starts a run with plain `tide.run` and is killed in the middle: `python crash_proc.py DSN RUN_ID
LEASE [register]`.

The workflow `crashy` records each step execution in table `executions` (created by the test), completes `s1`,
then prints `in s2` and blocks inside `s2` until killed. With `register`, the workflow is registered with
`@tide.workflow`, so a worker may resume the run once its lease expires.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import psycopg

from tidebase import Tidebase


def main(dsn: str, run_id: str, lease: float, register: bool) -> None:
    tide = Tidebase(dsn, lease_seconds=lease)
    log = psycopg.connect(dsn, autocommit=True)

    def crashy(run: Any, input: Any) -> Any:
        def record(key: str) -> str:
            log.execute("INSERT INTO executions (run_id, key) VALUES (%s, %s)", (run.run_id, key))
            return key

        run.step("s1", lambda: record("s1"))

        def block() -> str:
            record("s2")
            print("in s2", flush=True)
            while True:
                time.sleep(1)

        return run.step("s2", block)

    if register:
        tide.workflow("crashy")(crashy)
    tide.run("crashy", crashy, run_id=run_id)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), len(sys.argv) > 4 and sys.argv[4] == "register")
