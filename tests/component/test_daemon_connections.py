"""The daemon's HTTP connections under slow clients: header timeout, connection limit, body limits.

Raw sockets play the slow clients (a request line, then one header line now and then, never
the blank line that ends the headers) against `trigger run` as a subprocess, while a signed
webhook delivery must still be answered with its Workflow. `TRIGGER_TEST_SLOW_CLIENTS`
sets how many trickling connections the flood opens (default 5,000).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.component.test_daemon import HOOK_RULE, SECRET, delivery, metric, sign
from tests.daemon import DaemonProcess, wait_for

SLOW_CLIENTS = int(os.environ.get("TRIGGER_TEST_SLOW_CLIENTS", "5000"))
OPEN = "trigger_http_connections_open"
CLOSED = "trigger_http_connections_closed_total"


@dataclass
class Trickle:
    """Connections that send a request line and then one header line every `period` seconds.

    A background thread keeps trickling and notes, per socket, the bytes the server sent
    and whether it closed the connection.
    """

    port: int
    period: float
    path: str = "/hooks/build"
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    answers: list[bytes] = field(default_factory=list)  # what the server sent, per connection
    closed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def open(self, count: int) -> None:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            sock.sendall(f"POST {self.path} HTTP/1.1\r\nHost: trigger\r\n".encode())
            sock.setblocking(False)
            with self.lock:
                self.selector.register(sock, selectors.EVENT_READ, len(self.answers))
                self.answers.append(b"")

    def open_count(self) -> int:
        with self.lock:
            return len(self.answers) - self.closed

    def run(self) -> None:
        next_line = time.monotonic() + self.period
        while not self.stop.is_set():
            with self.lock:
                ready = self.selector.select(timeout=0.05) if self.selector.get_map() else []
                for key, _ in ready:
                    self._read(key)
                if time.monotonic() >= next_line:
                    next_line += self.period
                    for key in list(self.selector.get_map().values()):
                        self._send(key)
            if not ready:
                time.sleep(0.01)  # nothing registered yet, or nothing to read: yield the GIL

    def _read(self, key: selectors.SelectorKey) -> None:
        try:
            data = key.fileobj.recv(65536)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except ConnectionError:
            data = b""
        if data:
            self.answers[key.data] += data
        else:
            self._closed(key)

    def _send(self, key: selectors.SelectorKey) -> None:
        try:
            key.fileobj.send(b"X-Trickle: still-sending\r\n")  # type: ignore[union-attr]
        except BlockingIOError:
            pass
        except ConnectionError:
            self._closed(key)

    def _closed(self, key: selectors.SelectorKey) -> None:
        self.closed += 1
        self.selector.unregister(key.fileobj)
        key.fileobj.close()  # type: ignore[union-attr]

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            for key in list(self.selector.get_map().values()):
                self.selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]


@contextlib.contextmanager
def trickling(port: int, period: float) -> Iterator[Trickle]:
    flood = Trickle(port, period)
    thread = threading.Thread(target=flood.run, name="trickle", daemon=True)
    thread.start()
    try:
        yield flood
    finally:
        flood.close()
        thread.join(timeout=10)


def rss_kib(daemon: DaemonProcess) -> int:
    assert daemon.process is not None
    for line in Path(f"/proc/{daemon.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "hooks.yaml").write_text(HOOK_RULE)
    return rules


def start(tmp_path: Path, rules_dir: Path, **http: str) -> DaemonProcess:
    env = {"HOOK_SECRET": SECRET, "HOOK_TOKEN": "tok"}
    env.update({f"TRIGGER_HTTP__{name.upper()}": value for name, value in http.items()})
    return DaemonProcess(tmp_path, rules_dir, env=env)


@pytest.fixture
def slow_daemon(tmp_path: Path, rules_dir: Path) -> Iterator[DaemonProcess]:
    daemon = start(
        tmp_path,
        rules_dir,
        header_timeout="3s",
        max_connections=str(SLOW_CLIENTS + 100),
    )
    try:
        yield daemon.start()
    finally:
        daemon.stop()


def test_trickling_headers_are_cut_off_while_deliveries_go_through(
    slow_daemon: DaemonProcess,
) -> None:
    """Connections whose headers never end are closed after http.header_timeout; deliveries still work."""
    daemon = slow_daemon
    before = rss_kib(daemon)
    peak_open = 0.0
    with trickling(daemon.port, period=1.0) as flood:
        flood.open(SLOW_CLIENTS)
        opened_rss = rss_kib(daemon)
        body = delivery(1)
        started = time.monotonic()
        answer = daemon.post("/hooks/build", body, sign(body))
        took = time.monotonic() - started
        still_open = flood.open_count()
        assert answer.status == 200, answer.body
        assert answer.json()["events"][0]["workflows"][0]["outcome"] == "created"
        assert len(daemon.workflow_files()) == 1

        def all_cut() -> bool:
            nonlocal peak_open
            peak_open = max(peak_open, metric(daemon, OPEN))
            return flood.open_count() == 0

        wait_for(all_cut, timeout=60, what="every trickling connection closed by the daemon")
        answers = set(flood.answers)
    assert metric(daemon, CLOSED, reason="header-timeout") >= SLOW_CLIENTS
    assert peak_open <= SLOW_CLIENTS + 100
    # 408 to those that read it before the close; a reset may overtake it for the others
    assert all(a == b"" or a.startswith(b"HTTP/1.1 408 ") for a in answers)
    assert any(a.startswith(b"HTTP/1.1 408 ") for a in answers)
    assert metric(daemon, OPEN) <= 2  # this scrape's connection, perhaps the last one's
    print(
        f"\n{SLOW_CLIENTS} trickling connections: RSS {before} KiB before, {opened_rss} KiB"
        f" with them open, {rss_kib(daemon)} KiB after; peak open gauge {peak_open:.0f};"
        f" delivery answered in {took * 1000:.0f} ms with {still_open} still open"
    )


def test_flood_beyond_max_connections_stays_bounded_and_deliveries_go_through(
    tmp_path: Path, rules_dir: Path
) -> None:
    """More slow clients than http.max_connections: the longest waiting make room; deliveries work."""
    most, flood_size = 200, 1000
    daemon = start(tmp_path, rules_dir, header_timeout="5m", max_connections=str(most))
    try:
        daemon.start()
        peak_open = 0.0
        with trickling(daemon.port, period=1.0) as flood:
            for _ in range(flood_size // 100):
                flood.open(100)
                peak_open = max(peak_open, metric(daemon, OPEN))
            wait_for(lambda: flood.open_count() < most, what="the oldest connections closed")
            body = delivery(1)
            answer = daemon.post("/hooks/build", body, sign(body))
            assert answer.status == 200, answer.body
            assert answer.json()["events"][0]["workflows"][0]["outcome"] == "created"
            peak_open = max(peak_open, metric(daemon, OPEN))
        assert peak_open <= most
        assert metric(daemon, CLOSED, reason="evicted") >= flood_size - most
        assert metric(daemon, CLOSED, reason="header-timeout") == 0
    finally:
        daemon.stop()


def raw_exchange(daemon: DaemonProcess, request: bytes) -> bytes:
    """Send `request` on one connection and read the one response (head and body)."""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        sock.sendall(request)
        stream = sock.makefile("rb")
        head = b"".join(iter(stream.readline, b"\r\n")) + b"\r\n"
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return head + stream.read(length)


def test_slow_body_is_bounded_by_request_timeout(tmp_path: Path, rules_dir: Path) -> None:
    """A body that stops arriving gets the handler's 408 after http.request_timeout, not a header timeout."""
    daemon = start(tmp_path, rules_dir, header_timeout="500ms", request_timeout="2s")
    try:
        daemon.start()
        head = (
            "POST /hooks/build HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\nConnection: close\r\n\r\n"
        )
        answer = raw_exchange(daemon, head.encode() + b'{"id": ')
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"request body was not received in time" in answer
        assert (
            metric(daemon, "trigger_events_rejected_total", source="webhook", reason="body-timeout")
            == 1
        )
        assert metric(daemon, CLOSED, reason="header-timeout") == 0
        body = b"x" * (11 * 1024 * 1024)
        assert daemon.post("/hooks/build", body, sign(body)).status == 413
    finally:
        daemon.stop()
