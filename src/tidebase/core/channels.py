"""Webhook channels and recovery webhooks as the caller gives them, checked and put in their stored form.

A run's `webhooks` column holds its channels (`{"id": "chan_…", "kind": "channel", "type": "webhook", "url",
"secret"?, "events": [...]}`; no events means every delivered type of docs/http-api.md), in the form the SQL function
`tidebase.channel_entries` gives the specs passed here; a recovery webhook is a URL or `{"url", "secret"}`. Every door
(the library's enqueue and gates, the HTTP API) passes them through here, so both store the same form. No I/O.
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
    """The channel specs of a run's `webhooks` column ({"url", "secret"?, "events": [...]}, empty or absent events =
    every delivered type), each with a `chan_` id."""
    hooks: list[dict[str, Any]] = []
    for channel in webhooks or []:
        check_url(channel.get("url"))
        hooks.append({"id": "chan_" + uuid.uuid4().hex, **channel, "kind": "channel"})
    return json.dumps(hooks)


def recovery_param(recovery_webhook: Any) -> tuple[str | None, str | None]:
    """(url, secret) of a recovery webhook given as a URL or as {"url", "secret"}."""
    if recovery_webhook is None:
        return None, None
    hook = {"url": recovery_webhook} if isinstance(recovery_webhook, str) else dict(recovery_webhook)
    secret = hook.get("secret")
    return check_url(hook.get("url"), "recovery webhook url"), secret if isinstance(secret, str) else None
