"""What a person does to a run from its page, in a real browser: time travel and diffs, fork, cancel, release or
skip a parked step. Each action is checked in the database and by the workflow it concerns moving on."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import psycopg
from playwright.sync_api import expect
from studio_proc import Studio, in_background, one, sign_in_as, wait_for

from tidebase import ManualReviewRequired, RunCancelled, Tidebase


def test_time_travel_by_version_label_and_step_and_diff(page: Any, open_server: Studio, tide: Tidebase,
                                                        shots: Path) -> None:
    """Picking a version, a label or a step shows the state as it was then; two versions show a line diff with
    the removed and added lines marked."""

    def workflow(run: Any, _: Any) -> None:
        run.state.set({"stage": "plan", "items": ["a"]})
        run.step("gather", lambda: "ok")
        run.state.patch({"stage": "draft", "items": ["a", "b"]})
        run.state.save("draft-1", reason="first draft")
        run.state.patch({"stage": "final"})

    tide.run("travel", workflow, run_id="travel-1")
    page.goto(f"{open_server.studio}/runs/travel-1")
    page.get_by_label("At version").fill("1")
    page.get_by_label("At version").press("Enter")
    expect(page.locator("#state-at h2")).to_contain_text("version 1")
    expect(page.locator("#state-at .json")).to_contain_text('"plan"')

    page.get_by_label("Label").select_option("draft-1")
    page.locator("form", has=page.get_by_label("Label")).get_by_role("button", name="Show").click()
    expect(page.locator("#state-at h2")).to_contain_text("draft-1")
    expect(page.locator("#state-at .json")).to_contain_text('"draft"')

    page.get_by_label("When step completed").fill("gather")
    page.get_by_label("When step completed").press("Enter")
    expect(page.locator("#state-at h2")).to_contain_text("version 1")

    page.goto(f"{open_server.studio}/runs/travel-1")
    page.get_by_label("Compare from version 1").check()
    page.get_by_label("Compare to version 4").check()
    page.get_by_role("button", name="Diff A → B").click()
    diff = page.locator("#state-diff table.diff")
    expect(diff.locator("tr.removed")).to_contain_text(['"stage": "plan"'])
    expect(diff.locator("tr.added")).to_contain_text(['"b"', '"stage": "final"'])
    expect(diff.locator("tr.added td.mark").first).to_have_text("+")
    page.screenshot(path=str(shots / "studio-diff.png"), full_page=True)


def test_fork_at_a_step_opens_the_fork_which_replays_up_to_it(page: Any, open_server: Studio, tide: Tidebase,
                                                              sql: psycopg.Connection[Any]) -> None:
    """Fork here creates the fork and opens it; invoking the fork replays the steps up to the fork point and
    executes the rest."""
    executed: list[str] = []

    def workflow(run: Any, _: Any) -> list[str]:
        return [run.step(k, lambda k=k: executed.append(k) or k) for k in ("a", "b", "c")]

    tide.run("forkable", workflow, run_id="fork-src")
    page.goto(f"{open_server.studio}/runs/fork-src")
    page.get_by_role("button", name="Fork this run at step b").click()
    expect(page).not_to_have_url(re.compile(r"/runs/fork-src$"))
    fork_id = page.locator("#run-root").get_attribute("data-run-id")
    assert fork_id and fork_id != "fork-src"
    expect(page.locator('[data-part="header"]')).to_contain_text("Forked from")
    assert one(sql, "SELECT edge_type FROM tidebase.run_edges WHERE parent_run_id = 'fork-src' "
                    "AND child_run_id = %s", fork_id) == "fork"
    executed.clear()
    assert tide.run("forkable", workflow, run_id=fork_id) == ["a", "b", "c"]
    assert executed == ["c"]
    page.reload()
    expect(page.locator('li.step[data-step="b"] .tag.replayed')).to_be_visible()
    expect(page.locator('li.step[data-step="c"] .tag.executed')).to_be_visible()


def test_cancel_stops_a_waiting_workflow(page: Any, open_server: Studio, tide: Tidebase,
                                         sql: psycopg.Connection[Any]) -> None:
    """Cancel (with a reason) cancels the run in the database under the person's name, and the workflow waiting
    in another process stops with RunCancelled."""
    sign_in_as(page, open_server, "dana")

    def workflow(run: Any, _: Any) -> Any:
        run.step("prepare", lambda: 1)
        return run.gate("go", prompt="Go?")

    bg = in_background(lambda: tide.run("cancellable", workflow, run_id="cancel-me"))
    wait_for(lambda: one(sql, "SELECT count(*) FROM tidebase.gates WHERE run_id = 'cancel-me'"))
    page.goto(f"{open_server.studio}/runs/cancel-me")
    page.get_by_text("Cancel run…").click()
    page.get_by_label("Reason (recorded with your name)").fill("wrong customer")
    page.get_by_role("button", name="Cancel this run").click()
    expect(page.locator('[data-part="header"] .status-line .badge')).to_have_attribute("data-status", "cancelled")
    expect(page.locator('[data-part="header"]')).to_contain_text("by dana: wrong customer")
    assert sql.execute("SELECT status, cancel_actor, cancel_reason FROM tidebase.runs WHERE id = 'cancel-me'"
                       ).fetchone() == ("cancelled", "dana", "wrong customer")
    assert isinstance(bg.error(), RunCancelled)


def _park(tide: Tidebase, run_id: str, effect: list[str]) -> Any:
    """Runs a workflow whose side-effecting step fails once, which parks the run for manual review."""
    attempts = [0]

    def charge() -> dict[str, str]:
        attempts[0] += 1
        effect.append("charge")
        if attempts[0] == 1:
            raise TimeoutError("gateway timed out: charged or not?")
        return {"charge": "ch_again"}

    def workflow(run: Any, _: Any) -> Any:
        run.step("quote", lambda: 42)
        return run.step("charge", charge, side_effects=["payments.charge"])

    with contextlib.suppress(TimeoutError):
        tide.run("payments", workflow, run_id=run_id)
    return workflow


def test_release_lets_the_parked_step_run_again(page: Any, open_server: Studio, tide: Tidebase,
                                                sql: psycopg.Connection[Any]) -> None:
    """Release on a step parked for manual review lets it run again: the run is resumable, and resuming it runs the
    step and completes."""
    effect: list[str] = []
    workflow = _park(tide, "park-release", effect)
    with contextlib.suppress(ManualReviewRequired):
        tide.run("payments", workflow, run_id="park-release")
    page.goto(f"{open_server.studio}/runs/park-release")
    step = page.locator('li.step[data-step="charge"]')
    expect(step.locator(".badge").first).to_have_attribute("data-status", "manual_review")
    step.get_by_role("button", name="Release: run it again").click()
    expect(page.locator('li.step[data-step="charge"] .badge').first).not_to_have_attribute(
        "data-status", "manual_review")
    assert one(sql, "SELECT status FROM tidebase.runs WHERE id = 'park-release'") == "pending"
    assert tide.run("payments", workflow, run_id="park-release") == {"charge": "ch_again"}
    assert effect == ["charge", "charge"]


def test_skip_completes_the_parked_step_with_the_given_output(page: Any, open_server: Studio, tide: Tidebase,
                                                              sql: psycopg.Connection[Any]) -> None:
    """Skip completes the parked step with the JSON the person typed; the resumed workflow gets that output and the
    effect does not fire again."""
    effect: list[str] = []
    workflow = _park(tide, "park-skip", effect)
    page.goto(f"{open_server.studio}/runs/park-skip")
    step = page.locator('li.step[data-step="charge"]')
    step.get_by_label("Skip with this output (JSON)").fill('{"charge": "ch_verified"}')
    step.get_by_role("button", name="Skip step").click()
    expect(page.locator('li.step[data-step="charge"] .badge').first).to_have_attribute("data-status", "completed")
    assert one(sql, "SELECT output FROM tidebase.steps WHERE run_id = 'park-skip' AND key = 'charge'") == {
        "charge": "ch_verified"}
    assert tide.run("payments", workflow, run_id="park-skip") == {"charge": "ch_verified"}
    assert effect == ["charge"]


def test_invalid_skip_output_is_refused_on_an_error_page(page: Any, open_server: Studio, tide: Tidebase) -> None:
    """Output that is not JSON is refused with a readable error page, and nothing changes."""
    _park(tide, "park-bad", [])
    page.goto(f"{open_server.studio}/runs/park-bad")
    step = page.locator('li.step[data-step="charge"]')
    step.get_by_label("Skip with this output (JSON)").fill("{not json")
    step.get_by_role("button", name="Skip step").click()
    expect(page.get_by_role("alert")).to_contain_text("must be JSON")
    assert tide.runs.get("park-bad").status == "manual_review"


