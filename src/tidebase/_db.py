# Generated from the async source by tools/async_to_sync.py: do not edit, edit the *_async.py file.
"""Running named statements on a connection pool, with errors translated.

`Database` owns (or borrows) a psycopg pool and runs statements from `sql/queries.sql` by name, one pool
connection per call. Our own pool's connections are in autocommit mode, so a statement is its own transaction and a
fenced write costs exactly one round trip; a borrowed pool in transaction mode also works (psycopg's pool commits on
return) at the cost of a COMMIT. It holds no state about runs and makes no decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from ._translate import translated
from .sql import load_queries

Row = dict[str, Any]
Params = Mapping[str, Any]


class Database:
    """Named statements over a pool. Safe to share between tasks (each call takes its own connection)."""

    def __init__(self, pool: ConnectionPool[Any], *, owns_pool: bool) -> None:
        self.pool = pool
        self.owns_pool = owns_pool
        self.queries = load_queries()

    @classmethod
    def connect(cls, dsn: str, *, min_size: int, max_size: int) -> Database:
        """Opens a pool of autocommit connections to `dsn` (fails fast when the database is unreachable)."""
        pool: ConnectionPool[Any] = ConnectionPool(
            dsn, min_size=min_size, max_size=max_size, open=False, kwargs={"autocommit": True},
            name="tidebase",
        )
        with translated():
            pool.open(wait=True, timeout=30)
        return cls(pool, owns_pool=True)

    def close(self) -> None:
        if self.owns_pool:
            self.pool.close()

    def fetchone(self, name: str, params: Params, **context: Any) -> Row | None:
        """Runs statement `name` and returns its first row (or None)."""
        with translated(**context):
            with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                cur.execute(self.queries[name], params)
                row: Row | None = cur.fetchone()
                return row

    def fetchall(self, name: str, params: Params, **context: Any) -> list[Row]:
        """Runs statement `name` and returns every row."""
        with translated(**context):
            with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                cur.execute(self.queries[name], params)
                rows: list[Row] = cur.fetchall()
                return rows

    def pipeline(self, calls: Sequence[tuple[str, Params]], **context: Any) -> list[list[Row]]:
        """Runs several statements in one round trip (pipeline mode), each its own transaction, in order.

        When one raises, the later ones are not executed and the error is raised (translated).
        """
        with translated(**context):
            with self.pool.connection() as conn:
                cursors = []
                with conn.pipeline():
                    for name, params in calls:
                        cur = conn.cursor(row_factory=dict_row)
                        cur.execute(self.queries[name], params)
                        cursors.append(cur)
                # Reading only after the block has synced: fetching inside it would add a flush round trip.
                return [cur.fetchall() for cur in cursors]

    def snapshot(self, calls: Sequence[tuple[str, Params]], **context: Any) -> list[list[Row]]:
        """Runs read statements in one REPEATABLE READ transaction, so they all see one consistent snapshot."""
        with translated(**context):
            with self.pool.connection() as conn:
                with conn.transaction():
                    conn.execute(self.queries["repeatable_read"])
                    results = []
                    for name, params in calls:
                        with conn.cursor(row_factory=dict_row) as cur:
                            cur.execute(self.queries[name], params)
                            results.append(cur.fetchall())
                return results
