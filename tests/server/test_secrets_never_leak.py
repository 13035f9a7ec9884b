"""Secrets never leave the places that need them (docs/http-api.md#secrets).

A real `tidebase serve` process with an API key and a webhook secret, logging at DEBUG, and the library on the same
database create runs with channels (with secrets) and recovery webhooks, and gates with inline and run channels; their
deliveries go to a local receiver that echoes what it gets, to one that answers 503, and to a closed port. Then every
GET route of the app (read from its routing table and its OpenAPI document, so a new route is covered by itself), the
SSE stream of every run, the library's readers, the CLI commands that print runs, events and gates, and every log
record are searched for the resolve tokens, the channel and recovery secrets, the webhook secret and the API key.
The same scenario checks the channel ids of deliveries. Two smaller tests cover what the scenario cannot provoke: a
database error in the dispatcher, and a delivery whose receiver echoes the token while another one waits.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import itertools
import json
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from server_proc import Server, free_port, stop_server, wait_for
from starlette.routing import Mount, Route

from tidebase import Tidebase
from tidebase.core.channels import webhooks_param
from tidebase.errors import RunSuspended
from tidebase.ops.logs import JsonFormatter
from tidebase.ops.webhooks import Dispatcher
from tidebase.server.app import create_app
from tidebase.settings import Settings

# `tidebase serve` with every logger at DEBUG (uvicorn's access log included), on stderr.
SERVE_AT_DEBUG = """
import logging, sys
import uvicorn
from tidebase.cli.main import main
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
run = uvicorn.run
uvicorn.run = lambda app, **kw: run(app, **{**kw, "log_level": "debug"})
sys.exit(main(sys.argv[1:]))
"""


class Receiver:
    """A local webhook endpoint: `/echo...` answers 200 with the body it received, `/busy` answers 503 with it (so
    the dispatcher retries and records the answer)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes, dict[str, str]]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append((self.path, body, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(200 if self.path.startswith("/echo") else 503)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def signed_with(self, secret: str) -> list[dict[str, Any]]:
        """The messages received whose signature verifies with `secret`."""
        return [json.loads(body) for _, body, headers in list(self.received)
                if hmac.compare_digest(headers.get("x-tidebase-signature", ""),
                                       "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest())]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/nobody"


class Secrets:
    """Every secret of the scenario, by label; each is unique, so a find names its source."""

    def __init__(self) -> None:
        self.by_label: dict[str, str] = {}

    def new(self, label: str) -> str:
        value = f"{label}-{secrets.token_hex(12)}"
        self.by_label[label] = value
        return value

    def add(self, label: str, value: str | None) -> str:
        assert value, f"{label} was not returned to its creator"
        self.by_label[label] = value
        return value

    def found_in(self, texts: dict[str, str]) -> list[tuple[str, str]]:
        """(where, secret label) for every secret that occurs in one of the texts."""
        return [(where, label) for where, text in texts.items() for label, value in self.by_label.items()
                if value in text]


@pytest.fixture
def keys() -> Secrets:
    return Secrets()


@pytest.fixture
def debug_server(dsn: str, keys: Secrets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 request: pytest.FixtureRequest) -> Iterator[tuple[Server, Path]]:
    """`tidebase serve` with an API key and a webhook secret, logging at DEBUG into a file, in text (or, with the
    indirect parameter "json", `--log-format json`). The library's workers in this process deliver from the same
    outbox, so they get the same webhook secret."""
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "TIDEBASE_DATABASE_URL": dsn, "TIDEBASE_LEASE_MS": "60000", "TIDEBASE_RECONCILE_MS": "200",
           "TIDEBASE_WEBHOOK_MAX_ATTEMPTS": "3", "TIDEBASE_API_KEY": keys.new("api-key"),
           "TIDEBASE_WEBHOOK_SECRET": keys.new("webhook-secret")}
    monkeypatch.setenv("TIDEBASE_WEBHOOK_SECRET", keys.by_label["webhook-secret"])
    fmt = ["--log-format", "json", "--log-level", "DEBUG"] if getattr(request, "param", "text") == "json" else []
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", SERVE_AT_DEBUG, "serve", "--port", str(port), *fmt], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", proc, dsn, keys.by_label["api-key"])
    wait_for(lambda: proc.poll() is not None or _ready(server))
    assert proc.poll() is None, log.read_text()
    yield server, log
    stop_server(server)


def _ready(server: Server) -> bool:
    try:
        return httpx.get(server.url + "/health/ready", headers={"authorization": f"Bearer {server.api_key}"},
                         timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _template(path: str) -> str:
    """A path template with the app's parameter names (the OpenAPI document's are camelCase) and no convertors."""
    return re.sub(r"{(\w+):\w+}", r"{\1}", path.replace("{runId}", "{run_id}").replace("{gateId}", "{gate_id}"))


def get_routes() -> dict[str, set[str]]:
    """Every GET path template of the app's routing table, mounted routers included, as {path: its parameters}."""

    def walk(app: Any, prefix: str) -> Iterator[str]:
        while not hasattr(app, "routes") and hasattr(app, "app"):  # middleware wraps the routers
            app = app.app
        for route in getattr(app, "routes", []):
            if isinstance(route, Mount):
                yield from walk(route.app, prefix + route.path)
            elif isinstance(route, Route) and "GET" in (route.methods or ()):
                yield prefix + route.path

    return {_template(p): set(re.findall(r"{(\w+)}", _template(p))) for p in walk(create_app(Settings()), "")}


class World:
    """What the scenario created: run and gate ids by label, the channel ids of each run, the gates with inline
    channels."""

    def __init__(self) -> None:
        self.run: dict[str, str] = {}
        self.gate: dict[str, str] = {}
        self.run_channels: dict[str, list[str]] = {}
        self.inline_gates: set[str] = set()

    @property
    def runs(self) -> list[str]:
        return list(self.run.values())

    @property
    def gates(self) -> list[str]:
        return list(self.gate.values())


def build(http: httpx.Client, tide: Tidebase, receiver: Receiver, keys: Secrets) -> World:
    """Runs, channels, gates, deliveries and webhooks over HTTP and in the library (see the module docstring)."""
    world = World()
    echo, busy, nobody = receiver.url + "/echo", receiver.url + "/busy", closed_url()

    def ok(response: httpx.Response) -> Any:
        assert response.status_code in (200, 201, 202), response.text
        return response.json()

    # over HTTP: a run with two channels, a recovery webhook, steps, state, usage, two gates and a child
    a = ok(http.post("/runs/http-agent", json={"recoveryWebhook": echo, "channels": [
        {"url": echo, "secret": keys.new("run-channel-echo")},
        {"url": busy, "secret": keys.new("run-channel-busy"), "events": ["gate.created", "gate.resolved"]}]}))["run"]
    world.run["agent"] = a["id"]
    owner = ok(http.post(f"/runs/{a['id']}/begin"))["leaseOwner"]
    step = ok(http.post(f"/runs/{a['id']}/steps/begin", json={"name": "research", "inputHash": "h",
                                                                "leaseOwner": owner}))["step"]
    ok(http.post(f"/runs/{a['id']}/steps/{step['id']}/complete", json={"leaseOwner": owner, "output": "facts"}))
    ok(http.put(f"/runs/{a['id']}/state", json={"value": {"progress": 0.5}}))
    ok(http.post(f"/runs/{a['id']}/snapshots", json={"label": "draft", "state": {"d": 1}}))
    ok(http.post(f"/runs/{a['id']}/usage", json={"stepId": step["id"], "inputTokens": 3, "outputTokens": 4}))
    approve = ok(http.post(f"/runs/{a['id']}/gates/begin", json={"name": "approve", "prompt": "Ship?", "channels": [
        {"url": echo, "secret": keys.new("inline-channel-echo")}]}))["gate"]
    keys.add("token-http-inline", approve["resolveToken"])
    assert ok(http.post(f"/runs/{a['id']}/gates/begin", json={"name": "approve", "prompt": "Ship?"}))[
        "gate"]["resolveToken"] is None  # a rejoining caller never gets it
    second = ok(http.post(f"/runs/{a['id']}/gates/begin", json={"name": "second", "prompt": "Sure?"}))["gate"]
    keys.add("token-http-run-channels", second["resolveToken"])
    world.gate |= {"approve": approve["id"], "second": second["id"]}
    world.inline_gates.add(approve["id"])
    ok(http.post(f"/runs/{a['id']}/gates/{approve['id']}/resolve", json={
        "decision": "approved", "token": approve["resolveToken"], "actor": "ann"}))
    child = ok(http.post(f"/runs/{a['id']}/children", json={"name": "sub", "workflowName": "sub", "channels": [
        {"url": echo, "secret": keys.new("child-channel")}]}))["run"]
    world.run["child"] = child["id"]
    ok(http.post(f"/runs/{a['id']}/complete", json={"leaseOwner": owner, "result": {"done": True}}))

    # over HTTP: a run whose channels cannot be reached, with a gate, then cancelled
    b = ok(http.post("/runs/http-doomed", json={"recoveryWebhook": nobody, "channels": [
        {"url": nobody, "secret": keys.new("run-channel-unreachable")}]}))["run"]
    world.run["doomed"] = b["id"]
    ok(http.post(f"/runs/{b['id']}/begin"))
    hold = ok(http.post(f"/runs/{b['id']}/gates/begin", json={"name": "hold", "prompt": "Wait?", "channels": [
        {"url": nobody, "secret": keys.new("inline-channel-unreachable")}]}))["gate"]
    keys.add("token-http-unreachable", hold["resolveToken"])
    world.gate["hold"] = hold["id"]
    world.inline_gates.add(hold["id"])
    ok(http.post(f"/runs/{b['id']}/cancel", json={"reason": "test", "actor": "bob"}))

    # over HTTP: a run that fails for good (a run.resume signed with the server's webhook secret), a queued run
    c = ok(http.post("/runs/http-healing", json={"recoveryWebhook": echo}))["run"]
    world.run["healing"] = c["id"]
    c_owner = ok(http.post(f"/runs/{c['id']}/begin"))["leaseOwner"]
    ok(http.post(f"/runs/{c['id']}/fail", json={"leaseOwner": c_owner, "error": {"message": "boom"}}))
    q = ok(http.post("/queues/mail/enqueue", json={"workflowName": "http-queued", "recoveryWebhook": echo,
                                                   "channels": [{"url": echo, "secret": keys.new("queue-channel")}]}))
    world.run["queued"] = q["run"]["id"]

    # in the library: a queued run with a webhook and a recovery secret that suspends at a gate with its own channel,
    # resolved with its token; and a run that fails for good with a recovery secret
    def approval(run: Any, input: Any) -> Any:
        gate = run.gates.begin("lib-approve", "Publish?", channels=[
            {"url": echo, "secret": keys.by_label["library-gate-channel"]}])
        if gate.token:
            keys.add("token-library", gate.token)
        run.step("draft", lambda: "text")
        return run.gate("lib-approve", suspend=True).decision

    def failing(run: Any, input: Any) -> Any:
        raise RuntimeError("no luck")

    keys.new("library-gate-channel")
    tide.workflow("lib-approval")(approval)
    tide.workflow("lib-failing")(failing)
    lib = tide.enqueue("lib-approval", webhooks=[{"url": echo, "secret": keys.new("library-run-channel")}],
                       recovery_webhook={"url": echo, "secret": keys.new("library-recovery-secret")})
    bad = tide.enqueue("lib-failing", recovery_webhook={"url": echo, "secret": keys.new("library-failing-recovery")})
    tide.work(burst=True, poll_interval=0.02, reconcile=False)
    assert (tide.runs.get(lib.id).status, tide.runs.get(bad.id).status) == ("waiting", "failed")
    world.run |= {"library": lib.id, "failing": bad.id}
    [lib_gate] = tide.gates.list(run_id=lib.id)
    world.gate["library"] = lib_gate.id
    world.inline_gates.add(lib_gate.id)
    tide.gates.resolve(lib_gate.id, "approved", actor="lib", token=keys.by_label["token-library"])

    for run_id in world.runs:
        detail = ok(http.get(f"/runs/{run_id}"))
        world.run_channels[run_id] = [ch["id"] for ch in detail["channels"]]
        assert all(isinstance(i, str) and i for i in world.run_channels[run_id])
    return world


def settled(dsn: str) -> bool:
    """True once every delivery and webhook has had a try or was closed without one."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM tidebase.outbox o WHERE o.status = 'pending' AND NOT EXISTS ("
                           "SELECT 1 FROM tidebase.outbox_attempts a WHERE a.outbox_id = o.id)").fetchone()
    return row == (0,)


def get_everything(http: httpx.Client, world: World) -> dict[str, str]:
    """Every GET route of the app and of its OpenAPI document, with each path parameter filled by every id of the
    scenario (and every enum value of its query parameters); the SSE route is read separately."""
    spec = http.get("/openapi.json").json()
    gets = {_template(p): ops["get"] for p, ops in spec["paths"].items() if "get" in ops}
    templates = {t: set(re.findall(r"{(\w+)}", t)) for t in gets} | get_routes()
    fill = {"run_id": world.runs, "gate_id": world.gates, "queue": ["mail", "default"], "name": ["none"],
            "part": ["webhooks", "gates"], "rest": ["x"], "a": ["x"], "r": ["x"], "g": ["x"]}
    answers: dict[str, str] = {}
    for template, params in sorted(templates.items()):
        if template == "/runs/{run_id}/events":  # a stream that never ends: read_streams reads it
            continue
        unknown = params - set(fill)
        assert not unknown, f"GET {template}: no ids for {unknown}; add them to `fill`"
        names = sorted(params)
        queries: list[dict[str, str]] = [{}, *({q["name"]: v} for q in gets.get(template, {}).get("parameters", [])
                                              if q["in"] == "query" for v in q["schema"].get("enum", []))]
        for values in itertools.product(*(fill[n] for n in names)):
            path = template.format(**dict(zip(names, values, strict=True)))
            for query in queries:
                response = http.get(path, params=query)
                answers[f"GET {path} {query} {response.status_code}"] = response.text + str(response.headers)
    assert any(k.startswith("GET /runs/") and k.endswith(" 200") for k in answers)
    return answers


def read_streams(server: Server, world: World) -> dict[str, str]:
    """The SSE stream of every run from its start to its last event; one stream authenticates with `?token=`."""
    streams: dict[str, str] = {}
    with server.client() as http:
        last = {run_id: http.get(f"/runs/{run_id}").json()["events"][-1]["seq"] for run_id in world.runs}
    bearer = {"authorization": f"Bearer {server.api_key}"}
    for i, run_id in enumerate(world.runs):
        url = f"{server.url}/runs/{run_id}/events" + (f"?token={server.api_key}" if i == 0 else "")
        lines: list[str] = []
        seq = None
        with httpx.stream("GET", url, headers={} if i == 0 else bearer, timeout=30) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                lines.append(line)
                seq = int(line[4:]) if line.startswith("id: ") else seq
                if seq == last[run_id] and line.startswith("data: "):
                    break
        streams[f"SSE {run_id}"] = "\n".join(lines)
        assert sum(line.startswith("data: ") for line in lines) == last[run_id]
    return streams


def run_cli(dsn: str, run_ids: list[str]) -> dict[str, str]:
    """`tidebase runs ls/show/events` (for `run_ids`) and `gates ls` (of every status) as subprocesses, as tables and
    as JSON."""
    commands = [["runs", "ls"], *(["gates", "ls", "--status", s] for s in ("pending", "approved", "canceled"))]
    commands += [["runs", c, run_id] for run_id in run_ids for c in ("show", "events")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEBASE_")}
    procs = {" ".join([*c, *j]): subprocess.Popen(
        [sys.executable, "-m", "tidebase", *c, "--dsn", dsn, *j], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT) for c in commands for j in ([], ["--json"])}
    done = {name: (proc.communicate(timeout=60)[0].decode(), proc.returncode) for name, proc in procs.items()}
    assert [(name, out) for name, (out, code) in done.items() if code != 0] == []
    assert all(any(run_id in out for out, _ in done.values()) for run_id in run_ids)
    return {f"tidebase {name}": out for name, (out, _) in done.items()}


def read_library(tide: Tidebase, world: World) -> dict[str, str]:
    """What the library's readers return for every run and gate."""
    texts: dict[str, str] = {"runs.list": repr(tide.runs.list(limit=1000))}
    for run_id in world.runs:
        texts[f"library {run_id}"] = repr([tide.runs.get(run_id), tide.runs.events(run_id),
                                           tide.runs.deliveries(run_id), tide.runs.recoveries(run_id),
                                           tide.gates.list(status=None, run_id=run_id)])
    for gate_id in world.gates:
        texts[f"library {gate_id}"] = repr(tide.gates.get(gate_id))
    return texts


@pytest.mark.parametrize("debug_server", ["text", "json"], indirect=True)
def test_no_answer_stream_cli_output_or_log_line_holds_a_secret(
    debug_server: tuple[Server, Path], receiver: Receiver, keys: Secrets, dsn: str, caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    """No resolve token, channel or recovery secret, webhook secret or API key appears in any GET answer, SSE stream,
    library read, CLI output or log record, although every one of them was used; in the JSON log format too, where
    every line the server prints is one JSON object (its fields included in the search)."""
    server, log = debug_server
    caplog.set_level(logging.DEBUG, logger="tidebase")
    tide = Tidebase(dsn, lease_seconds=2)
    try:
        with server.client() as http:
            world = build(http, tide, receiver, keys)
            wait_for(lambda: settled(dsn))
            # every gate.created delivery to a reachable channel arrived, with its token (so the test has teeth)
            tokens = {keys.by_label[k] for k in ("token-http-inline", "token-http-run-channels", "token-library")}
            wait_for(lambda: tokens <= {m["payload"]["gate"]["resolveToken"] for _, body, _ in list(receiver.received)
                                        for m in [json.loads(body)] if m.get("type") == "gate.created"})
            wait_for(lambda: all(d["attempts"] > 0 for run_id in world.runs
                                 for d in http.get(f"/runs/{run_id}").json()["channelDeliveries"]))
            for label in ("webhook-secret", "run-channel-echo", "inline-channel-echo", "library-gate-channel",
                          "library-run-channel", "library-failing-recovery"):
                assert receiver.signed_with(keys.by_label[label]), f"nothing was signed with {label}"
            texts = get_everything(http, world)
        texts |= read_streams(server, world)
        texts |= read_library(tide, world)
        texts |= run_cli(dsn, [world.run[k] for k in ("agent", "doomed", "library", "failing")])
    finally:
        tide.close()
    detail = httpx.get(f"{server.url}/runs/{world.run['agent']}", headers={"authorization": f"Bearer {server.api_key}"})
    stop_server(server)  # its shutdown is logged too
    texts["server log"] = log.read_text(errors="replace")
    assert "GET /runs/" in texts["server log"] and "token=[redacted]" in texts["server log"]
    if request.node.callspec.params["debug_server"] == "json":
        docs = [json.loads(line) for line in texts["server log"].splitlines() if line.strip()]
        assert any(d["logger"] == "uvicorn.access" for d in docs)
        assert any(d["logger"].startswith("tidebase") for d in docs)
    records = [r for r in caplog.records if r.name.startswith("tidebase")]
    assert records, "the library logged nothing"
    texts["library log"] = "\n".join(logging.Formatter().format(r) for r in records)  # tracebacks included
    texts["library log, json"] = "\n".join(JsonFormatter().format(r) for r in records)  # every field included
    leaks = keys.found_in(texts)
    assert leaks == [], "\n".join(f"{label} in {where}" for where, label in leaks)
    created = [d for d in detail.json()["channelDeliveries"] if d["eventType"] == "gate.created"]
    assert created and all(d["payload"]["gate"]["resolveToken"] is None for d in created)
    assert any(d["status"] == "delivered" and d["responseBody"] for d in created)  # the echo, without the token


def test_channel_id_is_the_run_channels_id_and_null_for_inline_gate_channels(
    debug_server: tuple[Server, Path], receiver: Receiver, keys: Secrets, dsn: str,
) -> None:
    """Every channel delivery of a run names the run channel it goes to by the id the run detail lists, over HTTP and in
    the library's listing; deliveries to a gate's inline channels have a null channelId."""
    server, _ = debug_server
    tide = Tidebase(dsn, lease_seconds=2)
    try:
        with server.client() as http:
            world = build(http, tide, receiver, keys)
            for run_id in world.runs:
                detail = http.get(f"/runs/{run_id}").json()
                channels = set(world.run_channels[run_id])
                library = {d["public_id"]: d.get("channel_id") for d in tide.runs.deliveries(run_id)}
                for d in detail["channelDeliveries"]:
                    assert library[d["id"]] == d["channelId"]
                    if d["gateId"] in world.inline_gates and d["channelId"] is None:
                        continue
                    assert d["channelId"] in channels, (run_id, d)
            # deliveries of gate.created: one per run channel whose events match, plus one per inline channel
            for run, gate, expected in (("agent", "approve", 3), ("agent", "second", 2), ("doomed", "hold", 2),
                                        ("library", "library", 2)):
                run_id, gate_id = world.run[run], world.gate[gate]
                ids = [d["channelId"] for d in http.get(f"/runs/{run_id}").json()["channelDeliveries"]
                       if d["gateId"] == gate_id and d["eventType"] == "gate.created"]
                inline = 1 if gate_id in world.inline_gates else 0
                assert len(ids) == expected and ids.count(None) == inline, (gate_id, ids)
                assert sorted(i for i in ids if i is not None) == sorted(world.run_channels[run_id])
    finally:
        tide.close()


def test_dispatcher_log_never_quotes_an_outbox_row(
    dsn: str, receiver: Receiver, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture,
) -> None:
    """A database error while recording a try is logged by its primary message only: its DETAIL, which quotes the
    failing outbox row (a gate.created body with the resolve token, the channel secret), stays out of the log."""
    caplog.set_level(logging.DEBUG, logger="tidebase")
    channel_secret = "chan-" + secrets.token_hex(12)
    tide = Tidebase(dsn)
    tokens: list[str | None] = []

    def approval(run: Any, input: Any) -> Any:
        tokens.append(run.gates.begin("g", "Ship?", channels=[{"url": receiver.url + "/echo",
                                                                "secret": channel_secret}]).token)
        return run.gate("g", suspend=True)

    with pytest.raises(RunSuspended):
        tide.run("w", approval)
    tide.close()
    # recording a 200 answer now violates a constraint, whose DETAIL quotes the whole outbox row
    db.execute("ALTER TABLE tidebase.outbox ADD CONSTRAINT no_200 CHECK (http_status IS DISTINCT FROM 200) NOT VALID")
    dispatcher = Dispatcher(dsn, poll_interval=0.02)
    dispatcher.start()
    try:
        wait_for(lambda: any("could not be recorded" in r.getMessage() for r in caplog.records))
    finally:
        dispatcher.stop()
    [token] = tokens
    assert token and any(token.encode() in body for _, body, _ in receiver.received)  # the try did carry it
    assert "no_200" in caplog.text
    assert token not in caplog.text and channel_secret not in caplog.text


def test_deliveries_name_their_channel_and_keep_the_token_only_in_bodies(dsn: str, receiver: Receiver) -> None:
    """A gate.created delivery to a run channel names that channel (none for the gate's inline channel), and the
    resolve token is in the delivery bodies only: not in a source, an echoed answer or an error, before or after a
    try; a delivery rendered later still carries the token to its receiver, and the library lists neither."""
    token = secrets.token_hex(16)
    run_hooks = webhooks_param([{"url": receiver.url + "/echo", "secret": "run-secret"}])
    inline = json.dumps([{"type": "webhook", "url": receiver.url + "/echo/inline", "events": [], "secret": "g-secret"}])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT * FROM tidebase.create_run('r1', 'wf', '{}', 'h', true, '{}', NULL, 60000, %s, NULL)",
                     (run_hooks,))
        conn.execute("SELECT * FROM tidebase.begin_gate('r1', NULL, 'g', 'gate_1', 'Ship?', '{}', 'hash', NULL, "
                     "%s, %s)", (inline, token))
        [(channel_id,)] = conn.execute("SELECT h ->> 'id' FROM tidebase.runs, jsonb_array_elements(webhooks) h "
                                       "WHERE id = 'r1'").fetchall()
        # the inline channel's delivery waits; the run channel's is tried now, and its receiver echoes the token
        conn.execute("UPDATE tidebase.outbox SET next_attempt_at = now() + interval '1 hour' WHERE url LIKE '%inline'")
        dispatcher = Dispatcher(dsn)
        wait_for(lambda: (dispatcher.deliver_once(conn), conn.execute(
            "SELECT status FROM tidebase.outbox WHERE url NOT LIKE '%inline'").fetchone() == ("delivered",))[1])
        assert any(token.encode() in body for path, body, _ in receiver.received if not path.endswith("inline"))
        rows = conn.execute("SELECT url LIKE '%inline', channel_id, concat_ws('|', source, response_body, last_error),"
                            " body FROM tidebase.outbox ORDER BY id").fetchall()
        assert [(r[0], r[1]) for r in rows] == [(False, channel_id), (True, None)]
        assert channel_id.startswith("chan_")
        assert all(token not in r[2] and token in r[3] for r in rows)
        conn.execute("UPDATE tidebase.outbox SET next_attempt_at = now() WHERE url LIKE '%inline'")
        wait_for(lambda: (dispatcher.deliver_once(conn), conn.execute(
            "SELECT status FROM tidebase.outbox WHERE url LIKE '%inline'").fetchone() == ("delivered",))[1])
        dispatcher.stop()
        after = conn.execute("SELECT string_agg(concat_ws('|', source, response_body, last_error), '|') "
                             "FROM tidebase.outbox").fetchone()
        assert after is not None and token not in (after[0] or "")
    [(_, body, headers)] = [r for r in receiver.received if r[0].endswith("inline")]
    assert json.loads(body)["payload"]["gate"]["resolveToken"] == token
    assert receiver.signed_with("g-secret") and headers["x-tidebase-event"] == "gate.created"
    tide = Tidebase(dsn)
    try:
        listed = tide.runs.deliveries("r1")
    finally:
        tide.close()
    assert len(listed) == 2 and token not in repr(listed) and "secret" not in {k for d in listed for k in d}
