"""What the test servers share: `async with Server(...) as server:` runs start/stop, and
waiting for a child process's port to open."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from types import TracebackType
from typing import Any, Self


async def wait_for_port(
    process: subprocess.Popen[Any], host: str, port: int, name: str, within: float
) -> None:
    """Return once `host:port` accepts a connection; raise if `process` exits first or the
    port stays closed for `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} at start")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() > deadline:
                raise TimeoutError(f"{name} did not open {host}:{port}") from None
            await asyncio.sleep(0.01)  # polling the port, not synchronizing on time
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class Served:
    """Mixin for servers with `async start()` and `async stop()`."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
