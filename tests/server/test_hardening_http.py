"""The HTTP layer against broken or hostile clients, over real TCP against a real `tidebase serve` process: the key
guards `/health/ready`; a path parameter that cannot name anything gets a JSON 400 or 404 on every route, never a
5xx; and slow clients cannot hold connections (a body must arrive within `TIDEBASE_BODY_TIMEOUT_MS`, an idle
keep-alive connection is closed after `TIDEBASE_KEEPALIVE_TIMEOUT_MS`, an answer given before the body was read
closes the connection).

Requests are written on raw sockets: HTTP clients normalise the percent-encodings under test, and the connection
tests need to see exactly when the server closes.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from server_proc import Server, start_server, stop_server
from starlette.routing import Mount, Route

from fix_db import with_db
from tidebase.server.app import create_app
from tidebase.settings import Settings

KEY = "hardening-key"
BEARER = f"Bearer {KEY}"
BODY_TIMEOUT_S = 1.0
KEEPALIVE_S = 1.0
SLACK_S = 1.0  # scheduling and start-up jitter allowed on top of a timeout

# Not valid percent-encoded UTF-8, or U+0000: no object can have such a name, whatever the route.
INVALID = ["%00", "run%00id", "%ZZ", "%", "a%", "%4", "%C0%80", "%FF", "%ED%A0%80", "%E2%82"]
# Well-formed, but no name: control characters, and lengths past every limit.
UNUSABLE = ["%01", "%09", "a%0D%0Ab", "%1F", "%7F", "a" * 600, "b" * 20000]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float = 0.0
    json: Any = field(init=False)

    def __post_init__(self) -> None:
        try:
            self.json = json.loads(self.body) if self.body else None
        except ValueError:
            self.json = None


def request_bytes(method: str, target: str, body: bytes = b"", *, length: int | None = None,
                  key: bool = True, close: bool = False) -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: tidebase.test"]
    if key:
        head.append(f"Authorization: {BEARER}")
    if body or length is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(body) if length is None else length}"]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def read_answer(sock: socket.socket, timeout: float) -> Answer:
    """One answer (Content-Length or chunked), read within `timeout` seconds; the socket stays open."""
    t0 = time.monotonic()
    sock.settimeout(timeout)
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body, time.monotonic() - t0)


def seconds_until_closed(sock: socket.socket, timeout: float) -> float | None:
    """How long until the server closes `sock` (recv returns b""), or None if it is still open after `timeout`."""
    t0 = time.monotonic()
    sock.settimeout(timeout)
    try:
        extra = sock.recv(65536)
    except TimeoutError:
        return None
    assert extra == b"", f"unexpected bytes after the answer: {extra!r}"
    return time.monotonic() - t0


class RawClient:
    """Sends requests one at a time over one connection, opening a new one when the server closed the last."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def send(self, method: str, target: str, body: bytes = b"") -> Answer:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.sock.sendall(request_bytes(method, target, body))
        answer = read_answer(self.sock, 5)
        if answer.headers.get("connection", "").lower() == "close":
            self.close()
        return answer

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port_of(server)), timeout=10)


@pytest.fixture(scope="module")
def hardened(server_dsn: str, template_db: str) -> Iterator[Server]:
    """One keyed server for the module, with 1 s body and keep-alive timeouts (no test changes its database in a
    way another one reads)."""
    name = f"tidebase_t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    env = {"TIDEBASE_BODY_TIMEOUT_MS": str(int(BODY_TIMEOUT_S * 1000)),
           "TIDEBASE_KEEPALIVE_TIMEOUT_MS": str(int(KEEPALIVE_S * 1000)), "TIDEBASE_RECONCILER": "0"}
    srv = start_server(with_db(server_dsn, name), env=env, api_key=KEY)
    yield srv
    stop_server(srv)
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Endpoint:
    method: str
    template: str
    params: list[str]
    mounted: bool  # under a Mount (a UI such as the Studio answers in HTML), not a route of the JSON API


def routes_with_parameters() -> list[Endpoint]:
    """Every (method, route) of the app that has a path parameter, read from the app's own routing table (mounts
    included), so a route added later is covered without editing this test."""
    found: list[Endpoint] = []

    def routes_of(app: Any) -> list[Any]:
        while not hasattr(app, "routes") and hasattr(app, "app"):  # middleware wraps the router
            app = app.app
        return list(getattr(app, "routes", []))

    def walk(routes: list[Any], prefix: str, mounted: bool) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(routes_of(route.app), prefix + route.path, True)
            elif isinstance(route, Route) and "{" in prefix + route.path:
                template = prefix + route.path
                params = re.findall(r"{(\w+)(?::\w+)?}", template)
                found.extend(Endpoint(m, template, params, mounted) for m in sorted(route.methods or ()) if m != "HEAD")

    walk(routes_of(create_app(Settings())), "", False)
    return found


def fill(template: str, values: dict[str, str]) -> str:
    return re.sub(r"{(\w+)(?::\w+)?}", lambda m: values[m.group(1)], template)


def test_health_is_open_but_ready_requires_the_key(hardened: Server) -> None:
    """With a key set, /health answers anyone while /health/ready answers 401 without the key and 200 with it."""
    client = RawClient(port_of(hardened))
    try:
        sock = connect(hardened)
        sock.sendall(request_bytes("GET", "/health", key=False, close=True))
        assert read_answer(sock, 5).json["ok"] is True
        sock.close()
        for presented in (None, "Bearer wrong", f"Bearer {KEY}x"):
            sock = connect(hardened)
            auth = f"Authorization: {presented}\r\n" if presented else ""
            sock.sendall(f"GET /health/ready HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n".encode())
            denied = read_answer(sock, 5)
            sock.close()
            assert (denied.status, denied.json) == (401, {"error": "unauthorized", "code": "unauthorized"})
            assert denied.headers["www-authenticate"] == "Bearer"
        ready = client.send("GET", "/health/ready")
        assert (ready.status, ready.json) == (200, {"ok": True, "database": True})
    finally:
        client.close()


def test_unusable_path_parameters_get_a_json_400_or_404_on_every_route(hardened: Server) -> None:
    """Every API route with a path parameter answers 400 or 404 with the JSON error body, never a 5xx, for NUL,
    other control characters, invalid percent-encodings and overlong values in each of its parameters (a mounted
    route, which may answer in HTML, only never with a 5xx)."""
    routes = routes_with_parameters()
    names = {p for e in routes if not e.mounted for p in e.params}
    assert {"run_id", "step_id", "gate_id", "workflow", "queue", "name"} <= names, names
    cases = [(e, param, fill(e.template, {p: bad if p == param else "x" for p in e.params}))
             for e in routes for param in e.params for bad in INVALID + UNUSABLE]
    client = RawClient(port_of(hardened))
    failures = []
    try:
        for e, param, target in cases:
            try:
                got = client.send(e.method, target, b"{}" if e.method in ("POST", "PUT", "PATCH") else b"")
            except OSError as exc:  # the server stopped answering: report what came before
                failures.append((e.method, e.template, param, target[:40], repr(exc)))
                break
            error = got.json if isinstance(got.json, dict) else {}
            json_error = (got.status in (400, 404) and got.headers.get("content-type") == "application/json"
                          and isinstance(error.get("error"), str) and isinstance(error.get("code"), str))
            if not (got.status < 500 if e.mounted else json_error):
                failures.append((e.method, e.template, param, target[:40], f"{got.status} {got.body[:100]!r}"))
    finally:
        client.close()
    assert failures == []
    assert len([e for e in routes if not e.mounted]) >= 30  # the routing table was read, not an empty list


def test_invalid_percent_encoding_is_a_400_naming_the_parameter(hardened: Server) -> None:
    """A run id that is not valid percent-encoded UTF-8, or holds U+0000, is refused 400 with an issue on it."""
    client = RawClient(port_of(hardened))
    try:
        for bad in INVALID:
            got = client.send("GET", f"/runs/{bad}")
            assert got.status == 400, (bad, got.body)
            assert got.json["code"] == "invalid_request"
            assert [issue["path"] for issue in got.json["issues"]] == [["path", "run_id"]], bad
    finally:
        client.close()


def test_percent_encoded_utf8_names_still_decode(hardened: Server) -> None:
    """Strict decoding keeps valid names: `caf%C3%A9%2Fx` creates and reads back the workflow `café/x`."""
    client = RawClient(port_of(hardened))
    try:
        created = client.send("POST", "/runs/caf%C3%A9%2Fx", b"{}")
        assert created.status == 201, created.body
        assert created.json["run"]["workflowName"] == "café/x"
        run_id = created.json["run"]["id"]
        assert client.send("GET", f"/runs/{run_id}").json["run"]["workflowName"] == "café/x"
    finally:
        client.close()


def test_a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_is_closed(hardened: Server) -> None:
    """Headers announcing 1000 bytes followed by a few get 408 `request_timeout` once the body timeout has passed,
    and the server then closes the connection."""
    sock = connect(hardened)
    sock.sendall(request_bytes("POST", "/runs/slow", b'{"input": ', length=1000))
    answer = read_answer(sock, BODY_TIMEOUT_S + SLACK_S)
    assert answer.status == 408
    assert answer.json == {"error": "request body not received in time", "code": "request_timeout"}
    assert answer.headers["connection"] == "close"
    assert answer.elapsed >= BODY_TIMEOUT_S * 0.9  # the timeout, not a refusal of the request itself
    assert seconds_until_closed(sock, SLACK_S) is not None
    sock.close()


def test_fifty_slow_bodies_at_once_are_all_answered_408_and_closed(hardened: Server) -> None:
    """Fifty connections trickling a body at the same time are all answered 408 and closed within the body
    timeout plus slack, and the server answers a normal request afterwards."""
    socks = [connect(hardened) for _ in range(50)]
    for sock in socks:
        sock.sendall(request_bytes("POST", "/runs/slow", b'{"in', length=1000))
    t0 = time.monotonic()
    statuses, still_open = [], 0
    for sock in socks:
        statuses.append(read_answer(sock, max(0.1, t0 + BODY_TIMEOUT_S + SLACK_S - time.monotonic())).status)
        if seconds_until_closed(sock, max(0.1, t0 + BODY_TIMEOUT_S + SLACK_S - time.monotonic())) is None:
            still_open += 1
        sock.close()
    assert statuses == [408] * 50
    assert still_open == 0
    client = RawClient(port_of(hardened))
    try:
        assert client.send("GET", "/health/ready").status == 200
    finally:
        client.close()


def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(hardened: Server) -> None:
    """After an answer, a kept-alive connection on which nothing more arrives is closed by the server after
    `TIDEBASE_KEEPALIVE_TIMEOUT_MS` (1 s here, against a default of 5 s: `tidebase serve` applied the setting)."""
    sock = connect(hardened)
    sock.sendall(request_bytes("GET", "/health"))
    answer = read_answer(sock, 5)
    assert answer.status == 200 and "connection" not in answer.headers  # kept alive
    closed_after = seconds_until_closed(sock, KEEPALIVE_S + SLACK_S)
    sock.close()
    assert closed_after is not None
    assert closed_after >= KEEPALIVE_S * 0.5  # kept open for a while, as keep-alive promises


@pytest.mark.parametrize(("method", "target", "key"), [("POST", "/runs/x", False), ("GET", "/health", True)],
                         ids=["401-without-reading", "get-with-a-body"])
def test_an_answer_given_before_the_body_was_read_closes_the_connection(
        hardened: Server, method: str, target: str, key: bool) -> None:
    """An answer sent without reading the announced body (a 401, a GET handler) carries `connection: close` and
    the server closes the connection at once, instead of waiting for a body that may trickle forever."""
    sock = connect(hardened)
    sock.sendall(request_bytes(method, target, b'{"in', length=1000, key=key))
    answer = read_answer(sock, BODY_TIMEOUT_S / 2)
    assert answer.status == (401 if not key else 200)
    assert answer.headers["connection"] == "close"
    assert seconds_until_closed(sock, BODY_TIMEOUT_S / 2) is not None
    sock.close()


def test_a_complete_body_is_served_and_the_connection_kept(hardened: Server) -> None:
    """A body sent in two writes is served (201), and the connection stays usable for the next request."""
    sock = connect(hardened)
    body = json.dumps({"input": {"n": 1}}).encode()
    request = request_bytes("POST", "/runs/normal", body)
    sock.sendall(request[:-5])
    sock.sendall(request[-5:])
    created = read_answer(sock, 5)
    assert created.status == 201 and created.json["run"]["input"] == {"n": 1}
    assert "connection" not in created.headers
    sock.sendall(request_bytes("GET", f"/runs/{created.json['run']['id']}"))
    assert read_answer(sock, 5).json["run"]["workflowName"] == "normal"
    sock.close()
