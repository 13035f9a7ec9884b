"""A real worker process for the worker tests: `python worker_proc.py DSN NAME [CONCURRENCY] [LEASE] [GRACE]`.

It registers the test workflows and runs `tide.work` until SIGTERM. Every step execution is recorded in table
`executions` (created by the test) before the step returns, so the test can tell executions from replays:
- `chaos`: input {"steps": N, "sleep": S}; each step records its execution, sleeps S seconds, returns the record id;
- `hold`: like chaos, but step `s{input.hold}` first records, then waits until table `flags` has row input["flag"];
- `cool-off`: input {"seconds": S}; step `prepare` records, then run.sleep("cool-off", S), then step `finish`
  records; returns how long the sleep call took in the process that passed it (`slept`, seconds).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import psycopg
from psycopg import conninfo

from tidebase import Tidebase


def main(dsn: str, name: str, concurrency: int, lease: float, grace: float) -> None:
    logging.basicConfig(level=logging.INFO, format=f"{name} %(levelname)s %(name)s %(message)s")
    tide = Tidebase(conninfo.make_conninfo(dsn, application_name=name), lease_seconds=lease,
                    pool_max_size=concurrency * 2 + 4)
    log = psycopg.connect(dsn, autocommit=True)

    def record(run_id: str, key: str) -> int:
        row = log.execute("INSERT INTO executions (run_id, key, worker) VALUES (%s, %s, %s) RETURNING id",
                          (run_id, key, name)).fetchone()
        assert row is not None
        return int(row[0])

    def wait_flag(flag: str) -> None:
        while log.execute("SELECT 1 FROM flags WHERE name = %s", (flag,)).fetchone() is None:
            time.sleep(0.02)

    @tide.workflow("chaos")
    def chaos(run: Any, input: Any) -> Any:
        out = []
        for i in range(input["steps"]):
            def body(i: int = i) -> int:
                exec_id = record(run.run_id, f"s{i}")
                if input.get("hold") == i:
                    wait_flag(input["flag"])
                time.sleep(input.get("sleep", 0))
                return exec_id
            out.append(run.step(f"s{i}", body))
        return out

    @tide.workflow("cool-off")
    def cool_off(run: Any, input: Any) -> Any:
        run.step("prepare", lambda: record(run.run_id, "prepare"))
        began = time.monotonic()
        run.sleep("cool-off", input["seconds"])
        slept = time.monotonic() - began
        run.step("finish", lambda: record(run.run_id, "finish"))
        return {"slept": slept}

    print(f"ready {os.getpid()}", flush=True)
    tide.work(["default"], concurrency=concurrency, poll_interval=0.05, reconcile_interval=0.2, shutdown_grace=grace)
    tide.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2,
         float(sys.argv[4]) if len(sys.argv) > 4 else 1.0, float(sys.argv[5]) if len(sys.argv) > 5 else 5.0)
