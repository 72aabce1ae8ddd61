"""Run `trigger run` as a subprocess for daemon-level tests, and talk to it over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], Any], *, timeout: float = DEADLINE, what: str = "condition"
) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling interval, not synchronization


async def until(condition: Callable[[], Any], *, timeout: float = DEADLINE, what: str) -> Any:  # noqa: ASYNC109 - a polling deadline
    """Async `wait_for`: poll a blocking condition in a thread, for tests whose event loop
    also serves an in-process fake (the Kubernetes API emulator) the daemon talks to."""
    import asyncio

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        result = await asyncio.to_thread(condition)
        if result:
            return result
        await asyncio.sleep(0.05)  # polling interval while the fake serves
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class DaemonProcess:
    """One `trigger run` subprocess with its own directory, port and log."""

    workdir: Path
    rules: Path
    port: int = field(default_factory=free_port)
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    # The whole `trigger run` argument list instead of the test defaults above (a test of
    # the defaults themselves); the test then says where the daemon listens (`port`).
    argv: Sequence[str] | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def workflows_dir(self) -> Path:
        return self.workdir / "workflows"

    @property
    def log_path(self) -> Path:
        return self.workdir / "daemon.log"

    @property
    def dead_letters(self) -> Path:
        return self.workdir / "dead-letters.jsonl"

    def command(self) -> list[str]:
        if self.argv is not None:
            return [sys.executable, "-m", "trigger.cli", "run", *self.argv]
        return [
            sys.executable,
            "-m",
            "trigger.cli",
            "run",
            "--rules",
            str(self.rules),
            "--sink",
            f"local:{self.workflows_dir}",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--state",
            f"file:{self.workdir / 'state.json'}",
            "--dead-letter",
            f"file:{self.dead_letters}",
            *self.extra_args,
        ]

    def start(self, *, ready: bool = True) -> DaemonProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGER_")}
        env.update({"TRIGGER_LOG__FORMAT": "json", "TRIGGER_RELOAD_DEBOUNCE": "50ms", **self.env})
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(), cwd=self.workdir, env=env, stdout=log, stderr=log
        )
        if ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = DEADLINE) -> None:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            return self.get("/readyz").status == 200

        wait_for(ready, timeout=timeout, what="daemon readiness")

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEADLINE,
    ) -> Response:
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=dict(headers or {})
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as err:
            return Response(err.code, dict(err.headers), err.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return Response(0, {}, b"")

    def get(self, path: str) -> Response:
        return self.request("GET", path, timeout=5)

    def post(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> Response:
        return self.request("POST", path, body, headers)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = DEADLINE) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=DEADLINE)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def workflow_files(self) -> list[Path]:
        return sorted(self.workflows_dir.rglob("*.yaml")) if self.workflows_dir.exists() else []


@contextlib.contextmanager
def running(workdir: Path, rules: Path, **kwargs: Any) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(workdir, rules, **kwargs)
    try:
        yield daemon.start()
    finally:
        daemon.stop()


@contextmanager
def certificate_host(pem: bytes) -> Iterator[str]:
    """Serve `pem` over HTTP on loopback from a thread; yield its URL (for the daemon's
    certificate fetch, whose allow-list then names 127.0.0.1)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(pem)))
            self.end_headers()
            self.wfile.write(pem)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/x509/cert.pem"
    finally:
        server.shutdown()
        server.server_close()
