"""Misbehaviour tests inject: failures and slowness for the next N matching requests, lost
answers, and an admission rate beyond which requests are refused (429) as API Priority and
Fairness sheds load."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from trigger.testing.kubeapi.errors import ApiStatusError

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Injection:
    """A failure the emulator answers the next `remaining` matching requests with."""

    status: int
    remaining: int
    method: str | None = None
    path_contains: str | None = None
    retry_after: int | None = None
    message: str | None = None

    def matches(self, method: str, path_qs: str) -> bool:
        return _matches(self.remaining, self.method, self.path_contains, method, path_qs)

    def error(self) -> ApiStatusError:
        headers = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        message = self.message or f"injected failure ({self.status})"
        return ApiStatusError(self.status, message, headers=headers)


def _matches(
    remaining: int, method: str | None, path_contains: str | None, req_method: str, path_qs: str
) -> bool:
    return (
        remaining > 0
        and (method is None or method.upper() == req_method)
        and (path_contains is None or path_contains in path_qs)
    )


@dataclass
class Delay:
    """Slowness the emulator adds to the next `remaining` matching requests.

    `seconds` is a number, or a function drawn once per request (e.g. a seeded random
    choice). `before=False` serves the request at once and holds its answer (the client
    learns of a write late, or reads a state that is old by then); `before=True` holds the
    request before it is served (a write is applied late). `held` counts the requests held
    now; `release()` answers them at once and ends the delay.
    """

    seconds: float | Callable[[], float]
    remaining: int
    method: str | None = None
    path_contains: str | None = None
    before: bool = False
    held: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def matches(self, method: str, path_qs: str) -> bool:
        return _matches(self.remaining, self.method, self.path_contains, method, path_qs)

    def release(self) -> None:
        """Stop delaying: answer every held request now and let later ones through."""
        self.remaining = 0
        self.released.set()

    async def hold(self, sleep: Sleep) -> None:
        """Wait this request's delay on `sleep`, or until released."""
        seconds = self.seconds() if callable(self.seconds) else self.seconds
        self.held += 1
        waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(self.released.wait())}
        if seconds < math.inf:
            waits.add(asyncio.ensure_future(sleep(seconds)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.held -= 1
            for waiting in waits:
                waiting.cancel()


@dataclass
class Lost:
    """The next `remaining` matching requests are served — the change is made — and then
    the connection is dropped without an answer, as when a response is lost on the way."""

    remaining: int
    method: str | None = None
    path_contains: str | None = None

    def matches(self, method: str, path_qs: str) -> bool:
        return _matches(self.remaining, self.method, self.path_contains, method, path_qs)


@dataclass
class Admission:
    """At most `per_second` matching requests a second are served (a token bucket holding
    `burst`, by default a tenth of a second's worth); the rest are answered 429 with
    `Retry-After`, before any state change, the way API Priority and Fairness refuses what
    its queues cannot hold. `admitted` and `refused` count them."""

    per_second: float
    monotonic: Callable[[], float]
    method: str | None = "POST"
    path_contains: str | None = None
    retry_after: int = 1
    burst: float | None = None
    admitted: int = 0
    refused: int = 0
    _tokens: float = -1.0
    _updated: float = 0.0

    def take(self, method: str, path_qs: str) -> ApiStatusError | None:
        """None to serve the request; else the 429 to answer it with."""
        if not _matches(1, self.method, self.path_contains, method, path_qs):
            return None
        burst = self.burst if self.burst is not None else max(1.0, self.per_second / 10)
        now = self.monotonic()
        if self._tokens < 0:  # the first request: a bucket that was full
            self._tokens, self._updated = burst, now
        self._tokens = min(burst, self._tokens + (now - self._updated) * self.per_second)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            self.admitted += 1
            return None
        self.refused += 1
        message = "Too many requests, please try again later."
        return ApiStatusError(429, message, headers={"Retry-After": str(self.retry_after)})
