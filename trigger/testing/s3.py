"""An S3 server on a loopback port (moto's), as durable storage for the test Kafka broker.

tansu keeps topics and committed offsets in memory unless it is given a store; of the
stores this build of tansu has, only `s3://BUCKET/` works here, and moto's standalone
server (`moto[server]`, in the `test` extra) serves it on loopback. `S3Store` starts
`moto_server` on a free port, waits for it, makes the bucket with boto3 and says how
tansu reaches it (`url`, `environ`: the endpoint and throwaway credentials). Its data lives
in the server process, so it outlives any number of broker restarts, and ends with `stop`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import Final, Self

from trigger.testing.kafka import free_port
from trigger.testing.served import wait_for_port

_START_TIMEOUT: Final = 30.0  # seconds for moto to import and open its port


class S3Store:
    """One moto S3 server with one bucket; a `Storage` for `KafkaBroker`."""

    def __init__(self, *, bucket: str = "tansu", host: str = "127.0.0.1") -> None:
        self.bucket = bucket
        self.host = host
        self.port = free_port(host)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/"

    @property
    def environ(self) -> Mapping[str, str]:
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",  # moto accepts any credentials
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    async def start(self) -> None:
        command = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        self._process = subprocess.Popen(  # noqa: ASYNC220, S603 - returns at once; a fixed command line
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await self._wait_for_port()
        await asyncio.to_thread(self._make_bucket)

    async def _wait_for_port(self) -> None:
        assert self._process is not None
        await wait_for_port(self._process, self.host, self.port, "moto_server", _START_TIMEOUT)

    def _make_bucket(self) -> None:
        import boto3

        env = self.environ
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket=self.bucket)

    def stop(self) -> None:
        """Kill the server by PID and wait for it; idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

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
