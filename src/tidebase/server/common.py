"""What every handler shares: the app's services, body reading, path parameters and JSON answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import JSONResponse

from tidebase.wire_async import AsyncWire

from .errors import HttpError, invalid
from .schemas import BODIES, parse_body, validate
from .sse import Doorbell


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


def path(request: Request, name: str) -> str:
    """A path parameter, percent-decoded (routing matched the raw path, §2.4); 400 when the database could not
    store it (U+0000), which also means no object can have that name."""
    value = unquote(str(request.path_params[name]))
    if "\x00" in value:
        raise invalid(["path", name], "must not contain U+0000")
    return value


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
