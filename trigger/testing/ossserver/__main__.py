"""`python -m trigger.testing.ossserver`: serve an in-memory OSS endpoint.

It prints `READY http://127.0.0.1:PORT` once listening and serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from trigger.testing.ossserver.server import OssServer


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve an in-memory OSS endpoint.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--bucket", action="append", default=[], help="repeatable")
    parser.add_argument("--ak", help="AccessKeyId accepted")
    parser.add_argument("--sk", help="its AccessKeySecret")
    parser.add_argument("--region", default="cn-hangzhou")
    parser.add_argument("--anonymous", action="store_true", help="accept unsigned requests")
    parser.add_argument("--eventbridge-url", help="POST an EventBridge CloudEvent here")
    parser.add_argument("--eventbridge-token", help="sent as x-eventbridge-signature-token")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    credentials = {args.ak: args.sk} if args.ak and args.sk else {}
    server = OssServer(
        args.bucket,
        credentials=credentials,
        region=args.region,
        allow_anonymous=args.anonymous or not credentials,
        host=args.host,
        port=args.port,
        eventbridge_url=args.eventbridge_url,
        eventbridge_token=args.eventbridge_token,
    )
    stopped = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stopped.set)
    async with server:
        sys.stdout.write(f"READY {server.endpoint}\n")
        sys.stdout.flush()
        await stopped.wait()


def main(argv: Sequence[str] | None = None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
