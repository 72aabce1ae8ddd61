"""`python -m trigger.testing.kubeapi`: serve the emulator until SIGTERM or SIGINT.

It prints `READY http://127.0.0.1:PORT` once listening, for the process that started it.
`--admit N` refuses Workflow creates beyond N a second (429), as API Priority and Fairness
sheds load; SIGUSR1 steps a failure storm through its phases (see `_Storm`).
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
    async with KubeEmulator(
        namespaces, token=args.token, host=args.host, port=args.port, history=args.history
    ) as kube:
        if args.admit:
            kube.admit(args.admit, path_contains="/workflows")
        storm = _Storm(kube)
        loop.add_signal_handler(signal.SIGUSR1, storm.next_phase)
        sys.stdout.write(f"READY {kube.url}\n")
        sys.stdout.flush()
        await stopping.wait()


class _Storm:
    """SIGUSR1 moves a failure storm on creates of Workflows to its next phase: 500 for
    every one, then 429 with Retry-After: 1, then answers lost after the object is stored,
    then calm again — so a benchmark in another process can time an outage."""

    PHASES = ("calm", "500", "429", "lost")

    def __init__(self, kube: KubeEmulator) -> None:
        self.kube = kube
        self.phase = 0

    def next_phase(self) -> None:
        self.phase = (self.phase + 1) % len(self.PHASES)
        self.kube.clear_injections()
        name, forever = self.PHASES[self.phase], 10**9
        if name == "500":
            self.kube.inject(500, count=forever, method="POST", path_contains="/workflows")
        elif name == "429":
            self.kube.inject(
                429, count=forever, method="POST", path_contains="/workflows", retry_after=1
            )
        elif name == "lost":
            self.kube.lose(count=forever, method="POST", path_contains="/workflows")
        sys.stderr.write(f"storm phase: {name}\n")


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
    parser.add_argument(
        "--history",
        type=int,
        default=1000,
        help="changes kept for watches to replay; an older resourceVersion gets 410",
    )
    parser.add_argument(
        "--admit",
        type=float,
        default=None,
        help="admit at most this many Workflow creates a second; 429 + Retry-After beyond",
    )
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
