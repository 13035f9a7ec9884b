"""Webhook channels and recovery webhooks as the caller gives them, checked and put in their stored form.

A run's `webhooks` column holds its channels (`{"id": "chan_…", "url", "secret"?, "events": [...], "kind":
"channel"}`; no events means every type); a recovery webhook is a URL or `{"url", "secret"}`. Every door (the
library's enqueue and gates, the HTTP API) encodes them here, so both store the same form. No I/O.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from tidebase.errors import InvalidArgument


def check_url(url: Any, what: str = "webhook url") -> str:
    """An absolute http(s) URL of at most 2048 characters; InvalidArgument otherwise."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2048 or " " in url:
        raise InvalidArgument(f"{what} must be an absolute http(s) URL of at most 2048 characters, got {url!r}")
    return url


def webhooks_param(webhooks: list[dict[str, Any]] | None) -> str:
    """The run's `webhooks` column: channel entries ({"url", "secret"?, "events": [...]}, empty events = every
    type), each with a `chan_` id."""
    hooks: list[dict[str, Any]] = []
    for channel in webhooks or []:
        check_url(channel.get("url"))
        hooks.append({"id": "chan_" + uuid.uuid4().hex, "events": ["*"], **channel, "kind": "channel"})
    return json.dumps(hooks)


def recovery_param(recovery_webhook: Any) -> tuple[str | None, str | None]:
    """(url, secret) of a recovery webhook given as a URL or as {"url", "secret"}."""
    if recovery_webhook is None:
        return None, None
    hook = {"url": recovery_webhook} if isinstance(recovery_webhook, str) else dict(recovery_webhook)
    secret = hook.get("secret")
    return check_url(hook.get("url"), "recovery webhook url"), secret if isinstance(secret, str) else None
