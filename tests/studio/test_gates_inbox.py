"""The gates inbox in a real browser: pending gates across runs, approve and reject with a comment, the history of
decisions, and two people deciding the same gate. The waiting workflows (threads of the test process, blocked in
`run.gate`) must move on with the decision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from playwright.sync_api import expect
from studio_proc import Studio, in_background, one, sign_in_as, wait_for

from tidebase import Tidebase


def asker(name: str, prompt: str, data: Any) -> Any:
    def workflow(run: Any, _: Any) -> Any:
        run.step("before", lambda: 1)
        decision = run.gate(name, prompt=prompt, data=data)
        return {"decision": decision.decision, "actor": decision.actor, "payload": decision.payload}

    return workflow


def wait_for_gate(sql: psycopg.Connection[Any], run_id: str) -> str:
    gate_id: str = wait_for(lambda: one(sql, "SELECT id FROM tidebase.gates WHERE run_id = %s", run_id))
    return gate_id


def test_inbox_approve_and_reject_with_comments_move_workflows_on(page: Any, open_server: Studio, tide: Tidebase,
                                                                  sql: psycopg.Connection[Any], shots: Path) -> None:
    """The inbox lists pending gates across runs (prompt, data, run, age); approving and rejecting with a comment
    records who decided, the waiting workflows return those decisions, and the history shows them."""
    sign_in_as(page, open_server, "alice")
    send = in_background(lambda: tide.run("mailer", asker("approve-send", "Send the report to the CFO?",
                                                          {"to": "cfo@example.com", "pages": 12}),
                                          run_id="gate-send"))
    pay = in_background(lambda: tide.run("payer", asker("approve-pay", "Pay invoice INV-7?", {"amount": 1200}),
                                         run_id="gate-pay"))
    send_gate, pay_gate = wait_for_gate(sql, "gate-send"), wait_for_gate(sql, "gate-pay")
    page.goto(f"{open_server.studio}/gates")
    card = page.locator(f'li.gate[data-gate="{send_gate}"]')
    expect(card.locator(".prompt")).to_have_text("Send the report to the CFO?")
    expect(card).to_contain_text("cfo@example.com")
    expect(card.get_by_role("link", name="gate-send")).to_be_visible()
    expect(card).to_contain_text("waiting")
    page.screenshot(path=str(shots / "studio-gates.png"), full_page=True)

    card.get_by_label("Comment (optional)").fill("numbers checked")
    card.get_by_role("button", name="✓ Approve").click()
    expect(page.locator("#notice")).to_contain_text("approved by alice")
    assert send.join() == {"decision": "approved", "actor": "alice", "payload": {"comment": "numbers checked"}}

    pay_card = page.locator(f'li.gate[data-gate="{pay_gate}"]')
    pay_card.get_by_label("Comment (optional)").fill("over budget")
    pay_card.get_by_role("button", name="✕ Reject").click()
    assert pay.join() == {"decision": "rejected", "actor": "alice", "payload": {"comment": "over budget"}}
    assert sql.execute("SELECT status, actor FROM tidebase.gates WHERE id = %s", (pay_gate,)).fetchone() == (
        "rejected", "alice")
    history = page.locator("#decisions tbody tr")
    expect(history.first).to_contain_text("over budget")
    expect(page.locator(f'#decisions tr[data-gate="{send_gate}"]')).to_contain_text("alice")
    expect(page.locator(f'li.gate[data-gate="{send_gate}"]')).to_have_count(0)


def test_two_people_deciding_at_once_one_wins_the_other_sees_who(browser: Any, open_server: Studio,
                                                                   tide: Tidebase,
                                                                   sql: psycopg.Connection[Any]) -> None:
    """Alice and Bob both have the gate open; Alice approves first; Bob's reject is not recorded and his page says
    that Alice approved it. The workflow gets Alice's decision."""
    waiting = in_background(lambda: tide.run("deploy", asker("ship", "Ship v2?", {}), run_id="gate-race"))
    gate_id = wait_for_gate(sql, "gate-race")
    pages = {}
    for name in ("alice", "bob"):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        pages[name] = context.new_page()
        sign_in_as(pages[name], open_server, name)
        pages[name].goto(f"{open_server.studio}/gates")
    pages["alice"].locator(f'li.gate[data-gate="{gate_id}"]').get_by_role("button", name="✓ Approve").click()
    pages["bob"].locator(f'li.gate[data-gate="{gate_id}"]').get_by_role("button", name="✕ Reject").click()
    notice = pages["bob"].locator("#notice")
    expect(notice).to_contain_text("already decided by alice")
    expect(notice).to_contain_text("approved")
    assert waiting.join()["decision"] == "approved"
    assert sql.execute("SELECT status, actor FROM tidebase.gates WHERE id = %s", (gate_id,)).fetchone() == (
        "approved", "alice")
    for p in pages.values():
        p.context.close()


def test_gate_decided_from_the_run_page(page: Any, open_server: Studio, tide: Tidebase,
                                        sql: psycopg.Connection[Any]) -> None:
    """A pending gate can be decided from its run's page too, which then shows the decision."""
    waiting = in_background(lambda: tide.run("inline", asker("check", "Looks right?", {"n": 1}), run_id="gate-inline"))
    wait_for_gate(sql, "gate-inline")
    page.goto(f"{open_server.studio}/runs/gate-inline")
    gates = page.locator('[data-part="gates"]')
    gates.get_by_role("button", name="✓ Approve").click()
    assert waiting.join()["decision"] == "approved"
    expect(page.locator('[data-part="gates"] .badge')).to_have_attribute("data-status", "approved")
