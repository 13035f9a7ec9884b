"""The MCP door: runs, steps, state, events, gates and forks for assistants (Claude Desktop, IDE agents), over the
Model Context Protocol (docs/mcp.md).

Two transports serve the same tools (`tidebase.mcp.tools.create_server`):

- stdio: `tidebase mcp` (`tidebase.cli.mcp`), one process per assistant, with the database settings of the other
  commands (`Settings.from_env()`, `--dsn`);
- streamable HTTP: the `/mcp` route of `tidebase serve` (`tidebase.mcp.http`), behind the server's API-key check.

The tools call the public library API (`AsyncTidebase`: `tide.runs`, `tide.gates`, `tide.insights`); nothing here
holds SQL. What they return is rendered by `tidebase.mcp.views`, which bounds sizes and redacts secrets.

The `mcp` SDK is an optional dependency (`pip install "tidebase-postgres[mcp]"`): this package and `views` import
without it; `tools` and the running parts of `http` import it when used. `available()` says whether it is there.
"""

from __future__ import annotations

import importlib.util

INSTALL_HINT = 'the MCP server needs the `mcp` extra: pip install "tidebase-postgres[mcp]"'


def available() -> bool:
    """True when the `mcp` SDK can be imported (the `mcp` extra is installed)."""
    try:
        return importlib.util.find_spec("mcp") is not None
    except (ImportError, ValueError):  # a broken or blocked installation counts as absent
        return False


__all__ = ["INSTALL_HINT", "available"]
