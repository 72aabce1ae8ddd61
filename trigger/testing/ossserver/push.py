"""EventBridge delivery: each event POSTed to the configured URL in a task of its own.

The server hands over the CloudEvent of every successful PutObject and DeleteObject;
a refused or failed push is logged, never retried. `flush` waits for the pushes started
so far, `stop` flushes and closes the HTTP session.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

import aiohttp
import structlog

LOG: Final = structlog.get_logger(__name__)


class Pusher:
    """POSTs EventBridge CloudEvents to `url`, sending `token` as the signature token."""

    def __init__(self, url: str | None, token: str | None) -> None:
        self._url, self._token = url, token
        self._pushes: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if self._url:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def stop(self) -> None:
        await self.flush()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def active(self) -> bool:
        """Whether events are pushed: a URL is configured and the server is started."""
        return self._session is not None and self._url is not None

    def send(self, event: dict[str, Any], name: str) -> None:
        """Push `event` in a task named `name`; does nothing unless active."""
        if self._session is None or self._url is None:
            return
        push = self._push(self._session, self._url, event)
        task = asyncio.create_task(push, name=name)
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def flush(self) -> None:
        """Wait until every push started so far has finished."""
        while self._pushes:
            await asyncio.gather(*self._pushes, return_exceptions=True)

    async def _push(self, session: aiohttp.ClientSession, url: str, event: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/json;charset=utf-8"}
        if self._token:
            headers["x-eventbridge-signature-token"] = self._token
        body = json.dumps(event, ensure_ascii=False).encode()
        try:
            async with session.post(url, data=body, headers=headers) as reply:
                if reply.status >= 300:
                    LOG.warning("eventbridge push refused", status=reply.status, id=event["id"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            LOG.warning("eventbridge push failed", error=str(exc), id=event["id"])
