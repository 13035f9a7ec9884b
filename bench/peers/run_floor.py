"""The physical floor: what any per-step checkpoint costs at least on this PostgreSQL, from a raw psycopg 3 loop.

- executed step: one `INSERT INTO bench_floor (doc) VALUES (%s)` of the ~200-byte JSON value as `Jsonb`, on an
  autocommit connection, so each step is one statement, one round trip and one commit (one WAL flush);
- resume reference: one `SELECT doc FROM bench_floor_rows WHERE run_id = %s ORDER BY seq` of k such rows on a warm
  connection, fetched and decoded (run once untimed, then timed): the least that loading k checkpoints can cost.

Runs in the main virtualenv (psycopg only).
"""

from __future__ import annotations

import sys
from time import perf_counter
from typing import Any

import psycopg
from _common import ResumeResult, RunResult, fresh_id, main, step_output
from psycopg.types.json import Jsonb

_TABLES = (
    "CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, doc jsonb NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bench_floor_rows (run_id text, seq int, doc jsonb NOT NULL, PRIMARY KEY (run_id, seq))",
)
_INSERT = "INSERT INTO bench_floor (doc) VALUES (%s)"
_INSERT_ROW = "INSERT INTO bench_floor_rows (run_id, seq, doc) VALUES (%s, %s, %s)"
_SELECT_ROWS = "SELECT doc FROM bench_floor_rows WHERE run_id = %s ORDER BY seq"


class Floor:
    """One autocommit psycopg connection, opened and kept for the whole task."""

    insert = _INSERT

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        for statement in _TABLES:
            self.conn.execute(statement)

    def run(self, steps: int, deadline: float | None = None) -> RunResult:
        result = RunResult(perf_counter(), 0.0)
        with self.conn.cursor() as cur:
            for i in range(steps):
                if deadline is not None and perf_counter() > deadline:
                    break
                cur.execute(self.insert, (Jsonb(step_output(i)),))
                result.completed.append(perf_counter())
        result.finished = perf_counter()
        return result

    def prepare_failed(self, k: int) -> Any:
        run_id = fresh_id("floor")
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(_INSERT_ROW, [(run_id, i, Jsonb(step_output(i))) for i in range(k)])
        return run_id

    def resume(self, handle: Any) -> ResumeResult:
        with self.conn.cursor() as cur:
            cur.execute(_SELECT_ROWS, (handle,))
            cur.fetchall()
            start = perf_counter()
            cur.execute(_SELECT_ROWS, (handle,))
            cur.fetchall()
            elapsed = perf_counter() - start
        return ResumeResult(elapsed, elapsed)

    def close(self) -> None:
        self.conn.close()


def versions() -> dict[str, str]:
    return {"psycopg": psycopg.__version__, "python": sys.version.split()[0]}


if __name__ == "__main__":
    sys.exit(main(Floor, versions))
