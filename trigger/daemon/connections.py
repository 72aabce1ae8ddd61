"""The HTTP server's connections: how long a client may take, and how many it may hold.

aiohttp bounds neither the time a client takes to send a request's headers nor the number
of open connections: a client that sends one header line every few seconds holds its
connection, and about 7 KB, for as long as it likes. Every accepted connection therefore
passes through one `Connections` table, shared by every listener of the daemon:

- **header timeout**: from the connection's start, or from the first byte of a later request
  on a kept-alive connection, its headers must be complete within `header_timeout`; bytes
  that keep trickling do not extend it. Then the client gets 408 (if it sent anything) and
  the connection closes.
- **keep-alive**: a connection idle between requests closes after `keepalive_timeout`.
- **limit**: at `max_connections`, a new connection closes the open one that has waited
  longest for a request (idle, or still sending headers), so a flood of slow clients
  cannot lock out a real sender; when every open connection is inside a request, the new
  one gets 503 with Retry-After and is closed.

A request is "inside" from its headers' end (aiohttp hands it to the application, where
`middleware` sees it) until its handler has returned and its body has been read to the end;
the handler bounds the body (`http.request_timeout`), and aiohttp spends at most 10 s
discarding a body the handler left unread (a 413) before it closes the connection. The
timers run on the event loop's clock, as the request timeout does: they bound network
waits, and the loop's clock is what the network waits run on.

aiohttp logs a request it cannot parse (over-long headers, a bad Content-Length) with a
traceback, as if it were a bug. `ServerLog` takes its place: a client's error is one
warning line (`bad request`, or `client disconnected`) with the client's address and the
error, once per kind of error every 10 s; anything else is an error line with the traceback
as one field.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from trigger.core.lograte import LogRate
from trigger.core.metrics import Metrics

log = structlog.get_logger("trigger.http")
Reason = Literal["header-timeout", "idle", "evicted", "refused"]
RETRY_AFTER: Final = 5
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answer(status: str, message: str, *extra: str) -> bytes:
    body = f'{{"error": "{message}"}}'.encode()
    head = [f"HTTP/1.1 {status}", "Connection: close", "Content-Type: application/json", *extra]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


TOO_SLOW: Final = _answer("408 Request Timeout", "request headers were not received in time")
TOO_MANY: Final = _answer(
    "503 Service Unavailable", "too many connections", f"Retry-After: {RETRY_AFTER}"
)


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    keepalive_timeout: float
    max_connections: int


class Connection(asyncio.Protocol):
    """One accepted connection: asks the table to admit it, then passes everything on to
    aiohttp's protocol, telling the table when bytes arrive."""

    __slots__ = (
        "_make",
        "_table",
        "inner",
        "received",
        "requests",
        "timer",
        "transport",
        "waiting_for_headers",
    )

    def __init__(self, table: Connections, make: Callable[[], asyncio.Protocol]) -> None:
        self._table = table
        self._make = make
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.requests = 0  # inside a request (aiohttp handles one at a time per connection)
        self.waiting_for_headers = True  # else idle between requests
        self.received = False  # bytes of the awaited request have arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self._table.admit(self):
            self.inner = self._make()
            self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self._table.received(self)
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._table.lost(self)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class Connections:
    """Every open connection of the daemon's HTTP listeners, with its deadline."""

    def __init__(self, limits: Limits, metrics: Metrics) -> None:
        self.limits = limits
        self._metrics = metrics
        self._open: dict[asyncio.Transport, Connection] = {}
        # Connections not inside a request, the longest waiting first: who goes at the limit.
        self._waiting: OrderedDict[Connection, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        """The protocol factory of a listener serving `server` through this table."""
        return lambda: Connection(self, server)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks a connection as inside a request while the application handles it."""
        transport = request.transport
        conn = self._open.get(transport) if isinstance(transport, asyncio.Transport) else None
        if conn is None:
            return await handler(request)
        self._begin(conn)
        try:
            return await handler(request)
        finally:
            # The request ends with its body: aiohttp reads and discards what the handler left
            # unread (for at most its lingering time) before it reads the next request.
            request.content.on_eof(lambda: self._end(conn))

    def admit(self, conn: Connection) -> bool:
        assert conn.transport is not None
        if len(self._open) >= self.limits.max_connections:
            if not self._waiting:
                self._count("refused")
                conn.transport.write(TOO_MANY)
                conn.transport.close()
                return False
            oldest = next(iter(self._waiting))
            self._close(oldest, "evicted")
        self._open[conn.transport] = conn
        self._waiting[conn] = None
        self._arm(conn, self.limits.header_timeout)
        self._metrics.http_connections.set(len(self._open))
        return True

    def received(self, conn: Connection) -> None:
        if conn.requests or conn.transport not in self._open:
            return  # a body (bounded by the handler), or a connection already let go
        conn.received = True
        if not conn.waiting_for_headers:  # the first byte of the next request
            conn.waiting_for_headers = True
            self._arm(conn, self.limits.header_timeout)

    def lost(self, conn: Connection) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
        if conn.transport is not None and self._open.pop(conn.transport, None) is not None:
            self._waiting.pop(conn, None)
            self._metrics.http_connections.set(len(self._open))

    def _begin(self, conn: Connection) -> None:
        conn.requests += 1
        if conn.timer is not None:
            conn.timer.cancel()
        self._waiting.pop(conn, None)

    def _end(self, conn: Connection) -> None:
        conn.requests -= 1
        if conn.requests or conn.transport not in self._open:
            return
        conn.waiting_for_headers = conn.received = False
        self._waiting[conn] = None
        self._arm(conn, self.limits.keepalive_timeout)

    def _arm(self, conn: Connection, seconds: float) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
        conn.timer = asyncio.get_running_loop().call_later(seconds, self._expire, conn)

    def _expire(self, conn: Connection) -> None:
        if not conn.waiting_for_headers:
            self._close(conn, "idle")
            return
        if conn.received and conn.transport is not None:
            conn.transport.write(TOO_SLOW)
        self._close(conn, "header-timeout")

    def _close(self, conn: Connection, reason: Reason) -> None:
        self._count(reason)
        transport = conn.transport
        assert transport is not None
        self.lost(conn)  # let go now: the transport reports its loss only on a later turn
        transport.close()

    def _count(self, reason: Reason) -> None:
        self._metrics.child(self._metrics.http_closed, reason).inc()


class Site(web.BaseSite):
    """A TCP listener whose connections go through a `Connections` table."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, connections: Connections
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._connections = connections

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host, port=self._port))

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._connections.factory(server), self._host, self._port, backlog=self._backlog
        )


class ServerLog(logging.Logger):
    """What aiohttp's request handler logs (`logger=` of the runner), as trigger's lines."""

    def __init__(self, rate: LogRate) -> None:
        super().__init__("aiohttp.server")
        self.parent = logging.getLogger("aiohttp.server")  # any other call goes the usual way
        self._rate = rate

    def exception(self, msg: object, *args: object, exc_info: Any = True, **_: Any) -> None:
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        # aiohttp says "Error handling request from %s" with the client's address.
        client = args[0] if args and "from %s" in str(msg) else None
        if isinstance(error, HttpProcessingError | ConnectionError):
            self._client_error(error, client)
        else:
            log.error("HTTP request failed", detail=_text(msg, args), client=client, exc_info=error)

    def debug(self, msg: object, *args: object, exc_info: Any = None, **_: Any) -> None:
        log.debug("HTTP server", detail=_text(msg, args), exc_info=exc_info)

    def warning(self, msg: object, *args: object, **_: Any) -> None:
        log.warning("HTTP server", detail=_text(msg, args))

    def _client_error(self, error: BaseException, client: object) -> None:
        kind = type(error).__name__
        quiet = self._rate.due(kind)
        if quiet is None:
            return
        if isinstance(error, HttpProcessingError):
            # Its message quotes what the client sent: the first line says enough.
            detail = error.message.strip().splitlines()[0][:200] if error.message else ""
            event = "bad request"
        else:
            detail, event = str(error), "client disconnected"
        log.warning(event, client=client, error=kind, detail=detail, not_logged_since_last=quiet)


def _text(msg: object, args: tuple[object, ...]) -> str:
    return str(msg) % args if args else str(msg)  # as logging formats a record's message
