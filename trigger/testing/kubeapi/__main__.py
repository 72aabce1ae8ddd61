"""`python -m trigger.testing.kubeapi`: serve the emulator until SIGTERM or SIGINT.

It prints `READY http://127.0.0.1:PORT` once listening, for the process that started it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from trigger.testing.kubeapi.server import KubeEmulator


async def _serve(args: argparse.Namespace) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    namespaces = [n for n in args.namespaces.split(",") if n]
    async with KubeEmulator(namespaces, token=args.token, host=args.host, port=args.port) as kube:
        sys.stdout.write(f"READY {kube.url}\n")
        sys.stdout.flush()
        await stopping.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the emulator until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m trigger.testing.kubeapi",
        description="A Kubernetes API server emulator for tests, served over real HTTP by aiohttp.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--namespaces", default="default", help="comma-separated")
    parser.add_argument("--token", default=None, help="require this bearer token")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
