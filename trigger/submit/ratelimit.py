"""Rate limiting: token buckets on an injected clock, and one bucket per rule.

`TokenBucket.acquire` reserves a token at once and, when the bucket is empty, waits until
that reservation is covered — the token count goes negative — so waiters are served in
the order they came and none of them polls. `try_acquire` never reserves ahead: it only
takes a token that is there, so it cannot jump the queue of waiting reservations.

`RateLimiters` holds the buckets of the rules that declare `rateLimit`, keyed by rule name,
created on first use and replaced when a reloaded rule's limit changes. The same
`TokenBucket` serves as a client-side QPS limiter for any API client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

from trigger.clock import Clock
from trigger.rules.model import RateLimit
from trigger.rules.rule import Rule


class TokenBucket:
    """`rate_per_second` tokens a second, at most `burst` saved up."""

    def __init__(self, rate_per_second: float, burst: int, clock: Clock) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError(f"invalid token bucket: {rate_per_second}/s, burst {burst}")
        self.rate = rate_per_second
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock.monotonic()

    def try_acquire(self) -> bool:
        """Take a token if one is there now; never waits."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def acquire(self, on_wait: Callable[[float], None] | None = None) -> None:
        """Take a token, waiting on the clock for as long as the bucket needs to refill;
        `on_wait` hears how long, before the wait."""
        self._refill()
        self._tokens -= 1
        if self._tokens >= 0:
            return
        delay = -self._tokens / self.rate
        if on_wait is not None:
            on_wait(delay)
        try:
            await self._clock.sleep(delay)
        except asyncio.CancelledError:
            self._tokens += 1  # the reservation was never used: give it back
            raise

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now


class RateLimiters:
    """The per-rule buckets of one submitter."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[RateLimit, TokenBucket]] = {}

    def bucket(self, rule: Rule) -> TokenBucket | None:
        """The rule's bucket (None when it has no rate limit); new when its limit changed."""
        limit = rule.document.spec.rateLimit
        if limit is None:
            self._buckets.pop(rule.name, None)
            return None
        known = self._buckets.get(rule.name)
        if known is not None and known[0] == limit:
            return known[1]
        bucket = TokenBucket(limit.perSecond, limit.burst, self._clock)
        self._buckets[rule.name] = (limit, bucket)
        return bucket

    async def acquire(self, rule: Rule, on_wait: Callable[[float], None] | None = None) -> None:
        """Wait for the rule's rate limit, if it has one (`on_wait`: see TokenBucket)."""
        bucket = self.bucket(rule)
        if bucket is not None:
            await bucket.acquire(on_wait)

    def retain(self, names: Collection[str]) -> None:
        """Forget the buckets of rules that are gone (call after a reload)."""
        for name in [n for n in self._buckets if n not in names]:
            del self._buckets[name]
