"""Deadlines on a connection's reads, for serving the receiver with uvicorn.

uvicorn closes an idle connection only after it has answered a request on it: a connection
that never sends a byte, or that sends a request's headers (or body) a byte at a time and
never finishes, stays open for as long as the client likes, and enough of them exhaust the
process's file descriptors (a slowloris). :func:`protocol` returns uvicorn's httptools
protocol with two deadlines added:

- a new connection that sends nothing is closed after the keep-alive timeout, as uvicorn
  closes one that has gone quiet after a response;
- once a request has started, the client has ``read_timeout`` seconds to send all of it
  (headers and body); then the connection is closed.

httptools sets no bound on the size of a request's headers either, so headers over
``max_header_bytes`` are answered 400 and the connection closed.

Serve with ``uvicorn.run(receiver.asgi_app(), http=protocol(10.0), timeout_keep_alive=5)``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that closes connections which send too slowly."""

    read_timeout: float = 10.0
    """Seconds a client has to send a whole request once its first byte arrived."""

    max_header_bytes: int = 64 * 1024
    """The largest total of header names and values accepted in one request."""

    _deadline: asyncio.TimerHandle | None = None
    _read_len = 0
    _head_open = False
    _head_read = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.timeout_keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._read_len = len(data)
        super().data_received(data)
        # A URL or header value still arriving reaches no callback until it ends, and the
        # parser buffers it meanwhile: bound the bytes read while the head is unfinished.
        if self._head_open:
            self._head_read += len(data)
            if self._head_read > self.max_header_bytes and not self.transport.is_closing():
                self.send_400_response("Request headers too large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_read = 0
        self._arm(self.read_timeout)

    def on_headers_complete(self) -> None:
        self._head_open = False
        # The head is measured per read, not per header (an override of on_header costs a
        # Python call per header of every request): only a read larger than the bound can
        # hide a head over it, so only then are the headers added up.
        if self._head_read + self._read_len > self.max_header_bytes:
            size = len(self.url) + sum(len(n) + len(v) for n, v in self.headers)
            if size > self.max_header_bytes:
                # The parser turns a callback's error into a parse error, which uvicorn
                # answers with 400 before closing the connection.
                raise ValueError("request headers too large")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # The request is in: the answer may take as long as the application needs.
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def protocol(read_timeout: float, max_header_bytes: int = 64 * 1024) -> type[asyncio.Protocol]:
    """A :class:`DeadlineProtocol` class with these bounds, to pass as uvicorn's ``http``."""
    attrs: dict[str, Any] = {"read_timeout": read_timeout, "max_header_bytes": max_header_bytes}
    return type("DeadlineProtocol", (DeadlineProtocol,), attrs)
