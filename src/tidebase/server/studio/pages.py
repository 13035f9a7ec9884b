"""What every Studio page shares: the library handle, the Jinja2 environment and its filters, and the error page.

Pages read through the public library API (`AsyncTidebase` over the server's own pool: the same statements as any
library user, no second data path) and render server-side. A library error becomes an HTML page with the status of
the API's error table (`server/errors.py`), so the Studio and the API answer the same refusal the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from tidebase._version import __version__
from tidebase.client_async import AsyncTidebase
from tidebase.errors import TidebaseError
from tidebase.server.common import services
from tidebase.server.errors import lookup
from tidebase.server.studio import jsonview
from tidebase.server.studio.guard import session_of
from tidebase.server.studio.session import Sessions

STUDIO_KEY = "tidebase.studio"

@dataclass
class Studio:
    """The Studio's per-app state: sessions, settings, and the library handle opened on first use."""

    sessions: Sessions
    public_url: str
    lease_ms: int
    _tide: AsyncTidebase | None = field(default=None, repr=False)

    def tide(self, request: Request) -> AsyncTidebase:
        """The library over the server's pool (borrowed: closing it never closes the pool)."""
        if self._tide is None:
            self._tide = AsyncTidebase(services(request).wire.db.pool, lease_seconds=self.lease_ms / 1000)
        return self._tide


def studio(request: Request) -> Studio:
    value: Studio = request.scope[STUDIO_KEY]
    return value


def tide(request: Request) -> AsyncTidebase:
    return studio(request).tide(request)


def ts(value: datetime | None) -> Markup:
    """A timestamp as `<time>`, in UTC to the second."""
    if value is None:
        return Markup('<span class="muted">—</span>')
    utc = value.astimezone(UTC)
    return Markup('<time datetime="{}">{}</time>').format(utc.isoformat(), utc.strftime("%Y-%m-%d %H:%M:%S"))


def duration(seconds: float | None) -> str:
    """A human duration: `340 ms`, `4.2 s`, `3 min 4 s`, `2 h 5 min`, `3 d 4 h`."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def between(start: datetime | None, end: datetime | None) -> str:
    return "—" if start is None or end is None else duration((end - start).total_seconds())


def badge(status: str | None) -> Markup:
    """A status badge: its word, and a symbol and colour added by CSS (keyed on data-status), so a status never
    depends on colour alone."""
    if status is None:
        return Markup("")
    return Markup('<span class="badge" data-status="{0}">{1}</span>').format(status, status.replace("_", " "))


def number(value: int | float | Decimal | None) -> str:
    if value is None:
        return "—"
    return f"{value:,}"


def money(value: Decimal | float | None) -> str:
    if value is None:
        return "—"
    return f"${Decimal(value):,.4f}"


def rate(limit: int | None, window_s: float) -> str:
    """A claim rate cap as people say it: `30 / min`, `5 / s`, `100 / 10 s`; `unlimited` without a cap."""
    if limit is None:
        return "unlimited"
    unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(float(window_s))
    return f"{limit:,} / {unit}" if unit else f"{limit:,} / {duration(window_s)}"


def url_part(value: str) -> str:
    """A path segment: every reserved character escaped."""
    return quote(value, safe="")


def build_environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(ts=ts, duration=duration, badge=badge, number=number, money=money, q=url_part,
                       tree=jsonview.tree, compact=jsonview.compact, pretty=jsonview.pretty)
    env.globals.update(between=between, rate=rate, version=__version__)
    return env


ENV = build_environment()


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Renders `template` with the page's common context: the Studio's base path, the session and its CSRF token."""
    session = session_of(request.scope)
    context.setdefault("nav", "")
    page = ENV.get_template(template).render(
        base=request.scope.get("root_path", ""), session=session, csrf=studio(request).sessions.csrf(session),
        keyed=studio(request).sessions.keyed, request=request, **context)
    return HTMLResponse(page, status_code=status)


def fragment(request: Request, template: str, **context: Any) -> HTMLResponse:
    """Renders one part of a page (no layout), for the live parts that re-fetch themselves."""
    session = session_of(request.scope)
    html = ENV.get_template(template).render(base=request.scope.get("root_path", ""), session=session,
                                             csrf=studio(request).sessions.csrf(session), request=request, **context)
    return HTMLResponse(html)


def error_page(request: Request, exc: TidebaseError) -> HTMLResponse:
    status, code, message, _ = lookup(exc)
    detail = str(exc) if status < 500 else "The server could not answer; details are in its log."
    return render(request, "error.html", status=status, title=message.capitalize(), code=code, detail=detail)


Handler = Callable[[Request], Awaitable[Response]]


def page(handler: Handler) -> Handler:
    """Turns a library error raised by a Studio handler into an HTML error page."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except TidebaseError as exc:
            return error_page(request, exc)

    return wrapped
