# Generated from the async source by tools/async_to_sync.py: do not edit, edit the *_async.py file.
"""Running named statements on a connection pool, with errors translated.

`Database` owns (or borrows) a psycopg pool and runs statements from `sql/queries.sql` by name, one pool
connection per call. Our own pool's connections are in autocommit mode, so a statement is its own transaction and a
fenced write costs exactly one round trip; a borrowed pool in transaction mode also works (psycopg's pool commits on
return) at the cost of a COMMIT. It holds no state about runs and makes no decisions.

Every call is bounded: the pool's connections carry the timeouts of `tidebase._connect`, and each call runs under
the client-side deadline of `tidebase._deadline`, so a stalled network path surfaces as `DatabaseUnavailable`
instead of a hang. Opening the pool first makes one direct connection, so a wrong DSN fails at once with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import Connection
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from ._connect import Timeouts, connect_error, tuned_conninfo
from ._deadline import guard
from ._translate import translated
from .sql import load_queries

Row = dict[str, Any]
Params = Mapping[str, Any]


class Database:
    """Named statements over a pool. Safe to share between tasks (each call takes its own connection)."""

    def __init__(self, pool: ConnectionPool[Any], *, owns_pool: bool, timeouts: Timeouts | None = None) -> None:
        self.pool = pool
        self.owns_pool = owns_pool
        self.timeouts = timeouts or Timeouts()
        self.queries = load_queries()

    @classmethod
    def connect(
        cls, dsn: str, *, min_size: int, max_size: int, timeouts: Timeouts | None = None
    ) -> Database:
        """Opens a pool of autocommit connections to `dsn`.

        One direct connection is made first, so an unreachable server, refused credentials, a missing database or a
        malformed DSN raise at once (within the connect timeout) an error naming the target and the reason:
        DatabaseUnavailable, or ConfigurationError for a malformed DSN.
        """
        timeouts = timeouts or Timeouts()
        conninfo = tuned_conninfo(dsn, timeouts)
        try:
            probe = Connection.connect(conninfo)
        except psycopg.Error as exc:
            raise connect_error(exc, conninfo) from None
        probe.close()
        pool: ConnectionPool[Any] = ConnectionPool(
            conninfo, min_size=min_size, max_size=max_size, open=False, kwargs={"autocommit": True},
            name="tidebase", timeout=timeouts.deadline or 30.0,
        )
        with translated():
            pool.open(wait=True, timeout=2 * timeouts.connect)
        return cls(pool, owns_pool=True, timeouts=timeouts)

    def close(self) -> None:
        if self.owns_pool:
            self.pool.close()

    def fetchone(self, name: str, params: Params, **context: Any) -> Row | None:
        """Runs statement `name` and returns its first row (or None)."""
        with translated(**context):
            with self.pool.connection() as conn:
                with guard(conn, self.timeouts.deadline):
                    with conn.cursor(row_factory=dict_row) as cur:
                        cur.execute(self.queries[name], params)
                        row: Row | None = cur.fetchone()
                        return row

    def fetchall(self, name: str, params: Params, **context: Any) -> list[Row]:
        """Runs statement `name` and returns every row."""
        with translated(**context):
            with self.pool.connection() as conn:
                with guard(conn, self.timeouts.deadline):
                    with conn.cursor(row_factory=dict_row) as cur:
                        cur.execute(self.queries[name], params)
                        rows: list[Row] = cur.fetchall()
                        return rows

    def pipeline(self, calls: Sequence[tuple[str, Params]], **context: Any) -> list[list[Row]]:
        """Runs several statements in one round trip (pipeline mode), each its own transaction, in order.

        When one raises, the later ones are not executed and the error is raised (translated); the connection goes
        back to the pool usable.

        Statements in a pipeline are never prepared. psycopg prepares a statement on its fifth execution and, in
        pipeline mode, records it as prepared when it *sends* the Parse; when an earlier statement of the same
        pipeline fails, the server skips that Parse, and the connection is left believing in a prepared statement
        the server never made ("prepared statement ... does not exist" on every later use). Unprepared, a skipped
        statement leaves nothing behind. The pipelined statements run once per run start, not per step.
        """
        with translated(**context):
            with self.pool.connection() as conn:
                with guard(conn, self.timeouts.deadline):
                    cursors = []
                    error: psycopg.Error | None = None
                    # An error must not escape the `pipeline()` block itself: psycopg would log a warning ("error
                    # ignored terminating ...") while it syncs. The first error wins; the results of the statements
                    # after it only say "pipeline aborted".
                    try:
                        with conn.pipeline():
                            for name, params in calls:
                                cur = conn.cursor(row_factory=dict_row)
                                try:
                                    cur.execute(self.queries[name], params, prepare=False)
                                except psycopg.Error as exc:
                                    error = exc
                                    break
                                cursors.append(cur)
                    except psycopg.Error as exc:
                        error = error or exc
                    if error is not None:
                        raise error
                    # Reading only after the block has synced: fetching inside it would add a flush round trip.
                    return [cur.fetchall() for cur in cursors]

    def snapshot(self, calls: Sequence[tuple[str, Params]], **context: Any) -> list[list[Row]]:
        """Runs read statements in one REPEATABLE READ transaction, so they all see one consistent snapshot."""
        with translated(**context):
            with self.pool.connection() as conn:
                with guard(conn, self.timeouts.deadline):  # around the transaction: BEGIN and COMMIT are waits too
                    with conn.transaction():
                        conn.execute(self.queries["repeatable_read"])
                        results = []
                        for name, params in calls:
                            with conn.cursor(row_factory=dict_row) as cur:
                                cur.execute(self.queries[name], params)
                                results.append(cur.fetchall())
                    return results
