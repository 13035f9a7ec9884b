"""The runs list and a run's page, in a real browser against a real `tidebase serve`: what a person sees, and that
writes made by another process show up on an open page within 2 s, without a reload."""

from __future__ import annotations

import contextlib
import re
import threading
from pathlib import Path
from typing import Any

import psycopg
from playwright.sync_api import expect
from studio_proc import LIVE_MS, Studio, in_background, one, wait_for

from tidebase import Child, Tidebase


def test_runs_list_is_newest_first_filtered_paginated_and_counted(page: Any, open_server: Studio, tide: Tidebase,
                                                                  sql: psycopg.Connection[Any], shots: Path) -> None:
    """The list shows runs newest first in pages of 20 (keyset: no run twice), filters by workflow and status,
    finds a run by id, and its counts by status equal the database's."""
    ids = [tide.enqueue("list-wf", run_id=f"list-{i:02d}", queue="lists").id for i in range(23)]
    tide.run("list-wf", lambda run, _: run.step("one", lambda: 1), run_id="list-done")
    page.goto(f"{open_server.studio}/?workflow=list-wf&limit=20")
    first = page.locator("#runs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.run)")
    expected = [r[0] for r in sql.execute("SELECT id FROM tidebase.runs WHERE workflow = 'list-wf' "
                                          "ORDER BY created_at DESC, id DESC").fetchall()]
    assert first == expected[:20]
    page.get_by_role("link", name="Older »").click()
    second = page.locator("#runs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.run)")
    assert second == expected[20:] and not set(first) & set(second)
    assert sorted(first + second) == sorted([*ids, "list-done"])

    page.goto(f"{open_server.studio}/?workflow=list-wf&status=completed")
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    expect(page.locator("#runs tbody tr").first).to_have_attribute("data-run", "list-done")
    counts = dict(sql.execute("SELECT status, count(*) FROM tidebase.runs GROUP BY status").fetchall())
    for status, n in counts.items():
        expect(page.locator(f'[data-count="{status}"]')).to_have_text(f"{n:,}")
    expect(page.locator('[data-count="all"]')).to_have_text(f"{sum(counts.values()):,}")

    page.get_by_label("Find a run by id").fill("list-07")
    page.get_by_role("button", name="Open").click()
    expect(page).to_have_url(re.compile(r"/studio/runs/list-07$"))
    page.goto(f"{open_server.studio}/?q=no-such-run")
    expect(page.get_by_role("alert")).to_contain_text("No run has the id no-such-run")
    page.goto(f"{open_server.studio}/")
    page.screenshot(path=str(shots / "studio-runs.png"))


def test_runs_list_rows_follow_status_and_step_live(page: Any, open_server: Studio, tide: Tidebase,
                                                    sql: psycopg.Connection[Any]) -> None:
    """A run that moves on in another process (a new step, then completion) updates its row's current step and
    status within 2 s, with no reload."""
    go_on = threading.Event()

    def workflow(run: Any, _: Any) -> str:
        run.step("first", lambda: 1)
        go_on.wait(30)
        run.step("second", lambda: 2)
        return "done"

    bg = in_background(lambda: tide.run("live-list", workflow, run_id="live-row"))
    wait_for(lambda: one(sql, "SELECT count(*) FROM tidebase.steps WHERE run_id = 'live-row'"))
    page.goto(f"{open_server.studio}/?workflow=live-list")
    row = page.locator('tr[data-run="live-row"]')
    expect(row.locator(".badge")).to_have_attribute("data-status", "running")
    expect(row.locator('[data-field="step"]')).to_contain_text("first")
    go_on.set()
    assert bg.join() == "done"
    expect(row.locator('[data-field="step"]')).to_contain_text("second", timeout=LIVE_MS)
    expect(row.locator(".badge")).to_have_attribute("data-status", "completed", timeout=LIVE_MS)


def test_run_page_shows_header_timeline_usage_and_links(page: Any, open_server: Studio, tide: Tidebase,
                                                        shots: Path) -> None:
    """A run's page shows its header (workflow, status, attempt, times, input, parent and children as links), and
    a timeline with each step's status, attempts, input hash, resume contract, output (folded), error with
    traceback, and whether the current attempt replayed or executed it; usage per step shows what replay saved."""
    crash = [True]

    def child(run: Any, data: Any) -> Any:
        return run.step("look", lambda: {"found": data["q"]})

    def parent(run: Any, data: Any) -> Any:
        def plan() -> dict[str, Any]:
            run.usage.record(kind="llm", provider="acme", model="m-1", input_tokens=100, output_tokens=20,
                             cost_usd=0.25)
            return {"queries": ["tides", "moon"]}

        run.step("plan", plan, input=data)
        found = run.child("helper", child, name="lookup", input={"q": "tides"})

        def send() -> str:
            if crash[0]:
                crash[0] = False
                raise ConnectionError("smtp went away")
            return "sent"

        run.step("notify", send, side_effects=["email.send"], idempotency_key="notify:1", retries=0)
        return found

    with contextlib.suppress(ConnectionError):
        tide.run("research", parent, run_id="page-run", input={"topic": "tides"})
    assert tide.run("research", parent, run_id="page-run") == {"found": "tides"}
    page.goto(f"{open_server.studio}/runs/page-run")
    header = page.locator('[data-part="header"]')
    expect(header.locator("h1")).to_contain_text("research")
    expect(header.locator(".status-line .badge")).to_have_attribute("data-status", "completed")
    expect(header).to_contain_text("attempt 2")
    expect(header).to_contain_text('"topic"')
    child_link = header.locator(".children a")
    expect(child_link).to_have_count(1)

    plan = page.locator('li.step[data-step="plan"]')
    expect(plan.locator(".tag.replayed")).to_have_text("replayed")
    plan_hash = tide.runs.get("page-run").steps[0].input_hash
    expect(plan.locator(f'[title="input hash {plan_hash}"]')).to_be_visible()
    output = plan.locator("details.block")
    expect(output.locator(".json")).to_be_hidden()
    output.locator(":scope > summary").click()
    expect(output.locator(".json")).to_contain_text('"tides"')
    notify = page.locator('li.step[data-step="notify"]')
    expect(notify.locator(".tag.executed")).to_have_text("executed")
    expect(notify).to_contain_text("attempt 2")
    expect(notify.locator(".contract")).to_contain_text("email.send")
    expect(notify.locator(".contract")).to_contain_text("notify:1")

    usage = page.locator('[data-part="usage"]')
    expect(usage.locator("tbody tr").first).to_contain_text("plan")
    expect(usage.locator("tfoot")).to_contain_text("$0.2500")  # spent once ...
    expect(usage.locator("tfoot td.saved").last).to_have_text("$0.2500")  # ... and saved once by the replay
    page.screenshot(path=str(shots / "studio-run.png"), full_page=True)

    child_link.click()
    expect(page.locator('[data-part="header"]')).to_contain_text("Parent")
    page.locator('[data-part="header"] dd a').first.click()
    expect(page).to_have_url(re.compile(r"/studio/runs/page-run$"))

    def failing(run: Any, _: Any) -> None:
        run.step("explode", lambda: 1 / 0)

    with contextlib.suppress(ZeroDivisionError):
        tide.run("breaker", failing, run_id="page-failed")
    page.goto(f"{open_server.studio}/runs/page-failed")
    error = page.locator('li.step[data-step="explode"] .error-block')
    expect(error.locator("summary")).to_contain_text("ZeroDivisionError")
    expect(error.locator(".trace")).to_contain_text("Traceback")
    expect(page.locator('[data-part="header"] .error-block')).to_contain_text("division by zero")


def test_event_log_and_live_state_stream_from_another_process(page: Any, open_server: Studio, tide: Tidebase,
                                                               sql: psycopg.Connection[Any], shots: Path) -> None:
    """The event log streams over SSE and the live state follows run.state.set/patch, both within 2 s of a write
    made by another process, with no reload; the step timeline follows too."""
    steps = [threading.Event() for _ in range(3)]

    def workflow(run: Any, _: Any) -> str:
        run.state.set({"phase": "reading", "done": 0})
        steps[0].wait(30)
        run.state.patch({"phase": "writing", "done": 1})
        steps[1].wait(30)
        run.step("write", lambda: "draft")
        steps[2].wait(30)
        return "ok"

    bg = in_background(lambda: tide.run("livestate", workflow, run_id="live-state"))
    wait_for(lambda: one(sql, "SELECT count(*) FROM tidebase.events WHERE run_id = 'live-state' "
                            "AND type = 'state.updated'"))
    page.goto(f"{open_server.studio}/runs/live-state")
    expect(page.locator("#stream-status")).to_have_attribute("data-state", "live")
    state = page.locator('[data-part="state"] [data-field="state-value"]')
    expect(state).to_contain_text('"reading"')
    steps[0].set()
    expect(state).to_contain_text('"writing"', timeout=LIVE_MS)
    expect(page.locator("#event-log li").last).to_contain_text("state.updated", timeout=LIVE_MS)
    steps[1].set()
    expect(page.locator('li.step[data-step="write"]')).to_be_visible(timeout=LIVE_MS)
    expect(page.locator("#event-log li").last).to_contain_text("step.completed", timeout=LIVE_MS)
    steps[2].set()
    assert bg.join() == "ok"
    expect(page.locator('[data-part="header"] .status-line .badge')).to_have_attribute(
        "data-status", "completed", timeout=LIVE_MS)
    seqs = page.locator("#event-log li").evaluate_all("items => items.map(i => Number(i.dataset.seq))")
    assert seqs == list(range(1, len(seqs) + 1))  # every event once, in order
    page.screenshot(path=str(shots / "studio-live.png"), full_page=True)


def test_phone_width_keeps_the_run_page_usable(browser: Any, open_server: Studio, tide: Tidebase,
                                               shots: Path) -> None:
    """At phone width the navigation, the header and the timeline stay readable without sideways scrolling."""
    tide.run("phone", lambda run, _: run.step("s", lambda: {"k": "v"}), run_id="phone-run",
             input={"a": 1})
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    page = context.new_page()
    page.goto(f"{open_server.studio}/runs/phone-run")
    expect(page.get_by_role("navigation", name="Studio").get_by_role("link", name="Gates")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(shots / "studio-phone.png"), full_page=True)
    page.keyboard.press("Tab")
    expect(page.locator(".skip")).to_be_focused()
    context.close()


def test_children_fan_out(page: Any, open_server: Studio, tide: Tidebase) -> None:
    """Fan-out children are listed on the parent with their status, each a link to the child run."""

    def member(run: Any, data: Any) -> Any:
        return run.step("quote", data["city"].upper)

    def parent(run: Any, _: Any) -> Any:
        return run.fanout("cities", [Child(name=c, workflow=member, input={"city": c}) for c in ("lis", "oslo")])

    tide.run("fan", parent, run_id="fan-parent")
    page.goto(f"{open_server.studio}/runs/fan-parent")
    links = page.locator('[data-part="header"] .children li')
    expect(links).to_have_count(2)
    expect(links.first.locator(".badge")).to_have_attribute("data-status", "completed")
