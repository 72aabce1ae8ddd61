"""A FIFO concurrency limit whose acquire and release cost O(1) however many wait.

`asyncio.Semaphore` (3.11) scans its waiters on every release and removes each woken
waiter from the middle of a deque, so a burst of releases with hundreds of callers queued
costs O(waiters²): with 512 Workflows in flight behind a batched local-sink write, the
releases after each batch took more CPU than creating the Workflows. Here a release hands
its slot straight to the first live waiter (no counter juggling, nothing to remove later);
a waiter cancelled after being handed a slot passes it on, so no slot is ever lost.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType


class Slots:
    """At most `size` holders at once; waiters are served in arrival order."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def held(self) -> int:
        """Slots currently held (handed-over slots whose waiter has not run yet count)."""
        return self.size - self._free

    @property
    def waiting(self) -> int:
        """Callers queued for a slot (cancelled ones not yet skipped may be included)."""
        return len(self._waiters)

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # done only by release(), which handed us its slot
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, then cancelled: pass the slot on
            raise  # else still queued: release() skips cancelled waiters

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        if self._free >= self.size:
            raise RuntimeError("Slots released more often than acquired")
        self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
