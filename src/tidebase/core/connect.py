"""How Tidebase connects: connection parameters that bound every wait, and connection errors that say what to fix.

Every connection the library opens (its pool, the migration session, the reconciler's, the server's doorbell, the
webhook dispatcher's) is made from `tuned_conninfo()`: the user's DSN plus defaults the user did not set, so that no
call can wait forever on a dead network path:

- `connect_timeout`: a host that does not answer the TCP handshake fails the attempt;
- TCP keepalives: an idle connection to a peer that vanished is noticed by the kernel;
- `tcp_user_timeout`: data sent and never acknowledged fails the connection;
- `statement_timeout` (server side): a statement of ours that runs too long is cancelled by the server.

None of those helps when something in the path keeps the TCP connection open but forwards nothing (a stalled
proxy or NAT): the kernel sees a healthy peer and the server never sees the query. `tidebase._deadline` covers that
case on the client side. The values are settings of `Tidebase(...)`; the DSN wins wherever it sets one.

`connect_error()` turns a failed first connection into a `DatabaseUnavailable` that names the target (host, port,
database, user; never the password), quotes the server's or the network's reason, and says what to do. This module
does no I/O.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tidebase.errors import ConfigurationError, DatabaseUnavailable

# Keepalive probes start after 15 s of silence and give up after 3 more unanswered ones 5 s apart: a vanished peer of
# an idle connection is noticed within about 30 s.
_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "15", "keepalives_interval": "5", "keepalives_count": "3"}
_SECRET_IN_URL = re.compile(r"(://[^:/@\s]*:)([^@\s]*)(@)")
_SECRET_IN_KV = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class Timeouts:
    """The bounds on waiting for the database, in seconds.

    `connect`: to establish a connection (per address tried). `statement`: how long one of the library's own
    statements may run before the server cancels it; None disables both that and the client-side deadline.
    """

    connect: float = 5.0
    statement: float | None = 30.0

    def __post_init__(self) -> None:
        if not self.connect > 0:
            raise ConfigurationError("connect_timeout must be a positive number of seconds")
        if self.statement is not None and not self.statement > 0:
            raise ConfigurationError("statement_timeout must be a positive number of seconds, or None")

    @property
    def deadline(self) -> float | None:
        """Seconds after which a client waiting for an answer abandons the connection: the statement timeout plus a
        margin for the server's own cancellation to arrive first (at most 15 s, so 30 s becomes 45 s)."""
        if self.statement is None:
            return None
        return self.statement + min(15.0, self.statement / 2)


def redact(text: str) -> str:
    """`text` with any password of a DSN (URL or key=value form) replaced by `***`."""
    text = _SECRET_IN_URL.sub(r"\1***\3", text)
    return _SECRET_IN_KV.sub(r"\1***", text)


def parse_dsn(dsn: str) -> dict[str, str]:
    """The DSN's parameters. ConfigurationError (naming the problem, never the password) when it is malformed."""
    try:
        return {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(
            f"malformed database DSN {redact(dsn)!r}: {redact(str(exc)).strip()}. Use a URL such as "
            "postgresql://user:password@host:5432/dbname or key=value pairs such as 'host=... dbname=...'"
        ) from None


def tuned_conninfo(dsn: str, timeouts: Timeouts, *, application_name: str = "tidebase") -> str:
    """`dsn` with the defaults that bound every wait (see the module docstring); parameters the DSN sets win.

    The server-side statement timeout goes first in `options`, so a `-c statement_timeout=...` of the DSN's own
    options, read later by the server, overrides it.
    """
    params = parse_dsn(dsn)
    defaults = {**_KEEPALIVES, "connect_timeout": str(max(2, math.ceil(timeouts.connect))),
                "application_name": application_name}
    if timeouts.deadline is not None:
        defaults["tcp_user_timeout"] = str(int(timeouts.deadline * 1000))
    merged = {**defaults, **params}
    if timeouts.statement is not None:
        ours = f"-c statement_timeout={int(timeouts.statement * 1000)}"
        merged["options"] = f"{ours} {params['options']}" if params.get("options") else ours
    return make_conninfo("", **merged)


def describe_target(conninfo: str) -> str:
    """`host:port, database "db", user "u"` for messages: what the DSN points at, without the password."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "an unparsable DSN"
    host = str(params.get("host") or params.get("hostaddr") or "the local socket")
    port = str(params.get("port") or "5432")
    where = f"{host}:{port}" if not host.startswith("/") else f"socket {host} (port {port})"
    parts = [where]
    if params.get("dbname"):
        parts.append(f'database "{params["dbname"]}"')
    if params.get("user"):
        parts.append(f'user "{params["user"]}"')
    return ", ".join(parts)


# What to do, by what the reason says. libpq's connection failures carry no SQLSTATE, so these hints key on the
# phrases of its (and the server's) English messages; an unrecognised reason gets the general advice. Only the hint
# depends on this: the error class and the quoted reason do not.
_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("connection refused",), "nothing accepts connections there: start PostgreSQL, or fix the host and port"),
    (("timeout expired",), "the host did not answer in time: check the host, the port, firewalls and the network"),
    (("resolve host",), "the host name does not resolve: fix the host in the DSN"),
    (("translate host name",), "the host name does not resolve: fix the host in the DSN"),
    (("password authentication failed",), "the server refused the credentials: fix the user and password"),
    (("no password supplied",), "the server wants a password: add it to the DSN or to ~/.pgpass"),
    (("role", "does not exist"), "that user does not exist on the server: create it (createuser) or use another"),
    (("database", "does not exist"), "that database does not exist: create it (createdb) or name an existing one"),
    (("pg_hba.conf",), "the server's pg_hba.conf does not admit this client: add an entry for it"),
    (("ssl",), "the SSL settings of the client and the server do not match: adjust sslmode"),
)


def connect_error(exc: Exception, conninfo: str) -> DatabaseUnavailable:
    """The error for a failed first connection to `conninfo`: target, reason and what to do."""
    reason = redact(" ".join(str(exc).split())).removeprefix("connection failed: ")
    lowered = reason.lower()
    hint = next((h for phrases, h in _HINTS if all(p in lowered for p in phrases)),
                "check that PostgreSQL is running and reachable and that the DSN is right")
    return DatabaseUnavailable(
        f"cannot connect to PostgreSQL at {describe_target(conninfo)}: {reason}. What to do: {hint} "
        "(the DSN comes from Tidebase(dsn), --dsn, TIDEBASE_DATABASE_URL or DATABASE_URL; with none of them set, "
        "Tidebase starts its embedded PostgreSQL)"
    )
