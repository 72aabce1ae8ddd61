"""Retry policy for temporary submit errors: how long to wait, and when to give up.

A rule's `retry` (default: limit 8, backoff 1s ×2 up to 2m) is turned into a `RetryPolicy`,
with the daemon's `RetryCaps` applied on top so no rule can hold an event for ever: a cap
on the number of retries and a budget for the total time spent waiting between attempts.

Decisions:

- `limit` counts retries, as Argo's `retryStrategy.limit` does: limit 8 means up to 9
  attempts; limit 0 means one attempt.
- The wait before retry `n` (n = 1, 2, …) is `min(max, initial × factor^(n-1))` less a
  random share of up to `jitter` of it (jitter 0.2: 80–100 % of the step; jitter 1: "full
  jitter"), so replicas that failed together do not come back together.
- `Retry-After` is a floor: we never come back sooner than the server asked, even when it
  asks for more than the rule's `max`. It is spread upward by up to `jitter` of itself,
  for the same reason as above. A wait that does not fit in what is left of the
  total-delay budget ends the retries at once (the caller then re-raises, letting the
  sender redeliver later, or dead-letters) rather than hammering the server early.
- Randomness comes only from the `random.Random` passed in, so a seeded one gives the same
  waits every run.

Why not tenacity: its jittered waits draw from the global `random` module (not seedable
per submitter), `Retry-After` and the total budget would need custom wait and stop
callables anyway, and the submitter must report each retry to its hooks and stop on
three different outcomes; what would remain of tenacity is a ten-line loop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from trigger.rules.model import Retry


@dataclass(frozen=True)
class RetryCaps:
    """Daemon-wide ceilings applied on top of every rule's retry policy."""

    max_attempts_cap: int = 100  # attempts, the first one included
    max_total_delay: float = 900.0  # seconds spent waiting between attempts, in total
    jitter: float = 0.2  # the random share taken off each backoff step (0..1)


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often to retry one submission."""

    limit: int = 8
    initial: float = 1.0
    factor: float = 2.0
    max_delay: float = 120.0
    jitter: float = 0.2
    max_total_delay: float = 900.0

    def __post_init__(self) -> None:
        if self.limit < 0 or self.initial < 0 or self.factor < 1 or self.max_delay < 0:
            raise ValueError(f"invalid retry policy: {self}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within 0..1, got {self.jitter}")

    @classmethod
    def for_rule(cls, retry: Retry | None, caps: RetryCaps | None = None) -> RetryPolicy:
        """The policy a rule asked for (defaults when it did not), within the caps."""
        retry = retry or Retry()
        caps = caps or RetryCaps()
        return cls(
            limit=max(0, min(retry.limit, caps.max_attempts_cap - 1)),
            initial=retry.backoff.initial,
            factor=retry.backoff.factor,
            max_delay=retry.backoff.max,
            jitter=caps.jitter,
            max_total_delay=caps.max_total_delay,
        )

    def backoff(self, attempt: int) -> float:
        """The un-jittered wait after failed attempt number `attempt` (1-based)."""
        exponent = max(0, attempt - 1)
        # Step by step, stopping at the cap, so a large attempt number cannot overflow.
        step = self.initial
        for _ in range(exponent):
            step *= self.factor
            if step >= self.max_delay:
                return self.max_delay
        return min(step, self.max_delay)

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt `attempt`, honouring the server's Retry-After."""
        wait = self.backoff(attempt) * (1.0 - self.jitter * rng.random())
        if retry_after is not None and retry_after > 0:
            wait = max(wait, retry_after * (1.0 + self.jitter * rng.random()))
        return wait

    def exhausted(self, attempt: int, waited: float, next_delay: float) -> bool:
        """True when attempt `attempt` was the last one allowed, or the wait would not fit."""
        return attempt > self.limit or waited + next_delay > self.max_total_delay
