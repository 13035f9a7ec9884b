"""Queues, schedules, usage, and a run's recoveries and webhook deliveries, in a real browser: what a person sees
matches the database, pausing a schedule takes effect, and no secret or token ever reaches a page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import expect
from studio_proc import Receiver, Studio, one, start, stop, wait_for

from tidebase import Tidebase

SERVER_SECRET = "whsec-server-4b1d"


@pytest.fixture(scope="module")
def hooked_server(module_dsn: str, studio_home: Path) -> Iterator[Studio]:
    """A server whose webhook dispatcher signs with a secret (which pages must never show)."""
    server = start(module_dsn, studio_home, env={"TIDEBASE_WEBHOOK_SECRET": SERVER_SECRET})
    yield server
    log = stop(server)
    assert SERVER_SECRET not in log


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_queues_show_depth_running_caps_and_rate(page: Any, hooked_server: Studio, tide: Tidebase,
                                                 shots: Path) -> None:
    """Each queue shows its depth, running count, concurrency cap and rate, as the database has them."""
    tide.queues.configure("emails", concurrency=3, rate_limit=30, rate_window=60)
    for i in range(4):
        tide.enqueue("send-email", queue="emails", input={"n": i})
    tide.enqueue("crunch", queue="batch")
    claimed = httpx.post(f"{hooked_server.url}/queues/claim", json={"queues": ["emails"], "leaseOwner": "w-1",
                                                                    "limit": 1}).json()
    assert len(claimed["runs"]) == 1
    page.goto(f"{hooked_server.studio}/queues")
    emails = page.locator('tr[data-queue="emails"]')
    expect(emails.locator('[data-field="queued"]')).to_have_text("3")
    expect(emails.locator('[data-field="running"]')).to_have_text("1")
    expect(emails.locator('[data-field="concurrency"]')).to_have_text("3")
    expect(emails.locator('[data-field="rate"]')).to_have_text("30 / min")
    batch = page.locator('tr[data-queue="batch"]')
    expect(batch.locator('[data-field="queued"]')).to_have_text("1")
    expect(batch.locator('[data-field="concurrency"]')).to_have_text("unlimited")
    page.screenshot(path=str(shots / "studio-queues.png"), full_page=True)


def test_schedules_show_next_and_last_fire_and_pause(page: Any, hooked_server: Studio, tide: Tidebase,
                                                     sql: psycopg.Connection[Any], shots: Path) -> None:
    """A schedule shows its next fire; Pause stops it (enabled false in the database), Resume starts it again from
    the next cron time after now, and once it fires its last fire and the enqueued run show."""
    schedule = tide.schedules.set("nightly-digest", cron="0 3 * * *", workflow="digest")
    page.goto(f"{hooked_server.studio}/schedules")
    row = page.locator('tr[data-schedule="nightly-digest"]')
    iso = schedule.next_fire_at.astimezone().strftime("%Y-%m-%d")
    expect(row.locator('[data-field="next"] time')).to_contain_text(iso)
    page.screenshot(path=str(shots / "studio-schedules.png"), full_page=True)
    row.get_by_role("button", name="Pause schedule nightly-digest").click()
    expect(page.locator('tr[data-schedule="nightly-digest"] [data-field="next"]')).to_have_text("paused")
    assert one(sql, "SELECT enabled FROM tidebase.schedules WHERE name = 'nightly-digest'") is False
    page.locator('tr[data-schedule="nightly-digest"]').get_by_role(
        "button", name="Resume schedule nightly-digest").click()
    expect(page.locator('tr[data-schedule="nightly-digest"] [data-field="next"] time')).to_be_visible()
    assert sql.execute("SELECT enabled, next_fire_at > now() FROM tidebase.schedules "
                       "WHERE name = 'nightly-digest'").fetchone() == (True, True)

    # a due schedule is fired by the server's reconciler: its last fire and the run it enqueued appear
    sql.execute("UPDATE tidebase.schedules SET next_fire_at = now() - interval '1 minute' "
                "WHERE name = 'nightly-digest'")
    fired = wait_for(lambda: one(sql, "SELECT run_id FROM tidebase.schedule_fires "
                                      "WHERE schedule = 'nightly-digest' AND status = 'enqueued'"))
    page.reload()
    row = page.locator('tr[data-schedule="nightly-digest"]')
    expect(row.locator('[data-field="last"] time')).to_be_visible()
    expect(row.get_by_role("link", name="run")).to_have_attribute("href", re.compile(f"/runs/{fired}$"))


def test_usage_chart_per_workflow_per_day_and_what_replay_saved(page: Any, hooked_server: Studio, tide: Tidebase,
                                                                 sql: psycopg.Connection[Any], shots: Path) -> None:
    """The usage page charts cost per workflow per day as inline SVG and shows, per workflow, what was spent and
    what replays saved, equal to the sums in the database."""
    crash = [True]

    def agent(run: Any, _: Any) -> str:
        def think() -> str:
            run.usage.record(kind="llm", provider="acme", model="m-1", input_tokens=1000, output_tokens=500,
                             cost_usd=0.5)
            return "thought"

        run.step("think", think)
        if crash[0]:
            crash[0] = False
            raise RuntimeError("crash after thinking")
        return "done"

    with pytest.raises(RuntimeError):
        tide.run("thinker", agent, run_id="usage-1")
    assert tide.run("thinker", agent, run_id="usage-1") == "done"  # the replay saves what `think` cost

    def cheap(run: Any, _: Any) -> None:
        run.usage.record(kind="llm", provider="acme", model="m-0", input_tokens=10, output_tokens=5,
                         cost_usd=0.01)

    tide.run("cheap", cheap, run_id="usage-2")
    tide.run("cheap", cheap, run_id="usage-3")
    sql.execute("UPDATE tidebase.usage SET created_at = created_at - interval '2 days' WHERE run_id = 'usage-3'")
    two_days_ago = one(sql, "SELECT (now() AT TIME ZONE 'UTC')::date - 2").isoformat()
    page.goto(f"{hooked_server.studio}/usage")
    chart = page.locator("svg.chart").first
    expect(chart.locator("rect title", has_text="thinker")).to_have_count(1)
    expect(chart.locator("rect title", has_text="cheap")).to_have_count(2)  # one bar a day
    expect(chart.locator("rect title", has_text=f"cheap, {two_days_ago}")).to_contain_text("$0.0100")
    thinker = page.locator('#usage-table tr[data-workflow="thinker"]')
    expect(thinker.locator("td").nth(1)).to_have_text("1,500")
    expect(thinker.locator("td").nth(2)).to_have_text("$0.5000")
    expect(thinker.locator("td").nth(4)).to_have_text("$0.5000")
    spent, saved = sql.execute("SELECT sum(cost_usd) FILTER (WHERE NOT saved), sum(cost_usd) FILTER (WHERE saved) "
                               "FROM tidebase.usage").fetchone()
    expect(page.locator("#spent-cost")).to_have_text(f"${spent:,.4f}")
    expect(page.locator("#saved-cost")).to_have_text(f"${saved:,.4f}")
    page.get_by_label("Measure").select_option("tokens")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("svg.chart").first.locator("rect title", has_text="thinker")).to_contain_text("1,500")
    page.screenshot(path=str(shots / "studio-usage.png"), full_page=True)


def test_recoveries_and_webhook_deliveries_without_secrets(page: Any, hooked_server: Studio, tide: Tidebase,
                                                           sql: psycopg.Connection[Any], receiver: Receiver) -> None:
    """A run's page lists its recovery attempts and webhook deliveries (status, attempts, last response, and only
    the host of each address), and neither that page nor its live event stream carries a channel secret, the
    server's webhook secret, a gate's resolve token, or a token the receiver echoed back."""
    url_token = "url-token-93c1"
    secrets = ["chan-secret-77aa", "gate-secret-5e0f", SERVER_SECRET]
    with httpx.Client(base_url=hooked_server.url) as http:
        http.post("/runs/hooked", json={"runId": "hooked-1", "recoveryWebhook": receiver.url + "/resume",
                                        "channels": [{"url": f"{receiver.url}/ch?token={url_token}",
                                                      "secret": secrets[0], "events": ["gate.created", "run.failed"]}]})
        owner = http.post("/runs/hooked-1/begin").json()["leaseOwner"]
        gate = http.post("/runs/hooked-1/gates/begin", json={
            "name": "ok", "prompt": "ok?", "channels": [{"url": receiver.url + "/gate", "secret": secrets[1]}]}).json()
        secrets.append(gate["gate"]["resolveToken"])
        http.post("/runs/hooked-1/fail", json={"error": {"message": "boom"}, "leaseOwner": owner})
    # the gate's own channel, the run's channel (gate.created, run.failed) and the run.resume recovery webhook
    wait_for(lambda: one(sql, "SELECT count(*) FROM tidebase.outbox WHERE run_id = 'hooked-1' "
                              "AND status = 'delivered'") == 4)
    tide.runs.recover("hooked-1", actor="ops")
    page.goto(f"{hooked_server.studio}/runs/hooked-1")
    hooks = page.locator('[data-part="webhooks"]')
    expect(hooks.locator("table").first).to_contain_text("operator")
    delivered = hooks.locator("table.deliveries tbody tr", has=page.locator('.badge[data-status="delivered"]'))
    expect(delivered).to_have_count(4)
    expect(delivered.first).to_contain_text("HTTP 200")
    expect(delivered.first).to_contain_text("[redacted]")
    expect(delivered.first.locator("td.num")).to_have_text("1")
    expect(page.locator("#stream-status")).to_have_attribute("data-state", "live")
    html = page.content()
    for secret in [*secrets, "0123456789abcdef0123456789abcdef"]:
        assert secret not in html, secret
    addresses = hooks.locator("table.deliveries tbody td.mono").all_inner_texts()
    assert addresses and all(re.fullmatch(r"http://127\.0\.0\.1:\d+/…", a) for a in addresses)
    assert url_token not in hooks.inner_html()
