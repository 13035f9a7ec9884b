"""`tidebase serve`: the HTTP + SSE server (wire-api.md), a thin ASGI layer over `tidebase.wire_async`."""

from __future__ import annotations

from tidebase.server.app import Settings, create_app

__all__ = ["Settings", "create_app"]
