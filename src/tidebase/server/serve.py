"""The `tidebase serve` command: parse arguments, build the app, run uvicorn."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import Any

from tidebase.errors import ConfigurationError
from tidebase.ops.logs import FORMATS, LEVELS, configure_logging
from tidebase.settings import Settings

LOOPBACK = "127.0.0.1"
log = logging.getLogger("tidebase.server")


class RedactTokens(logging.Filter):
    """Access logs never show `token=` values (docs/http-api.md#auth)."""

    _TOKEN = re.compile(r"(token=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._TOKEN.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                                for a in record.args)
        record.msg = self._TOKEN.sub(r"\1[redacted]", str(record.msg))
        return True


def add_serve_parser(subparsers: Any) -> None:
    """Registers `serve` on the CLI's subparsers; the command runs `run_serve(args)`."""
    parser = subparsers.add_parser("serve", help="run the HTTP + SSE server")
    parser.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default $PORT or 7373)")
    parser.add_argument("--dsn", default=None,
                        help="database (default: TIDEBASE_DATABASE_URL, DATABASE_URL, else embedded)")
    parser.add_argument("--log-format", choices=FORMATS, default=None,
                        help="text, or one JSON object per line (default: TIDEBASE_LOG_FORMAT, else text)")
    parser.add_argument("--log-level", type=str.upper, choices=LEVELS, default=None,
                        help="least important records printed on stderr (default: WARNING for text, INFO for json)")
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only this command needs the server stack

    from tidebase.server.app import create_app  # noqa: PLC0415

    settings = Settings.from_env().replace(port=args.port, database_url=args.dsn)
    port = settings.port
    host = args.host or LOOPBACK
    fmt = args.log_format or settings.log_format
    if fmt not in FORMATS:
        raise ConfigurationError(f"TIDEBASE_LOG_FORMAT={fmt!r} is not valid: it takes one of {', '.join(FORMATS)}")
    # text without --log-level: logging is left as it was (uvicorn's own lines, Python's default for the rest); json,
    # or an explicit level, routes every record, uvicorn's included, through one handler in that format
    configured = fmt == "json" or args.log_level is not None
    if configured:
        configure_logging(args.log_level or ("INFO" if fmt == "json" else "WARNING"), fmt)

    def say(level: int, text: str) -> None:
        if fmt == "json":  # every line on stderr is then one JSON object
            log.log(level, "%s", text)
        else:
            print(f"tidebase serve: {text}", file=sys.stderr, flush=True)

    if settings.api_key is None:
        say(logging.WARNING, f"open mode (TIDEBASE_API_KEY is not set): every route is open; binding to {host}")
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    say(logging.INFO, f"listening on http://{host}:{port}")
    options: dict[str, Any] = {"log_config": None} if configured else {}
    # uvicorn annotates timeout_keep_alive as whole seconds, but hands it to loop.call_later, which takes fractions.
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", timeout_graceful_shutdown=3,
                timeout_keep_alive=settings.keepalive_timeout_seconds, **options)  # type: ignore[arg-type]
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tidebase")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
