"""What every handler shares: the app's services, body reading, path parameters and JSON answers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.requests import Request
from starlette.responses import JSONResponse

from tidebase.server.errors import HttpError, invalid
from tidebase.server.http_engine import AsyncWire
from tidebase.server.schemas import BODIES, parse_body, validate
from tidebase.server.sse import Doorbell


@dataclass
class Services:
    """What the lifespan opens: the protocol's operations, the doorbell and the settings handlers read."""

    wire: AsyncWire
    bell: Doorbell
    public_url: str
    keepalive_s: float


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


# A `%` that does not start a two-digit hex escape.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _decode(raw: str) -> str:
    """The text of a raw path segment (the request's bytes as latin-1, RawPath routing): percent-decoded, then read
    as UTF-8. ValueError says why when it is not valid percent-encoded UTF-8, or holds U+0000."""
    if _BAD_ESCAPE.search(raw):
        raise ValueError("is not valid percent-encoding")
    try:
        value = unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
    except UnicodeError:
        raise ValueError("is not percent-encoded UTF-8") from None
    if "\x00" in value:
        raise ValueError("must not contain U+0000")
    return value


def path(request: Request, name: str) -> str:
    """A path parameter, percent-decoded (routing matched the raw path, docs/http-api.md#names-and-paths); 400 when it
    is not valid percent-encoded UTF-8, or holds U+0000, which the database cannot store, so no object can have that
    name. Decoding is strict so that two different requests never name the same object."""
    try:
        return _decode(str(request.path_params[name]))
    except ValueError as exc:
        raise invalid(["path", name], str(exc)) from None


def path_or_none(request: Request, name: str) -> str | None:
    """The path parameter `name` as `path()` decodes it, or None when the route has no such parameter or it is
    invalid. Never raises: for the error handler, which must answer whatever the request held."""
    raw = request.path_params.get(name)
    if raw is None:
        return None
    try:
        return _decode(str(raw))
    except ValueError:
        return None


def query(request: Request, name: str) -> str | None:
    """A query parameter, refused (400) when it contains U+0000."""
    value = request.query_params.get(name)
    if value is not None and "\x00" in value:
        raise invalid(["query", name], "must not contain U+0000")
    return value


async def body(request: Request, schema: str) -> dict[str, Any]:
    """The validated body of the request for route schema `schema` (415 for a non-JSON body, 400 for a bad one)."""
    raw = await request.body()
    if raw.strip():
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise HttpError(415, "unsupported_media_type", "request body must be application/json")
    return validate(parse_body(raw), BODIES[schema])


def answer(data: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)
