"""Studio sessions: a signed cookie instead of the API key, and the CSRF token that goes with it.

The browser presents the API key once, on the login form. From then on it holds a session cookie: a small JSON
document (session id, the person's display name, expiry) followed by its HMAC-SHA256. The signing key is derived
from the API key and a server-side secret:

    signing key = HMAC-SHA256(secret, "tidebase-studio-session" || 0x00 || api key)

- The API key never reaches a page, a script or a cookie; a stolen cookie is not the key, and because the secret
  never leaves the server, a captured cookie cannot be used to test guesses of the key offline.
- Rotating the API key invalidates every session at once (the derived key changes).
- The secret is `TIDEBASE_STUDIO_SECRET` when set (give every replica the same value), else 32 random bytes kept in
  `studio-secret` (mode 0600) in the Tidebase home folder, created on first start: sessions survive a restart of the
  server at no cost. When that folder is not writable the secret lives in the process only, and a restart signs
  everyone out.
- Sessions are stateless, so they expire (12 hours after login) rather than being revoked one by one; logging out
  deletes the cookie. Deleting the secret file (or changing the key) ends every session.

The CSRF token is HMAC(signing key, "csrf" || session id): tied to the session, never stored. The login form, which
has no session yet, is protected by a double-submit nonce (a cookie and a form field that must match).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("tidebase.server")

COOKIE = "tb_studio"
LOGIN_COOKIE = "tb_studio_login"
TTL_S = 12 * 3600
SECRET_FILE = "studio-secret"  # noqa: S105 - the name of the file, not a secret
LOCAL_NAME = "local"


@dataclass(frozen=True)
class Session:
    """A signed-in person: `sid` is random per login, `name` is recorded as the actor of their decisions."""

    sid: str
    name: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_secret(home: Path | None, configured: str | None = None) -> bytes:
    """The server-side secret (see the module docstring): the configured one (`studio_secret` of the settings), else
    the file in `home`, created once (atomically: concurrent first starts agree on one), else a per-process random
    value."""
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    if home is not None:
        path = home / SECRET_FILE
        try:
            return bytes.fromhex(path.read_text("ascii").strip())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.warning("studio: cannot read %s (%s); sessions end when this process stops", path, exc)
            return secrets.token_bytes(32)
        try:
            home.mkdir(parents=True, exist_ok=True)
            temp = home / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
            try:
                os.link(temp, path)  # fails if another process created it first: theirs wins
            except FileExistsError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    temp.unlink()
            return bytes.fromhex(path.read_text("ascii").strip())
        except (OSError, ValueError) as exc:
            log.warning("studio: cannot keep a session secret in %s (%s); sessions end when this process stops",
                        home, exc)
    return secrets.token_bytes(32)


class Sessions:
    """Issues and verifies session cookies and CSRF tokens for one API key (None: open mode)."""

    def __init__(self, api_key: str | None, secret: bytes) -> None:
        material = b"tidebase-studio-session\x00" + (api_key or "").encode("utf-8", "surrogateescape")
        self._key = hmac.new(secret, material, hashlib.sha256).digest()
        self._digest = hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).digest() if api_key else None

    @property
    def keyed(self) -> bool:
        """True when an API key is configured (a login is required)."""
        return self._digest is not None

    def key_matches(self, presented: str) -> bool:
        """Constant-time comparison of SHA-256 digests: leaks neither the key nor its length."""
        if self._digest is None:
            return False
        candidate = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        return hmac.compare_digest(candidate, self._digest)

    def _mac(self, *parts: bytes) -> bytes:
        return hmac.new(self._key, b"\x00".join(parts), hashlib.sha256).digest()

    def issue(self, name: str, now: float | None = None) -> tuple[Session, str]:
        """A new session for `name` and its cookie value."""
        session = Session(secrets.token_hex(16), name, int((now or time.time()) + TTL_S))
        body = json.dumps({"v": 1, "sid": session.sid, "name": name, "exp": session.expires},
                          separators=(",", ":"), ensure_ascii=False).encode()
        return session, f"{_b64(body)}.{_b64(self._mac(b'session', body))}"

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session of a cookie value, or None when it is absent, forged, malformed or expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        body_text, mac_text = cookie.split(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(b"session", body)):
            return None
        try:
            data = json.loads(body)
            session = Session(str(data["sid"]), str(data["name"]), int(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > (now or time.time()) else None

    def csrf(self, session: Session) -> str:
        """The CSRF token of a session: every state-changing request carries it."""
        return _b64(self._mac(b"csrf", session.sid.encode()))

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf(session).encode())


def cookie_header(name: str, value: str, *, path: str, secure: bool, max_age: int) -> bytes:
    """A Set-Cookie value: HttpOnly, SameSite=Strict, scoped to the Studio's path, Secure behind https."""
    parts = [f"{name}={value}", f"Path={path}", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode("latin-1")
