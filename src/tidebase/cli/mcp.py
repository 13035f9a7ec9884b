"""`tidebase mcp`: the MCP server on stdio, for an assistant that starts it as a subprocess (docs/mcp.md).

The database is the one every command uses (`--dsn`, else TIDEBASE_DATABASE_URL, DATABASE_URL, else the embedded
PostgreSQL), with the rest of `Settings.from_env()`. Standard output carries the protocol only; anything else goes to
standard error. Without the `mcp` extra the command says how to install it and exits 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from tidebase.cli.output import error
from tidebase.mcp import INSTALL_HINT, available
from tidebase.settings import Settings


def configure_mcp(sub: Any) -> None:
    """Adds `mcp` to the `tidebase` subcommands."""
    p = sub.add_parser("mcp", help="serve the MCP tools (runs, steps, state, events, gates, forks) on stdio")
    p.add_argument("--dsn", help="database (default: TIDEBASE_DATABASE_URL, DATABASE_URL, else embedded)")
    p.set_defaults(func=run_mcp)


def run_mcp(args: argparse.Namespace) -> int:
    """Serves the tools on stdin/stdout until the client closes them; 0 then, 2 without the `mcp` extra."""
    if not available():
        error(INSTALL_HINT)
        return 2
    try:
        import anyio  # noqa: PLC0415 - a dependency of the mcp extra

        from tidebase.mcp.tools import create_server  # noqa: PLC0415
    except ImportError as exc:  # an `mcp` package other than the SDK version of the extra
        error(f"{INSTALL_HINT} (the installed `mcp` cannot be used: {exc})")
        return 2
    settings = Settings.from_env().replace(database_url=args.dsn)
    anyio.run(_serve, settings, create_server)
    return 0


async def _serve(settings: Settings, create_server: Callable[..., Any]) -> None:
    from tidebase.client_async import AsyncTidebase  # noqa: PLC0415 - only this command needs it
    from tidebase.mcp.views import Redactor  # noqa: PLC0415

    tide = AsyncTidebase(settings=settings)  # connects on the first tool call
    try:
        server = create_server(tide, public_url=settings.resolved_public_url,
                               redactor=Redactor.from_settings(settings))
        await server.run_stdio_async()
    finally:
        await tide.close()
