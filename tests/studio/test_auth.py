"""The Studio behind `TIDEBASE_API_KEY`, in a real browser: no session means the login form, a wrong key is
refused, the key is asked once and never reaches a page or a script, the session cookie is HttpOnly and
SameSite=Strict, cross-site and token-less POSTs are refused, the API still needs its bearer key, and a session
survives a restart of the server."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import expect
from studio_proc import Studio, one, start, stop

from tidebase import Tidebase

KEY = "studio-test-key-6c2f9e"


@pytest.fixture(scope="module")
def keyed(module_dsn: str, studio_home: Path) -> Iterator[Studio]:
    server = start(module_dsn, studio_home, api_key=KEY)
    yield server
    log = stop(server)
    assert KEY not in log


def sign_in(page: Any, server: Studio, key: str, name: str) -> None:
    page.goto(f"{server.studio}/")
    page.get_by_label("API key").fill(key)
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Sign in").click()


class Attacker:
    """Another site on this machine: a page whose form posts to the Studio as soon as it loads."""

    def __init__(self, target: str) -> None:
        body = (f'<!doctype html><form id="f" method="post" action="{target}"><input name="csrf" value="guess">'
                '<input name="reason" value="pwned"></form><script>document.getElementById("f").submit()</script>'
                ).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_no_session_goes_to_login_and_a_wrong_key_is_refused(page: Any, keyed: Studio, shots: Path) -> None:
    """Without a session every page leads to the login form; a wrong key is refused there and opens nothing."""
    page.goto(f"{keyed.studio}/gates")
    expect(page).to_have_url(re.compile(r"/studio/login\?next="))
    page.screenshot(path=str(shots / "studio-login.png"))
    page.get_by_label("API key").fill("not-the-key")
    page.get_by_label("Your name").fill("mallory")
    with page.expect_response(re.compile(r"/studio/login$")) as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 401
    expect(page.locator("#login-error")).to_contain_text("not this server's API key")
    assert not [c for c in page.context.cookies() if c["name"] == "tb_studio"]
    assert httpx.get(f"{keyed.studio}/runs/x/events").status_code == 401
    assert httpx.get(f"{keyed.studio}/pulse").status_code == 401


def test_the_key_is_asked_once_and_kept_out_of_pages_and_scripts(page: Any, keyed: Studio, tide: Tidebase) -> None:
    """The right key opens the Studio where the login was headed; the session cookie is HttpOnly, SameSite=Strict
    and scoped to /studio; no page, script-visible cookie or stream carries the key; the API still wants it."""
    tide.enqueue("auth-wf", run_id="auth-run")
    page.goto(f"{keyed.studio}/runs/auth-run")
    page.get_by_label("API key").fill(KEY)
    page.get_by_label("Your name").fill("erin")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/studio/runs/auth-run$"))
    expect(page.locator(".who")).to_contain_text("erin")
    expect(page.locator("#stream-status")).to_have_attribute("data-state", "live")
    [cookie] = [c for c in page.context.cookies() if c["name"] == "tb_studio"]
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/studio")
    assert "tb_studio" not in page.evaluate("document.cookie")
    for path in ("/", "/runs/auth-run", "/gates", "/usage", "/runs/auth-run/part/header"):
        assert KEY not in page.request.get(f"{keyed.studio}{path}").text()
    assert KEY not in cookie["value"]
    assert httpx.get(f"{keyed.url}/runs").status_code == 401
    assert httpx.get(f"{keyed.url}/runs", cookies={"tb_studio": cookie["value"]}).status_code == 401
    assert httpx.get(f"{keyed.url}/runs", headers={"authorization": f"Bearer {KEY}"}).status_code == 200


def test_cross_site_and_token_less_posts_are_refused(page: Any, keyed: Studio, tide: Tidebase,
                                                     sql: psycopg.Connection[Any]) -> None:
    """A form on another site posting to the Studio with the person's cookie is refused (403), and so is a
    same-origin POST without the CSRF token; with the token the same action goes through."""
    tide.enqueue("auth-wf", run_id="victim")
    sign_in(page, keyed, KEY, "frank")
    attacker = Attacker(f"{keyed.studio}/runs/victim/cancel")
    try:
        with page.expect_response(re.compile(r"/runs/victim/cancel$")) as answer:
            page.goto(attacker.url)
        assert answer.value.status == 403
        expect(page.locator("body")).to_contain_text("Cross-site request")
    finally:
        attacker.close()
    assert one(sql, "SELECT status FROM tidebase.runs WHERE id = 'victim'") == "queued"

    page.goto(f"{keyed.studio}/runs/victim")
    origin = {"origin": keyed.url}
    url = f"{keyed.studio}/runs/victim/cancel"
    refused = page.request.post(url, headers=origin, form={"reason": "no token"}, max_redirects=0)
    assert refused.status == 403
    assert one(sql, "SELECT status FROM tidebase.runs WHERE id = 'victim'") == "queued"
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    done = page.request.post(url, headers=origin, form={"reason": "with token", "csrf": token}, max_redirects=0)
    assert done.status == 303
    assert sql.execute("SELECT status, cancel_actor FROM tidebase.runs WHERE id = 'victim'").fetchone() == (
        "cancelled", "frank")


def test_sign_out_ends_the_session_and_a_restart_keeps_it(browser: Any, keyed: Studio) -> None:
    """A session survives a restart of the server (its secret is kept in the Tidebase home); signing out ends it."""
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, keyed, KEY, "gina")
    expect(page.locator(".who")).to_contain_text("gina")
    stop(keyed)
    restarted = start(keyed.dsn, keyed.home, api_key=KEY, port=keyed.port)
    keyed.process = restarted.process
    page.goto(f"{keyed.studio}/queues")
    expect(page.locator(".who")).to_contain_text("gina")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/studio/login$"))
    page.goto(f"{keyed.studio}/queues")
    expect(page).to_have_url(re.compile(r"/studio/login\?next="))
    context.close()
