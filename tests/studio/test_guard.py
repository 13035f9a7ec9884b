"""The Studio's guard and sessions without a browser: open mode answers only loopback, the API's bearer check is
lifted for /studio paths only, and session cookies cannot be forged, outlive their expiry or survive a key change.
These run the app in process (no browser): the peer address is the test's to choose."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette's test client touches a deprecated anyio alias at import
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient

from tidebase.server.app import create_app
from tidebase.server.studio.session import Sessions, load_secret
from tidebase.settings import Settings


def client(dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, api_key: str | None = None,
           peer: str = "127.0.0.1") -> TestClient:
    """The real app over a real database, in process, with the peer address of our choosing."""
    monkeypatch.setenv("TIDEBASE_HOME", str(tmp_path))
    app = create_app(Settings(database_url=dsn, api_key=api_key, reconciler=False))
    return TestClient(app, base_url="http://127.0.0.1:7373", client=(peer, 40000), follow_redirects=False)


def test_open_mode_refuses_peers_that_are_not_loopback(dsn: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an API key the Studio answers 403 to a peer off loopback, and to a loopback peer that names another
    host (DNS rebinding)."""
    with client(dsn, tmp_path, monkeypatch, peer="10.1.2.3") as http:
        far = http.get("/studio/")
    with client(dsn, tmp_path, monkeypatch) as http:
        rebound = http.get("/studio/", headers={"host": "evil.example:7373"})
        static = http.get("/studio/static/studio.css")
    assert (far.status_code, rebound.status_code) == (403, 403)
    assert "loopback" in far.text
    assert static.status_code == 200 and "set-cookie" in static.headers  # loopback + loopback host: admitted


def test_bearer_exemption_covers_only_studio_paths(dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a key, /studio asks for a session (a redirect to its login), while a path that only decodes to /studio
    and every API path still need the bearer key."""
    with client(dsn, tmp_path, monkeypatch, api_key="k-123") as http:
        studio = http.get("/studio/runs/x")
        sneaky = http.get("/%73tudio/")
        api = http.get("/runs")
        root = http.get("/")
    assert studio.status_code == 303 and studio.headers["location"].startswith("/studio/login?next=")
    assert (sneaky.status_code, api.status_code) == (401, 401)
    assert root.status_code == 307 and root.headers["location"] == "/studio/"


def test_session_cookies_cannot_be_forged_expired_or_reused_after_a_key_change(tmp_path: Path) -> None:
    """A cookie verifies only unaltered, before its expiry, and under the same key and secret; the CSRF token is
    the session's own."""
    secret = load_secret(tmp_path)
    assert load_secret(tmp_path) == secret  # kept in the home folder: the same after a restart
    assert (tmp_path / "studio-secret").stat().st_mode & 0o077 == 0
    sessions = Sessions("key-1", secret)
    session, cookie = sessions.issue("ana", now=1000.0)
    assert sessions.read(cookie, now=1001.0) == session
    body, mac = cookie.split(".")
    assert sessions.read(body + "." + mac[::-1], now=1001.0) is None
    assert sessions.read(("A" if body[0] != "A" else "B") + body[1:] + "." + mac, now=1001.0) is None
    assert sessions.read(cookie, now=session.expires + 1) is None
    assert Sessions("key-2", secret).read(cookie, now=1001.0) is None
    assert Sessions("key-1", b"other secret").read(cookie, now=1001.0) is None
    other, _ = sessions.issue("bo", now=1000.0)
    assert sessions.csrf_ok(session, sessions.csrf(session))
    assert not sessions.csrf_ok(session, sessions.csrf(other))
    assert not sessions.key_matches("key-") and sessions.key_matches("key-1")
