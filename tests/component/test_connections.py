"""The connection table of the HTTP server, in process, against raw client connections.

A tiny aiohttp application is served through `Connections` and `Site`; clients are raw
asyncio streams, so each test controls exactly which bytes the server sees and when.
Waiting for a timeout is waiting for the server to close the connection (with a deadline),
never a sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from aiohttp import web

from tests.daemon import free_port
from trigger.clock import VirtualClock
from trigger.core.lograte import LogRate
from trigger.core.metrics import Metrics
from trigger.daemon.connections import Connections, Limits, ServerLog, Site

LONG = 60.0  # a limit a test does not exercise
DEADLINE = 20.0


@dataclass
class Server:
    port: int
    metrics: Metrics
    connections: Connections
    release: asyncio.Event
    held: asyncio.Event

    def closed(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "trigger_http_connections_closed_total", {"reason": reason}
        )
        return value or 0.0

    def open_gauge(self) -> float:
        return self.metrics.registry.get_sample_value("trigger_http_connections_open") or 0.0

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@asynccontextmanager
async def serving(
    header: float = LONG, keepalive: float = LONG, most: int = 100
) -> AsyncIterator[Server]:
    release, held = asyncio.Event(), asyncio.Event()

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def hold(_: web.Request) -> web.Response:
        held.set()
        await release.wait()
        return web.Response(text="held")

    async def small(request: web.Request) -> web.Response:
        try:
            await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="too large")
        return web.Response(text="read")

    metrics = Metrics()
    connections = Connections(Limits(header, keepalive, most), metrics)
    app = web.Application(middlewares=[connections.middleware], client_max_size=1024)
    app.add_routes([web.get("/ok", ok), web.get("/hold", hold), web.post("/small", small)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await Site(runner, "127.0.0.1", port, connections).start()
    try:
        yield Server(port, metrics, connections, release, held)
    finally:
        release.set()
        await runner.cleanup()


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(DEADLINE):
        return await reader.read()


def get(path: str, *, close: bool = False) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


async def response(reader: asyncio.StreamReader) -> bytes:
    """One complete response (headers and its Content-Length body)."""
    async with asyncio.timeout(DEADLINE):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return head + await reader.readexactly(length)


async def test_headers_that_never_end_get_408_and_close() -> None:
    """A connection that sends part of its headers is answered 408 and closed after the header timeout."""
    async with serving(header=0.2) as server:
        reader, writer = await server.connect()
        writer.write(b"GET /ok HTTP/1.1\r\nHost: t\r\n")
        answer = await until_closed(reader)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert b"Connection: close" in answer
        assert server.closed("header-timeout") == 1
        assert server.open_gauge() == 0
        writer.close()


async def test_trickling_does_not_extend_the_header_timeout() -> None:
    """Header lines that keep arriving do not keep the connection open."""
    async with serving(header=0.3) as server:
        reader, writer = await server.connect()
        writer.write(b"GET /ok HTTP/1.1\r\n")
        closing = asyncio.ensure_future(until_closed(reader))
        while not closing.done():
            writer.write(b"X-Slow: 1\r\n")
            await asyncio.wait([closing], timeout=0.05)  # the trickle's pace
        assert (await closing).startswith(b"HTTP/1.1 408 ")
        assert server.closed("header-timeout") == 1
        writer.close()


async def test_silent_connection_is_closed_without_an_answer() -> None:
    """A connection that never sends a byte is closed after the header timeout, with no response."""
    async with serving(header=0.2) as server:
        reader, writer = await server.connect()
        assert await until_closed(reader) == b""
        assert server.closed("header-timeout") == 1
        writer.close()


async def test_idle_keepalive_connection_is_closed_silently() -> None:
    """After a response, a connection idle for the keep-alive timeout is closed with no further bytes."""
    async with serving(keepalive=0.2) as server:
        reader, writer = await server.connect()
        writer.write(get("/ok"))
        assert (await response(reader)).startswith(b"HTTP/1.1 200 OK")
        assert await until_closed(reader) == b""
        assert server.closed("idle") == 1
        assert server.closed("header-timeout") == 0
        writer.close()


async def test_next_request_on_kept_alive_connection_has_its_own_header_timeout() -> None:
    """On a kept-alive connection, the next request's headers are timed from its first byte."""
    async with serving(header=0.2) as server:
        reader, writer = await server.connect()
        for _ in range(3):
            writer.write(get("/ok"))
            assert (await response(reader)).startswith(b"HTTP/1.1 200 OK")
        writer.write(b"GET /ok HTTP/1.1\r\n")
        assert (await until_closed(reader)).startswith(b"HTTP/1.1 408 ")
        assert server.closed("header-timeout") == 1
        writer.close()


async def test_request_being_handled_is_not_cut_by_the_header_timeout() -> None:
    """A request whose handler outlasts the header timeout still gets its answer."""
    async with serving(header=0.2) as server:
        reader, writer = await server.connect()
        writer.write(get("/hold"))
        await asyncio.wait_for(server.held.wait(), DEADLINE)
        # A connection opened after the held request's headers ended is cut: by then the
        # held request has been inside its handler for longer than the header timeout.
        later, later_writer = await server.connect()
        assert await until_closed(later) == b""
        server.release.set()
        assert (await response(reader)).startswith(b"HTTP/1.1 200 OK")
        assert server.closed("header-timeout") == 1
        writer.close()
        later_writer.close()


async def test_at_the_limit_the_longest_waiting_connection_makes_room() -> None:
    """At max_connections a new connection closes the one waiting longest for a request, and is served."""
    async with serving(most=2) as server:
        oldest, oldest_writer = await server.connect()
        newer, newer_writer = await server.connect()
        for r, w in ((oldest, oldest_writer), (newer, newer_writer)):
            w.write(get("/ok"))  # served, so both are open and then waiting, oldest first
            assert (await response(r)).startswith(b"HTTP/1.1 200 OK")
        reader, writer = await server.connect()
        assert await until_closed(oldest) == b""
        writer.write(get("/ok", close=True))
        assert (await until_closed(reader)).startswith(b"HTTP/1.1 200 OK")
        assert server.closed("evicted") == 1
        assert server.open_gauge() <= 2
        for w in (oldest_writer, newer_writer, writer):
            w.close()


async def test_at_the_limit_with_every_connection_busy_new_ones_get_503() -> None:
    """At max_connections with every connection inside a request, a new connection gets 503 and closes."""
    async with serving(most=1) as server:
        reader, writer = await server.connect()
        writer.write(get("/hold"))
        await asyncio.wait_for(server.held.wait(), DEADLINE)
        refused, refused_writer = await server.connect()
        answer = await until_closed(refused)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Retry-After: 5" in answer
        assert server.closed("refused") == 1
        server.release.set()
        assert (await response(reader)).startswith(b"HTTP/1.1 200 OK")
        writer.close()
        refused_writer.close()


async def test_unread_rest_of_a_refused_body_is_not_a_slow_next_request() -> None:
    """After a 413, the rest of the body trickling in is discarded, not answered 408."""
    async with serving(header=0.2) as server:
        reader, writer = await server.connect()
        writer.write(b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 4096\r\n\r\n")
        writer.write(b"x" * 2048)
        assert (await response(reader)).startswith(b"HTTP/1.1 413 ")
        writer.write(b"x" * 1024)
        # Outlast the header timeout (a connection opened now is cut) before the rest.
        later, later_writer = await server.connect()
        assert await until_closed(later) == b""
        writer.write(b"x" * 1024)
        writer.write(get("/ok"))
        assert (await response(reader)).startswith(b"HTTP/1.1 200 OK")
        assert server.closed("header-timeout") == 1
        writer.close()
        later_writer.close()


# --- what aiohttp's request handler logs -------------------------------------------------------


@asynccontextmanager
async def logged_server() -> AsyncIterator[int]:
    """An app with a handler that fails, served with `ServerLog` in place of aiohttp's logger."""

    async def broken(_: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application()
    app.add_routes([web.get("/broken", broken)])
    runner = web.AppRunner(app, access_log=None, logger=ServerLog(LogRate(VirtualClock())))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await asyncio.wait_for(reader.read(), DEADLINE)
    writer.close()
    return answer


async def test_unparsable_requests_are_one_warning_per_kind_and_interval() -> None:
    """Over-long headers are a `bad request` warning with the client and error class, once per interval; no traceback."""
    long_header = b"GET /x HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    async with logged_server() as port:
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                assert (await exchange(port, long_header)).startswith(b"HTTP/1.0 400 ")
    (line,) = logs
    assert line["event"] == "bad request" and line["log_level"] == "warning"
    assert line["client"] == "127.0.0.1" and line["error"] == "LineTooLong"
    assert "exc_info" not in line


async def test_a_failing_handler_is_an_error_with_its_traceback() -> None:
    """A bug in a handler is still an error line carrying the exception (one field, not lines)."""
    async with logged_server() as port:
        with structlog.testing.capture_logs() as logs:
            answer = await exchange(
                port, b"GET /broken HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
    assert answer.startswith(b"HTTP/1.1 500 ")
    (line,) = logs
    assert line["event"] == "HTTP request failed" and line["log_level"] == "error"
    assert isinstance(line["exc_info"], RuntimeError)
