"""Clocks: the one seam through which trigger reads time and waits.

Everything that waits or stamps (backoff, rate limits, cron, leader election) takes a
`Clock`, so tests run in virtual time: `VirtualClock` moves only when told to, and a test
of a two-minute backoff storm finishes in milliseconds with exact, repeatable timings.

`VirtualClock` semantics:

- `sleep(s)` registers a sleeper due at `monotonic() + s` and waits for it to be woken;
  `sleep(0)` (or less) only yields to the loop, as `asyncio.sleep(0)` does.
- `await advance(s)` lets the loop settle, then wakes due sleepers in deadline order (the
  clock reads each sleeper's deadline when it wakes), letting the loop settle after each,
  and finally reads `s` later than before.
- `await run_until_idle()` keeps jumping to the earliest deadline until nobody sleeps.
- `step_wall(s)` steps the wall clock alone by `s` seconds (negative: back), as NTP or a
  resumed VM does: `now()` moves, `monotonic()` and the sleepers do not.
- `auto=True`: a sleeper itself jumps the clock to the earliest deadline once the loop has
  gone quiet (it yielded `settle_cycles` times and meanwhile nobody slept or woke), so a
  test simply awaits the code under test. As with looptime, time then passes whenever
  the loop would otherwise idle; "quiet" is judged by yielding, so work that waits on a
  thread or a socket for real time may see virtual time jump meanwhile — drive such tests
  with `advance` instead.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

VIRTUAL_EPOCH: Final = datetime(2025, 1, 1, tzinfo=UTC)
STEP_TOLERANCE: Final = 0.5  # seconds: a smaller difference between the clocks is no step


class Clock(Protocol):
    """Where time comes from."""

    def now(self) -> datetime:
        """Wall-clock time, aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences mean anything."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` on this clock."""
        ...


class WallSteps:
    """Notices steps of the wall clock: NTP stepping it, a resumed VM, an operator.

    Each `check()` compares how far the wall clock and the monotonic clock moved since the
    previous one; a difference beyond `tolerance` seconds is a step. Checking often (every
    second or so) keeps the slow rate corrections of NTP slewing far below the tolerance.
    """

    def __init__(self, clock: Clock, tolerance: float = STEP_TOLERANCE) -> None:
        self._clock = clock
        self._tolerance = tolerance
        self._wall, self._mono = clock.now(), clock.monotonic()

    def check(self) -> float:
        """Seconds the wall clock stepped since the last check (negative: back), or 0.0."""
        wall, mono = self._clock.now(), self._clock.monotonic()
        step = (wall - self._wall).total_seconds() - (mono - self._mono)
        self._wall, self._mono = wall, mono
        return step if abs(step) > self._tolerance else 0.0


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass(order=True)
class _Sleeper:
    deadline: float
    seq: int  # equal deadlines wake in the order they were registered
    future: asyncio.Future[None] = field(compare=False)


class VirtualClock:
    """A clock that moves only when a test (or, in auto mode, an idle loop) moves it."""

    def __init__(
        self, start: datetime = VIRTUAL_EPOCH, *, auto: bool = False, settle_cycles: int = 50
    ) -> None:
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs an aware start time")
        self._start = start.astimezone(UTC)
        self._elapsed = 0.0
        self._wall_offset = timedelta(0)
        self._auto = auto
        self._settle_cycles = settle_cycles
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()
        # Bumped on every registration and wake-up: an auto-mode sleeper only jumps the
        # clock when nothing clock-related happened while it let the loop settle.
        self._epoch = 0

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed) + self._wall_offset

    def monotonic(self) -> float:
        return self._elapsed

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock alone by `seconds` (negative: back); nobody is woken."""
        self._wall_offset += timedelta(seconds=seconds)

    @property
    def sleeping(self) -> int:
        """How many sleepers are waiting to be woken."""
        return sum(1 for s in self._sleepers if not s.future.done())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, _Sleeper(self._elapsed + seconds, next(self._seq), future))
        self._epoch += 1
        try:
            if self._auto:
                await self._drive(future)
            await future
        finally:
            future.cancel()  # a no-op once woken; marks a cancelled sleeper dead

    def until_next_wake(self) -> float | None:
        """Seconds until the earliest sleeper is due, or None when nobody sleeps."""
        deadline = self._next_deadline()
        return None if deadline is None else max(0.0, deadline - self._elapsed)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking every sleeper that falls due on the way."""
        target = self._elapsed + max(0.0, seconds)
        await self._settle()
        while (deadline := self._next_deadline()) is not None and deadline <= target:
            self._wake_next()
            await self._settle()
        self._elapsed = max(self._elapsed, target)
        await self._settle()

    async def run_until_idle(self, *, max_steps: int = 100_000) -> None:
        """Jump from deadline to deadline until nobody sleeps (a periodic task never ends)."""
        await self._settle()
        for _ in range(max_steps):
            if not self._wake_next():
                return
            await self._settle()
        raise RuntimeError(f"still sleeping after {max_steps} wake-ups: a periodic task?")

    async def _drive(self, future: asyncio.Future[None]) -> None:
        while not future.done():
            epoch = self._epoch
            await self._settle()
            if not future.done() and epoch == self._epoch:
                self._wake_next()

    async def _settle(self) -> None:
        for _ in range(self._settle_cycles):
            await asyncio.sleep(0)

    def _next_deadline(self) -> float | None:
        while self._sleepers and self._sleepers[0].future.done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0].deadline if self._sleepers else None

    def _wake_next(self) -> bool:
        """Jump to the earliest deadline and wake everyone due then; False if none sleeps."""
        deadline = self._next_deadline()
        if deadline is None:
            return False
        self._elapsed = max(self._elapsed, deadline)
        while self._sleepers and self._sleepers[0].deadline <= self._elapsed:
            sleeper = heapq.heappop(self._sleepers)
            if not sleeper.future.done():
                sleeper.future.set_result(None)
        self._epoch += 1
        return True
