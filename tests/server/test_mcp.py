"""The MCP door (docs/mcp.md): every tool through the SDK's own client, over stdio (`python -m tidebase mcp`, a real
subprocess) and over streamable HTTP under a real `tidebase serve` (its API key in front of `/mcp`).

The scenario creates, with the library on the same database, a finished research run (a large step output, state
versions with a label, secrets in its output), a run queued with a signed channel, a recovery secret and secret
metadata, and agent runs that block at an approval gate with a signed channel. Then every tool is called; both
gates are decided through MCP exactly once and their runs go on; a run is forked at a step and the fork is executed.
Every result text is searched for every secret: the settings' key and secrets (given to the MCP process),
channel, recovery and gate-data secrets, the resolve tokens, the lease owner of a running run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from server_proc import Server, start_server, stop_server, wait_for

from tidebase import Tidebase
from tidebase.mcp import views
from tidebase.mcp.views import REDACTED, Budget, Redactor, scrub

TOOLS = {"list_runs", "get_run", "list_steps", "get_step", "get_state", "list_events", "list_pending_gates",
         "approve_gate", "reject_gate", "fork_run"}
NOWHERE = "http://127.0.0.1:9/hook"  # a closed port: deliveries are queued, never delivered, in this test


class Secrets:
    """Every secret of a scenario by label; each value is unique, so a find names its source."""

    def __init__(self) -> None:
        self.by_label: dict[str, str] = {}

    def new(self, label: str) -> str:
        self.by_label[label] = f"{label}-{secrets.token_hex(12)}"
        return self.by_label[label]

    def add(self, label: str, value: str | None) -> None:
        assert value, f"{label} is empty"
        self.by_label[label] = value

    def found_in(self, texts: list[str]) -> list[tuple[int, str]]:
        return [(i, label) for i, text in enumerate(texts) for label, value in self.by_label.items()
                if value in text]


class Session:
    """An MCP client session that keeps every result's text (content and structured content) for the search."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.texts: list[str] = []

    async def raw(self, tool: str, args: dict[str, Any] | None = None) -> Any:
        result = await self.client.call_tool(tool, args or {})
        self.texts.append(json.dumps(result.structured_content))
        self.texts.extend(getattr(c, "text", "") for c in result.content)
        return result

    async def call(self, tool: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """The structured result of a call that must succeed."""
        result = await self.raw(tool, args)
        assert not result.is_error, f"{tool}({args}) failed: {result.content}"
        assert isinstance(result.structured_content, dict)
        # the text content is the same document, for clients that read text only
        assert json.loads(result.content[0].text) == result.structured_content
        return result.structured_content

    async def error(self, tool: str, args: dict[str, Any] | None = None) -> str:
        """The message of a call that must be a tool error (not a crash of the server)."""
        result = await self.raw(tool, args)
        assert result.is_error, f"{tool}({args}) did not fail: {result.structured_content}"
        return " ".join(getattr(c, "text", "") for c in result.content)


@contextlib.asynccontextmanager
async def stdio_session(env: dict[str, str], errlog: Path) -> AsyncIterator[Session]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "tidebase", "mcp"], env=env)
    with errlog.open("w") as err:
        async with Client(stdio_client(params, errlog=err)) as client:
            yield Session(client)


class GateRun:
    """A library run that builds, stops at gate `approve` (blocking, with a signed channel) and then ships; runs in
    a thread of this process until the gate is decided."""

    def __init__(self, tide: Tidebase, run_id: str, keys: Secrets) -> None:
        self.tide, self.run_id = tide, run_id
        self.result: Any = None
        self.error: BaseException | None = None
        channel = keys.new(f"gate-channel-secret-{run_id}")
        data_secret = keys.new(f"gate-data-secret-{run_id}")

        def deploy(run: Any, input: Any) -> Any:
            run.step("build", lambda: {"artifact": "app-1.2"})
            gate = run.gates.begin("approve", "Ship app-1.2?", data={"artifact": "app-1.2", "secret": data_secret},
                                   channels=[{"url": NOWHERE, "secret": channel}])
            if gate.token:
                keys.add(f"resolve-token-{run_id}", gate.token)
            decision = run.gate("approve")
            return run.step("ship", lambda: {"approved": decision.approved, "payload": decision.payload})

        def main() -> None:
            try:
                self.result = tide.run("deploy", deploy, run_id=run_id, input={"artifact": "app-1.2"})
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        self.gate = wait_for(lambda: next(iter(tide.gates.list(status="pending", run_id=run_id)), None))

    def finish(self) -> Any:
        self.thread.join(30)
        assert not self.thread.is_alive(), f"run {self.run_id} did not go on after its gate was decided"
        if self.error is not None:
            raise self.error
        return self.result


def research(keys: Secrets, api_key: str, webhook_secret: str) -> Callable[[Any, Any], Any]:
    """A workflow with a plan, a large search result holding secrets, state versions and a labelled save."""
    password = keys.new("step-password")

    def workflow(run: Any, input: Any) -> Any:
        plan = run.step("plan", lambda: ["tidal forces", "the moon's orbit"])
        run.state.set({"status": "planning", "plan": plan})
        docs = run.step("search", lambda: {
            "docs": ["notes " * 3000], "password": password,
            # the settings' secrets under a harmless key: only the MCP process knows they are secrets
            "note": f"configured with {api_key} and {webhook_secret}"})
        run.state.patch({"status": "reviewing"})
        run.state.save("reviewed", "checked by hand")
        return run.step("finalize", lambda: f"Report on {len(docs['docs'])} documents")

    return workflow


@pytest.fixture
def keys() -> Secrets:
    return Secrets()


@pytest.fixture
def mcp_env(dsn: str, keys: Secrets) -> dict[str, str]:
    """The MCP process's environment: the test database, and secret settings it must never show."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEBASE_")}
    return {**env, "TIDEBASE_DATABASE_URL": dsn, "TIDEBASE_API_KEY": keys.new("api-key"),
            "TIDEBASE_WEBHOOK_SECRET": keys.new("webhook-secret"), "TIDEBASE_STUDIO_SECRET": keys.new("studio-secret")}


async def test_every_tool_over_stdio_without_a_secret_in_any_result(
    tide: Tidebase, mcp_env: dict[str, str], keys: Secrets, tmp_path: Path
) -> None:
    tide.run("research-agent", research(keys, keys.by_label["api-key"], keys.by_label["webhook-secret"]),
             run_id="research-1", input={"question": "Why do tides turn?"})
    tide.enqueue("mailer", run_id="queued-1", input={"to": "ada@example.com"}, metadata={
        "team": "ops", "api_key": keys.new("metadata-api-key")},
        webhooks=[{"url": NOWHERE, "secret": keys.new("run-channel-secret")}],
        recovery_webhook={"url": NOWHERE, "secret": keys.new("recovery-secret")})
    approved, rejected = GateRun(tide, "deploy-1", keys), GateRun(tide, "deploy-2", keys)
    owner = tide.runs.get("deploy-1").lease_owner
    keys.add("lease-owner", owner)
    assert "resolve-token-deploy-1" in keys.by_label  # the creating call had the token: it must not leak

    async with stdio_session(mcp_env, tmp_path / "mcp.log") as s:
        listed = await s.client.list_tools()
        assert {t.name for t in listed.tools} == TOOLS
        assert all(t.output_schema for t in listed.tools)  # typed results
        assert {t.name for t in listed.tools if t.annotations and t.annotations.read_only_hint} == {
            "list_runs", "get_run", "list_steps", "get_step", "get_state", "list_events", "list_pending_gates"}

        # list_runs: filters, limit and cursor
        every = await s.call("list_runs")
        assert {r["id"] for r in every["runs"]} == {"research-1", "queued-1", "deploy-1", "deploy-2"}
        assert every["next_cursor"] is None
        assert [r["id"] for r in (await s.call("list_runs", {"status": "queued"}))["runs"]] == ["queued-1"]
        deploys = await s.call("list_runs", {"workflow": "deploy", "limit": 1})
        assert len(deploys["runs"]) == 1 and deploys["next_cursor"]
        rest = await s.call("list_runs", {"workflow": "deploy", "cursor": deploys["next_cursor"]})
        assert {deploys["runs"][0]["id"], *(r["id"] for r in rest["runs"])} == {"deploy-1", "deploy-2"}
        running = next(r for r in every["runs"] if r["id"] == "deploy-1")
        assert running["status"] == "running"
        assert running["lease"]["holder"].startswith("process ") and running["lease"]["expires_at"]
        assert "limit" in await s.error("list_runs", {"limit": 0})
        assert "status" in await s.error("list_runs", {"status": "sleeping"})

        # get_run: values, steps, pending gates; secrets in metadata redacted
        run = await s.call("get_run", {"run_id": "research-1"})
        assert run["status"] == "completed" and run["result"] == "Report on 1 documents"
        assert run["input"] == {"question": "Why do tides turn?"}
        assert [st["key"] for st in run["steps"]] == ["plan", "search", "finalize"]
        assert "output" not in run["steps"][0] and run["step_count"] == 3
        queued = await s.call("get_run", {"run_id": "queued-1"})
        assert queued["metadata"] == {"team": "ops", "api_key": REDACTED} and queued["queue"] == "default"
        waiting = await s.call("get_run", {"run_id": "deploy-1"})
        assert [g["name"] for g in waiting["pending_gates"]] == ["approve"]
        assert waiting["pending_gates"][0]["data"] == {"artifact": "app-1.2", "secret": REDACTED}
        assert "NotFound: run 'nope' not found" in await s.error("get_run", {"run_id": "nope"})

        # list_steps: pages, bounded outputs
        page = await s.call("list_steps", {"run_id": "research-1", "limit": 2})
        assert [st["key"] for st in page["steps"]] == ["plan", "search"]
        assert page["total"] == 3 and page["next_offset"] == 2
        assert page["steps"][0]["output"] == ["tidal forces", "the moon's orbit"]
        search = page["steps"][1]["output"]
        assert search["truncated"] is True and len(search["preview"]) == views.LIST_VALUE_CHARS
        assert page["truncated"] == [{"path": "steps[1].output", "chars": search["chars"]}]
        last = await s.call("list_steps", {"run_id": "research-1", "offset": 2})
        assert [st["key"] for st in last["steps"]] == ["finalize"] and last["next_offset"] is None
        assert "NotFound" in await s.error("list_steps", {"run_id": "nope"})

        # get_step: a larger budget; secret-named keys and the settings' secrets redacted
        step = (await s.call("get_step", {"run_id": "research-1", "key": "search"}))["step"]
        assert step["status"] == "completed" and step["output"]["docs"] == ["notes " * 3000]
        assert step["output"]["password"] == REDACTED
        assert step["output"]["note"] == f"configured with {REDACTED} and {REDACTED}"
        small = (await s.call("get_step", {"run_id": "deploy-1", "key": "build"}))["step"]
        assert small["output"] == {"artifact": "app-1.2"} and small["contract"]["replay"] == "auto"
        assert "NotFound" in await s.error("get_step", {"run_id": "research-1", "key": "nope"})

        # get_state: current, at a version, at a label, at a step; the run's streams
        state = await s.call("get_state", {"run_id": "research-1"})
        assert state["state"]["value"] == {"status": "reviewing", "plan": ["tidal forces", "the moon's orbit"]}
        assert [x["name"] for x in state["streams"]] == ["run"]
        first = await s.call("get_state", {"run_id": "research-1", "version": 1})
        assert first["state"]["value"]["status"] == "planning" and first["state"]["version"] == 1
        labelled = await s.call("get_state", {"run_id": "research-1", "label": "reviewed"})
        assert labelled["state"]["label"] == "reviewed" and labelled["state"]["reason"] == "checked by hand"
        at_plan = await s.call("get_state", {"run_id": "research-1", "step": "search"})
        assert at_plan["state"]["value"]["status"] == "planning"
        assert (await s.call("get_state", {"run_id": "queued-1"}))["state"] is None
        assert "NotFound" in await s.error("get_state", {"run_id": "nope"})
        assert "NotFound" in await s.error("get_state", {"run_id": "research-1", "version": 99})

        # list_events: in order, resumable, lease owner and fencing token redacted
        events = await s.call("list_events", {"run_id": "research-1", "limit": 3})
        assert [e["seq"] for e in events["events"]] == [1, 2, 3] and events["has_more"]
        assert events["events"][1]["type"] == "run.started"
        assert events["events"][1]["payload"]["leaseOwner"] == REDACTED
        assert events["events"][1]["payload"]["fencingToken"] == REDACTED
        more = await s.call("list_events", {"run_id": "research-1", "after": events["next_after"], "limit": 200})
        assert more["events"][0]["seq"] == 4 and not more["has_more"]
        assert more["events"][-1]["type"] == "run.completed"
        assert "NotFound" in await s.error("list_events", {"run_id": "nope"})

        # pending gates, across runs and of one run
        pending = await s.call("list_pending_gates")
        assert {g["run_id"] for g in pending["gates"]} == {"deploy-1", "deploy-2"}
        one = await s.call("list_pending_gates", {"run_id": "deploy-1"})
        assert [g["id"] for g in one["gates"]] == [approved.gate.id]
        assert (await s.call("list_pending_gates", {"run_id": "research-1"}))["gates"] == []
        assert "NotFound" in await s.error("list_pending_gates", {"run_id": "nope"})

        # approve: resolved once, recorded with actor and reason; the run goes on
        decided = await s.call("approve_gate", {"gate_id": approved.gate.id, "actor": "alice",
                                                "reason": "checked the artifact"})
        assert decided["gate"]["status"] == "approved" and decided["gate"]["actor"] == "mcp:alice"
        assert decided["gate"]["payload"] == {"reason": "checked the artifact"}
        assert approved.finish() == {"approved": True, "payload": {"reason": "checked the artifact"}}
        again = await s.error("approve_gate", {"gate_id": approved.gate.id, "actor": "bob"})
        assert "GateAlreadyResolved" in again and "mcp:alice" in again
        assert "GateAlreadyResolved" in await s.error("reject_gate", {"gate_id": approved.gate.id, "actor": "bob"})
        gate = tide.gates.get(approved.gate.id)
        assert (gate.decision, gate.actor) == ("approved", "mcp:alice")
        assert tide.runs.get("deploy-1").status == "completed"
        resolved = [e for e in tide.runs.events("deploy-1") if e.type == "gate.resolved"]
        assert len(resolved) == 1

        # reject: the run takes the other branch
        no = await s.call("reject_gate", {"gate_id": rejected.gate.id, "actor": "carol", "reason": "not today"})
        assert no["gate"]["decision"] == "rejected" and "rejected" in no["next"]
        assert rejected.finish() == {"approved": False, "payload": {"reason": "not today"}}
        assert "NotFound" in await s.error("approve_gate", {"gate_id": "gate_nope", "actor": "alice"})
        assert (await s.call("list_pending_gates"))["gates"] == []

        # fork at a step: a new run with the checkpoints up to it; the source run is not modified
        fork = await s.call("fork_run", {"run_id": "research-1", "at_step": "search", "new_run_id": "research-2"})
        assert fork["run"]["id"] == "research-2" and fork["source_run_id"] == "research-1"
        assert [st.key for st in tide.runs.get("research-2").steps] == ["plan", "search"]
        assert [st.key for st in tide.runs.get("research-1").steps] == ["plan", "search", "finalize"]
        forked = await s.call("get_run", {"run_id": "research-2"})
        assert forked["parents"] == [{"run_id": "research-1", "workflow": "research-agent",
                                      "status": "completed", "edge": forked["parents"][0]["edge"],
                                      "edge_type": "fork"}]
        assert "NotFound" in await s.error("fork_run", {"run_id": "nope", "at_step": "plan"})
        executed: list[str] = []
        tide.run("research-agent", lambda run, _: executed.append(run.step("finalize", lambda: "again")) or "again",
                 run_id="research-2")
        assert executed == ["again"] and tide.runs.get("research-2").status == "completed"

        # the server went on serving after every error
        assert (await s.call("list_runs", {"limit": 100}))["runs"]

    leaks = keys.found_in(s.texts)
    assert not leaks, f"secrets in tool results: {leaks}"
    assert any(REDACTED in t for t in s.texts)


# -- streamable HTTP under a real `tidebase serve` --------------------------------------------------------------------


@pytest.fixture
def keyed_server(dsn: str, keys: Secrets) -> Iterator[Server]:
    srv = start_server(dsn, api_key=keys.new("api-key"), env={"TIDEBASE_WEBHOOK_SECRET": keys.new("webhook-secret")})
    yield srv
    stop_server(srv)


@contextlib.asynccontextmanager
async def http_session(url: str, api_key: str | None) -> AsyncIterator[Session]:
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http, \
            Client(streamable_http_client(url + "/mcp", http_client=http)) as client:
        yield Session(client)


def test_mcp_over_http_needs_the_api_key(keyed_server: Server) -> None:
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    accept = {"accept": "application/json, text/event-stream"}
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {keyed_server.api_key}"}):
        answer = httpx.post(keyed_server.url + "/mcp", json=hello, headers={**accept, **headers}, timeout=10)
        assert answer.status_code == 401, answer.text
        assert answer.json()["code"] == "unauthorized"
    assert httpx.get(keyed_server.url + "/mcp", headers=accept, timeout=10).status_code == 401
    ok = httpx.post(keyed_server.url + "/mcp", json=hello, timeout=10,
                    headers={**accept, "authorization": f"Bearer {keyed_server.api_key}"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["result"]["serverInfo"]["name"] == "tidebase"


async def test_tools_over_http_with_the_key_and_no_secret_from_the_http_door(
    keyed_server: Server, keys: Secrets
) -> None:
    # A run of the HTTP door: a signed channel, a recovery secret, a step with credentials, a client-chosen owner.
    owner = keys.new("http-owner")
    with keyed_server.client() as http:
        created = http.post("/runs/mailer", json={
            "runId": "http-1", "input": {"to": "ada@example.com"}, "recoveryWebhook": NOWHERE,
            "channels": [{"url": NOWHERE, "secret": keys.new("http-channel-secret")}]})
        assert created.status_code == 201, created.text
        assert http.post("/runs/http-1/begin", headers={"x-tidebase-worker": owner}).status_code == 200
        begun = http.post("/runs/http-1/steps/begin", json={
            "name": "send", "inputHash": "h-1", "leaseOwner": owner,
            "options": {"sideEffects": ["email.send"], "idempotencyKey": "send:ada",
                        "credentials": [{"name": "smtp", "password": keys.new("smtp-password")}]}})
        assert begun.json()["action"] == "execute", begun.text
        step_id = begun.json()["step"]["id"]
        done = http.post(f"/runs/http-1/steps/{step_id}/complete", json={"leaseOwner": owner,
                                                                          "output": {"sent": True}})
        assert done.status_code == 200, done.text

    with pytest.raises(Exception):  # noqa: PT011, B017 - the SDK reports the 401 as its transport's error
        async with http_session(keyed_server.url, None) as s:
            await s.client.list_tools()

    async with http_session(keyed_server.url, keyed_server.api_key) as s:
        assert {t.name for t in (await s.client.list_tools()).tools} == TOOLS
        runs = await s.call("list_runs")
        assert [r["id"] for r in runs["runs"]] == ["http-1"]
        assert runs["runs"][0]["lease"]["holder"] == "an HTTP client"
        run = await s.call("get_run", {"run_id": "http-1"})
        assert [st["key"] for st in run["steps"]] == ["send"]
        step = (await s.call("get_step", {"run_id": "http-1", "key": "send"}))["step"]
        assert step["output"] == {"sent": True}
        assert step["contract"]["credentials"] == REDACTED
        assert step["contract"]["idempotencyKey"] == "send:ada"
        await s.call("list_steps", {"run_id": "http-1"})
        events = await s.call("list_events", {"run_id": "http-1"})
        assert [e["type"] for e in events["events"]][:3] == ["run.created", "run.started", "step.started"]
        assert "NotFound" in await s.error("get_run", {"run_id": "nope"})

    leaks = keys.found_in(s.texts)
    assert not leaks, f"secrets in tool results: {leaks}"


# -- without the extra ------------------------------------------------------------------------------------------------

WITHOUT_MCP = """
import sys
sys.modules["mcp"] = None  # as if the `mcp` extra were not installed
from tidebase.mcp import available
from tidebase.server.app import create_app
from tidebase.settings import Settings
app = create_app(Settings())
while not hasattr(app, "routes"):
    app = app.app
assert not available()
assert "/mcp" not in [getattr(r, "path", None) for r in app.routes], "the /mcp route exists without the extra"
assert "/runs/{run_id}/events" in [getattr(r, "path", None) for r in app.routes]
from tidebase.cli.main import main
sys.exit(main(["mcp"]))
"""


def test_without_the_extra_serve_has_no_mcp_route_and_the_command_says_what_to_install() -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_MCP], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2, done.stderr
    assert 'pip install "tidebase-postgres[mcp]"' in done.stderr
    assert done.stdout == ""


UNUSABLE_MCP = """
import asyncio, json, sys
sys.modules["mcp.server.mcpserver"] = None  # an `mcp` package without the SDK 2 API (say, an older major version)
from tidebase.mcp.http import HttpDoor
from tidebase.settings import Settings
door = HttpDoor(Settings())
assert door.routes
async def main():
    sent = []
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        sent.append(message)
    async with door.running(None):  # the app's lifespan goes on; only /mcp answers 503
        await door({"type": "http", "method": "POST", "path": "/mcp", "headers": []}, receive, send)
    assert sent[0]["status"] == 503, sent
    assert "tidebase-postgres[mcp]" in json.loads(sent[1]["body"])["error"]
asyncio.run(main())
from tidebase.cli.main import main
sys.exit(main(["mcp"]))
"""


def test_an_unusable_mcp_package_leaves_serve_running_and_the_command_says_what_to_install() -> None:
    done = subprocess.run([sys.executable, "-c", UNUSABLE_MCP], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 2, done.stderr
    assert 'pip install "tidebase-postgres[mcp]"' in done.stderr and "cannot be used" in done.stderr
    assert done.stdout == ""


# -- the rendering rules, one by one ----------------------------------------------------------------------------------


def test_scrub_redacts_secret_named_keys_at_any_depth_and_keeps_what_shows_nothing() -> None:
    value = {"a": [{"Api-Key": "k1", "hasSecret": True, "token": None, "credentials": [], "x": 1}],
             "leaseOwner": "w-1", "previousOwner": "w-0", "fencingToken": 7, "input_tokens": 12,
             "nested": {"client_secret": {"deep": "s"}, "name": "ok"}}
    assert scrub(value) == {
        "a": [{"Api-Key": REDACTED, "hasSecret": True, "token": None, "credentials": [], "x": 1}],
        "leaseOwner": REDACTED, "previousOwner": REDACTED, "fencingToken": REDACTED, "input_tokens": 12,
        "nested": {"client_secret": REDACTED, "name": "ok"}}


def test_budget_truncates_after_scrubbing_and_lists_the_path() -> None:
    budget = Budget(40)
    cut = budget.value({"password": "p" * 100, "text": "t" * 100}, "steps[0].output")
    assert cut["truncated"] is True and len(cut["preview"]) == 40 and "ppp" not in cut["preview"]
    assert budget.truncated == [{"path": "steps[0].output", "chars": cut["chars"]}]
    assert budget.value([1, 2], "small") == [1, 2] and len(budget.truncated) == 1


def test_redactor_replaces_known_secrets_and_the_dsn_password() -> None:
    from tidebase.settings import Settings

    settings = Settings(api_key="key-123456", webhook_secret="hook-654321", database_url=None)
    redactor = Redactor.from_settings(settings, "postgresql://u:pass-9876@h/db")
    assert redactor.apply({"a": ["key-123456 and hook-654321", {"pass-9876": 1}], "n": 5}) == {
        "a": [f"{REDACTED} and {REDACTED}", {REDACTED: 1}], "n": 5}
    assert Redactor.from_settings(Settings(api_key="abc")).apply("abc") == "abc"  # too short to search for


def test_the_status_filter_lists_the_library_statuses() -> None:
    from typing import get_args

    from tidebase.mcp.tools import RunStatus
    from tidebase.models import RUN_STATUSES

    assert set(get_args(RunStatus)) == set(RUN_STATUSES)
