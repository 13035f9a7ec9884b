"""A real TCP proxy between the code under test and PostgreSQL, whose faults the test switches on and off.

`FaultProxy(upstream_host, upstream_port)` listens on a free local port and forwards bytes both ways, one thread per
direction per connection. Modes:

- `pass`: forward everything;
- `cut`: reset every open connection (RST, as a crashed server or a dropped NAT entry looks) and reset every new one
  at once, until the mode changes;
- `blackhole`: keep every connection open but forward nothing in either direction (a stalled proxy or a silently
  dropping network path): the client's kernel sees a live peer, the server never sees the query.

`dsn(base_dsn)` rewrites a DSN to go through the proxy. The proxy counts the connections it accepted, so a test can
tell that a client reconnected.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

from psycopg import conninfo

_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on with a zero timeout: close() sends RST


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.accepted = 0
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True).start()

    @classmethod
    def for_dsn(cls, dsn: str) -> FaultProxy:
        params = conninfo.conninfo_to_dict(dsn)
        return cls(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))

    def dsn(self, base: str) -> str:
        return conninfo.make_conninfo(base, host="127.0.0.1", port=str(self.port))

    def set_mode(self, mode: str) -> None:
        assert mode in ("pass", "cut", "blackhole")
        with self._lock:
            self.mode = mode
            if mode == "cut":
                for client, server in self._pairs:
                    _reset(client)
                    _reset(server)
                self._pairs.clear()

    @contextlib.contextmanager
    def fault(self, mode: str) -> Iterator[None]:
        self.set_mode(mode)
        try:
            yield
        finally:
            self.set_mode("pass")

    def close(self) -> None:
        self._closed = True
        self.set_mode("cut")
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                mode = self.mode
            if mode == "cut":
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._pairs.append((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            while self.mode == "blackhole":  # hold the bytes: nothing reaches the other side
                threading.Event().wait(0.05)
            if self.mode == "cut":
                return
            try:
                dst.sendall(data)
            except OSError:
                return


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    with contextlib.suppress(OSError):
        sock.close()
