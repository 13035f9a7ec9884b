"""Retention (`tide.gc`, `tidebase gc`, the reconciler's periodic pass): whole finished run trees older than the
cutoff go with every row that belongs to them; live runs, young runs and trees something still needs stay; batches
never block a writer of another run, and concurrent passes delete each tree once."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

import tidebase
from fix_probe import wait_for_lock_waiters
from tidebase import ConfigurationError, InvalidArgument, Reconciler, RetentionResult, Settings, Tidebase
from tidebase.aio import AsyncTidebase
from tidebase.cli.main import main

RETENTION_SQL = (Path(__file__).resolve().parent.parent / "src" / "tidebase" / "sql" / "functions"
                 / "93_retention.sql").read_text("utf-8")
Conn = psycopg.Connection[tuple[Any, ...]]


def family(run: Any, input: Any) -> Any:
    """A root with a step, state and one child run."""
    run.step("plan", lambda: {"plan": input})
    run.state.set({"progress": 1})
    return run.child("kid", lambda r, i: r.step("work", lambda: "done"), name="kid")


def single(run: Any, input: Any) -> Any:
    return run.step("only", lambda: 1)


def failing(run: Any, input: Any) -> Any:
    run.step("before", lambda: 1)
    raise RuntimeError("boom")


def make(tide: Tidebase, run_id: str, workflow: Callable[..., Any] = family) -> None:
    with contextlib.suppress(RuntimeError):  # the failing workflow's error: the run is failed, as wanted
        tide.run("wf", workflow, run_id=run_id, input=run_id)


def tree_of(db: Conn, root: str) -> list[str]:
    rows = db.execute("WITH RECURSIVE t AS (SELECT id FROM tidebase.runs WHERE id = %s UNION ALL "
                      "SELECT r.id FROM tidebase.runs r JOIN t ON r.parent_id = t.id) SELECT id FROM t",
                      (root,)).fetchall()
    return [r[0] for r in rows]


def age(db: Conn, ids: list[str], days: float = 40) -> None:
    """Moves the runs' creation and finish times `days` into the past."""
    db.execute("UPDATE tidebase.runs SET created_at = created_at - %(d)s * interval '1 day', "
               "updated_at = updated_at - %(d)s * interval '1 day', "
               "completed_at = completed_at - %(d)s * interval '1 day' WHERE id = ANY(%(ids)s)",
               {"d": days, "ids": ids})


def age_trees(db: Conn, roots: list[str], days: float = 40) -> None:
    age(db, [i for root in roots for i in tree_of(db, root)], days)


def existing(db: Conn) -> set[str]:
    return {r[0] for r in db.execute("SELECT id FROM tidebase.runs").fetchall()}


def run_id_tables(db: Conn) -> list[str]:
    """Every table of the schema with a run_id column."""
    return [r[0] for r in db.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'tidebase' "
        "AND column_name = 'run_id' ORDER BY table_name").fetchall()]


def rows_of(db: Conn, ids: set[str]) -> dict[str, int]:
    """Rows of the runs `ids` in every table that has a run_id (and edges either way), except the schedule's
    history, which keeps naming a deleted run by design."""
    def count(query: sql.Composable, params: dict[str, Any]) -> int:
        row = db.execute(query, params).fetchone()
        assert row is not None
        return int(row[0])

    wanted = {"i": list(ids)}
    counts = {table: count(sql.SQL("SELECT count(*) FROM tidebase.{} WHERE run_id = ANY(%(i)s)").format(
        sql.Identifier(table)), wanted) for table in run_id_tables(db) if table != "schedule_fires"}
    counts["run_edges"] = count(sql.SQL("SELECT count(*) FROM tidebase.run_edges WHERE parent_run_id = ANY(%(i)s) "
                                        "OR child_run_id = ANY(%(i)s)"), wanted)
    counts["runs"] = count(sql.SQL("SELECT count(*) FROM tidebase.runs WHERE id = ANY(%(i)s)"), wanted)
    return counts


def test_every_table_of_a_run_is_emptied_by_retention_or_its_cascade(db: Conn) -> None:
    """Each table with a run_id either is deleted from explicitly by tidebase.gc_batch or cascades from runs
    (schedule_fires, the schedule's history, is kept on purpose); a table added later cannot be forgotten."""
    cascading = {r[0] for r in db.execute(
        "SELECT c.conrelid::regclass::text FROM pg_constraint c WHERE c.contype = 'f' "
        "AND c.confrelid = 'tidebase.runs'::regclass AND c.confdeltype = 'c'").fetchall()}
    for table in run_id_tables(db):
        explicit = re.search(rf"DELETE FROM tidebase\.{table}\b", RETENTION_SQL)
        assert explicit or f"tidebase.{table}" in cascading or table == "schedule_fires", table


def test_old_finished_trees_go_whole_and_everything_else_stays(tide: Tidebase, db: Conn) -> None:
    """Completed, failed and cancelled roots older than the cutoff go with their children and every row of theirs;
    young runs, live runs of every live status, a root whose child is live or finished recently stay."""
    make(tide, "done")
    make(tide, "broke", failing)
    tide.enqueue("wf", run_id="stopped")
    tide.runs.cancel("stopped", reason="test")
    make(tide, "young")
    old = ["done", "broke", "stopped"]
    age_trees(db, old)
    live = {}
    for status in ("pending", "queued", "running", "waiting", "manual_review"):
        make(tide, f"live-{status}", single)
        live[f"live-{status}"] = status
    make(tide, "live-kid")
    make(tide, "young-kid")
    age_trees(db, [*live, "live-kid", "young-kid"])
    for run_id, status in live.items():
        db.execute("UPDATE tidebase.runs SET status = %s WHERE id = %s", (status, run_id))
    db.execute("UPDATE tidebase.runs SET status = 'running' WHERE parent_id = 'live-kid'")
    db.execute("UPDATE tidebase.runs SET completed_at = tidebase.now(), updated_at = tidebase.now() "
               "WHERE parent_id = 'young-kid'")
    # Rows of a delivered webhook of an old run go with it (the outbox has no foreign key to cascade).
    db.execute("INSERT INTO tidebase.outbox (run_id, kind, event_type, url, body, status) "
               "VALUES ('done', 'channel', 'run.completed', 'http://example.invalid', '{}', 'delivered')")
    db.execute("INSERT INTO tidebase.outbox_attempts (outbox_id, attempt, started_at, duration_ms, ok) "
               "SELECT id, 1, now(), 5, true FROM tidebase.outbox WHERE run_id = 'done'")
    gone = {i for root in old for i in tree_of(db, root)}
    before = existing(db)

    result = tide.gc("30d")

    assert isinstance(result, RetentionResult) and type(result).__module__ == "tidebase"
    assert (result.trees, result.runs, result.dry_run) == (3, len(gone), False)
    assert existing(db) == before - gone
    assert set(rows_of(db, gone).values()) == {0}
    assert result.rows["runs"] == len(gone) and result.rows["outbox"] == 1 and result.rows["outbox_attempts"] == 1
    assert result.rows["events"] > 0 and result.rows["steps"] > 0 and result.rows["state_versions"] > 0
    assert result.kept == 2 and result.complete  # live-kid and young-kid: live roots are never examined
    assert result.complete and result.cursor is None
    assert "young" in existing(db) and {"live-kid", "young-kid"} <= existing(db)
    assert db.execute("SELECT count(*) FROM tidebase.outbox_attempts").fetchone() == (0,)


def test_a_status_filter_keeps_the_other_finished_roots(tide: Tidebase, db: Conn) -> None:
    """`statuses` picks root statuses; a live status is refused before anything is deleted."""
    make(tide, "done")
    make(tide, "broke", failing)
    age_trees(db, ["done", "broke"])
    with pytest.raises(InvalidArgument, match="finished"):
        tide.gc("30d", statuses=["failed", "running"])
    assert tide.gc("30d", statuses="failed").trees == 1
    assert "done" in existing(db) and "broke" not in existing(db)


def test_trees_still_needed_stay_until_nothing_needs_them(tide: Tidebase, db: Conn) -> None:
    """A pending gate, a pending webhook delivery or a schedule's newest fire keep a finished tree; once the gate is
    resolved, the delivery made, a newer fire recorded, it goes."""
    for run_id in ("gated", "delivering", "scheduled", "older-fire"):
        make(tide, run_id)
    age_trees(db, ["gated", "delivering", "scheduled", "older-fire"])
    kid = tree_of(db, "gated")[1]
    db.execute("INSERT INTO tidebase.gates (run_id, name, id, token_hash) VALUES (%s, 'ok?', 'gate_x', 'h')", (kid,))
    db.execute("INSERT INTO tidebase.outbox (run_id, kind, event_type, url, body) "
               "VALUES ('delivering', 'channel', 'run.completed', 'http://example.invalid', '{}')")
    db.execute("INSERT INTO tidebase.schedules (name, cron, workflow, input_hash, next_fire_at, last_fire_at) "
               "VALUES ('nightly', '0 0 * * *', 'wf', 'h', now() + interval '1 day', now() - interval '1 day')")
    db.execute("INSERT INTO tidebase.schedule_fires (schedule, fire_at, status, run_id) VALUES "
               "('nightly', now() - interval '2 day', 'enqueued', 'older-fire'), "
               "('nightly', now() - interval '1 day', 'enqueued', 'scheduled')")

    first = tide.gc("30d")
    assert first.trees == 1 and first.kept == 3
    assert {"gated", "delivering", "scheduled"} <= existing(db) and "older-fire" not in existing(db)

    db.execute("UPDATE tidebase.gates SET status = 'approved', decision = 'approved'")
    db.execute("UPDATE tidebase.outbox SET status = 'delivered'")
    db.execute("INSERT INTO tidebase.schedule_fires (schedule, fire_at, status, run_id) VALUES "
               "('nightly', now(), 'enqueued', 'a-newer-run')")
    assert tide.gc("30d").trees == 3
    assert not {"gated", "delivering", "scheduled"} & existing(db)
    # The schedule's history stays (it names runs by id).
    assert db.execute("SELECT count(*) FROM tidebase.schedule_fires").fetchone() == (3,)


def test_a_fork_goes_before_its_source(tide: Tidebase, db: Conn) -> None:
    """A fork replays its source's children through copied edges and names the source in its steps: the source is
    kept while the fork exists, and goes on the pass after the fork's."""
    make(tide, "source")
    tide.runs.fork("source", "plan", new_run_id="fork")
    tide.run("wf", family, run_id="fork")
    age_trees(db, ["source", "fork"])
    first = tide.gc("30d")
    assert first.trees == 1 and "fork" not in existing(db) and "source" in existing(db)
    second = tide.gc("30d")
    assert second.trees == 1 and not existing(db)


def test_a_child_never_goes_before_its_root(tide: Tidebase, db: Conn) -> None:
    """An old finished child of a root that is not old is kept with its root, whatever its own age."""
    make(tide, "root")
    age(db, tree_of(db, "root")[1:])
    assert tide.gc("30d").runs == 0
    assert set(tree_of(db, "root")) == existing(db) and len(existing(db)) == 2


def test_a_dry_run_counts_what_would_go_and_deletes_nothing(tide: Tidebase, db: Conn) -> None:
    """The dry run's counts are the real pass's; nothing is deleted by it."""
    for n in range(3):
        make(tide, f"r{n}")
    age_trees(db, ["r0", "r1", "r2"])
    before = existing(db)
    dry = tide.gc("30d", dry_run=True, batch=2)
    assert existing(db) == before and dry.dry_run and dry.batches == 2
    real = tide.gc("30d")
    assert (dry.trees, dry.runs) == (real.trees, real.runs) == (3, 6)
    assert {k: v for k, v in dry.rows.items() if v} == {k: v for k, v in real.rows.items() if v}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"older_than": "banana"}, "duration"), ({"older_than": -5}, "0 or more"), ({"older_than": "30d", "batch": 0},
                                                                                "batch"),
    ({"older_than": "30d", "statuses": []}, "at least one"), ({"older_than": "30d", "statuses": "queued"}, "finished"),
])
def test_bad_arguments_are_refused_before_anything_is_sent(tide: Tidebase, db: Conn, kwargs: dict[str, Any],
                                                           match: str) -> None:
    make(tide, "r")
    age_trees(db, ["r"])
    with pytest.raises(InvalidArgument, match=match):
        tide.gc(**kwargs)
    assert existing(db) == set(tree_of(db, "r"))


def test_a_bounded_pass_leaves_whole_trees_and_continues_from_its_cursor(tide: Tidebase, db: Conn) -> None:
    """Batches commit one by one: a pass stopped after some batches (as an interrupted one) leaves every remaining
    tree whole, and its cursor resumes where it stopped."""
    from tidebase.ops.retention import collect_garbage

    roots = [f"r{n}" for n in range(5)]
    for root in roots:
        make(tide, root)
    age_trees(db, roots)
    part = collect_garbage(tide.engine, older_than="30d", batch=2, max_batches=1)
    assert (part.trees, part.complete) == (2, False) and part.cursor is not None
    for root in existing(db) & set(roots):
        assert len(tree_of(db, root)) == 2
    assert db.execute("SELECT count(*) FROM tidebase.runs WHERE parent_id IS NULL AND id LIKE 'r%'").fetchone() == (3,)
    rest = collect_garbage(tide.engine, older_than="30d", batch=2, cursor=part.cursor)
    assert rest.trees == 3 and rest.complete and not existing(db)


def test_concurrent_passes_delete_each_tree_once(dsn: str, db: Conn) -> None:
    """Four threads, each with its own pool, collecting at once: every tree is deleted by exactly one of them, and
    none raises (no deadlock, no serialization error)."""
    seeder = Tidebase(dsn)
    roots = [f"r{n:03d}" for n in range(60)]
    for root in roots:
        make(seeder, root)
    seeder.close()
    age_trees(db, roots)
    results: list[RetentionResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def collect() -> None:
        tide = Tidebase(dsn)
        try:
            barrier.wait()
            results.append(tide.gc("30d", batch=5))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            tide.close()

    threads = [threading.Thread(target=collect) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sum(r.trees for r in results) == 60 and sum(r.runs for r in results) == 120
    assert sum(r.rows.get("runs", 0) for r in results) == 120 and not existing(db)


def _waiting_for_a_lock(observer: Conn, application: str) -> list[tuple[Any, ...]]:
    return observer.execute(
        "SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity WHERE application_name = %s "
        "AND wait_event_type = 'Lock'", (application,)).fetchall()


def test_a_batch_never_blocks_a_writer_of_another_run(dsn: str, db: Conn, observer: Conn) -> None:
    """With a retention batch's transaction held open (its rows locked and deleted, not committed), a live run's
    steps, state writes and completion go through without a single lock wait; a writer of a run the batch holds
    waits for that batch alone (pg_blocking_pids names the batch's session), and goes on once it commits."""
    seeder = Tidebase(dsn)
    roots = [f"old{n}" for n in range(20)]
    for root in roots:
        make(seeder, root)
    make(seeder, "old-failed", failing)
    seeder.close()
    age_trees(db, [*roots, "old-failed"])
    hot = Tidebase(conninfo.make_conninfo(dsn, application_name="hot-path"))
    hot.run("wf", single, run_id="warm")  # the pool is open and the schema checked before the batch starts

    with psycopg.connect(dsn, application_name="gc-batch") as gc:  # one transaction, not committed until the end
        row = gc.execute("SELECT runs FROM tidebase.gc_batch(tidebase.now() - interval '30 days', "
                         "'{completed,failed,cancelled}', '-infinity', '', 1000, false)").fetchone()
        assert row == (41,)
        gc_pid = gc.info.backend_pid
        done = threading.Event()

        def live(run: Any, input: Any) -> Any:
            for n in range(20):
                run.step(f"s{n}", lambda n=n: n)
                run.state.set({"n": n})
            return "ok"

        # The batch commits only after this join: a live run that waited for any lock the batch holds could not
        # finish before it, so finishing is the proof that it never waited.
        worker = threading.Thread(target=lambda: (hot.run("wf", live, run_id="live"), done.set()))
        worker.start()
        worker.join(30)
        assert done.is_set(), "the live run did not finish while the batch held its locks"

        # A writer of a run the batch holds (re-invoking the old failed run) waits for the batch, and only it.
        second: list[Any] = []
        blocked = threading.Thread(target=lambda: second.append(hot.run("wf", single, run_id="old-failed")))
        blocked.start()
        wait_for_lock_waiters(observer, "hot-path", 1)
        seen = _waiting_for_a_lock(observer, "hot-path")
        assert seen and seen[0][1] == [gc_pid]
        gc.commit()
    blocked.join(30)
    assert second == [1]  # the deleted run's id was free again: a new run, executed
    hot.close()


def test_the_cli_collects_and_refuses_a_bad_age(tide: Tidebase, db: Conn, dsn: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`tidebase gc --older-than 30d` prints what it deleted; `--dry-run --json` prints the record and deletes
    nothing; `--older-than banana` exits 2 with the reason and deletes nothing."""
    make(tide, "r")
    age_trees(db, ["r"])
    assert main(["gc", "--dsn", dsn, "--older-than", "banana"]) == 2
    assert "older_than must be a duration" in capsys.readouterr().err
    assert main(["gc", "--dsn", dsn, "--older-than", "30d", "--status", "completed", "--dry-run", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"dry_run": true' in out and '"runs": 2' in out and existing(db)
    assert main(["gc", "--dsn", dsn, "--older-than", "30d", "--batch", "10"]) == 0
    out = capsys.readouterr().out
    assert "deleted 2 run(s) in 1 tree(s)" in out and not existing(db)


def test_periodic_retention_runs_in_the_reconciler_tick_when_set(dsn: str, db: Conn) -> None:
    """TIDEBASE_RETENTION=30d makes each reconciler tick delete old trees (a bounded number of batches); unset, a
    tick deletes nothing; a value that is not a duration is a ConfigurationError naming the variable."""
    with pytest.raises(ConfigurationError, match="TIDEBASE_RETENTION"):
        Settings.from_env({"TIDEBASE_RETENTION": "banana"})
    assert Settings.from_env({}).retention_seconds is None
    assert Settings.from_env({"TIDEBASE_RETENTION": "30d"}).retention_seconds == 30 * 86400
    off = Tidebase(dsn, settings=Settings.from_env({}))
    for n in range(3):
        make(off, f"r{n}")
    age_trees(db, ["r0", "r1", "r2"])
    assert Reconciler(off).tick().retention is None and len(existing(db)) == 6
    off.close()
    on = Tidebase(dsn, settings=Settings.from_env({"TIDEBASE_RETENTION": "30d"}))
    reconciler = Reconciler(on, batch=1)
    first = reconciler.tick().retention
    assert first is not None and first.batches == 4 and first.trees == 3 and not existing(db)
    make(on, "young")
    later = reconciler.tick().retention
    assert later is not None and later.trees == 0 and "young" in existing(db)
    on.close()


async def test_the_asyncio_api_returns_the_same_record(atide: AsyncTidebase, dsn: str) -> None:
    """`await atide.gc(...)` is the same pass, and returns tidebase.RetentionResult."""
    result = await atide.gc("30d", dry_run=True)
    assert type(result) is tidebase.RetentionResult and result.runs == 0 and result.complete
    with pytest.raises(InvalidArgument):
        await atide.gc("soon")
