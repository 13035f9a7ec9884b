"""Diagnostic: the floor's INSERT with a `pg_notify` in the same statement, as Tidebase's step statement has.

PostgreSQL serialises the commits of all transactions that sent a notification, server-wide (they take one
heavyweight lock on "database 0" from just before commit until the commit, WAL flush included, is done), so
concurrent writers that notify lose group commit. Used only in the concurrent-workers measurement, to show that
bound apart from everything else Tidebase does.
"""

from __future__ import annotations

import sys

from _common import main
from run_floor import Floor, versions


class FloorNotify(Floor):
    insert = "INSERT INTO bench_floor (doc) SELECT %s FROM pg_notify('bench_floor', 'x')"


if __name__ == "__main__":
    sys.exit(main(FloorNotify, versions))
