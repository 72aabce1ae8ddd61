"""Misbehaviour tests inject: failures, held requests and skewed dates, for matching requests.

Each applies to `remaining` requests matching a method and an operation, after letting
`skip` others through.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class Match:
    """Which requests an injection applies to: `remaining` of them, after `skip` others."""

    method: str | None
    operation: str | None
    remaining: int = 1
    skip: int = 0

    def take(self, method: str, operation: str) -> bool:
        """Whether this request is one of them (and count it)."""
        if self.remaining <= 0 or self.method not in (None, method):
            return False
        if self.operation not in (None, operation):
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        self.remaining -= 1
        return True


@dataclass
class Injection:
    """An OSS error (`status`, `code`, `message`) answered before any state change."""

    status: int
    code: str
    message: str
    match: Match


@dataclass
class DateSkew:
    """A reply `Date` off the server's clock by `seconds`, as a misbehaving front end sends."""

    seconds: float
    match: Match


@dataclass
class Hold:
    """A request the server keeps waiting until `release()`; `reached` is set meanwhile."""

    match: Match
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()
