"""`tidebase serve`: the HTTP + SSE server (docs/http-api.md), a thin ASGI layer over `tidebase.server.http_engine`."""

from __future__ import annotations

from tidebase.server.app import create_app
from tidebase.settings import Settings

__all__ = ["Settings", "create_app"]
