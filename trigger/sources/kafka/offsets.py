"""In-flight accounting: per partition, what may be committed and when to pause; per
process, how many records are held at once.

Records of one partition are handled concurrently, so they finish out of order; the
partition's committable offset is one past the longest finished prefix of what was taken.
The window is every offset taken and not yet passed by that point, finished or not: its
size is the partition's in-flight count, bounded by `bound`. A full window pauses the
partition (and the caller rewinds the fetch position), so a slow or failing record holds
at most `bound` records in memory and on redelivery, never an unbounded buffer. The
partition resumes when the window has drained to half the bound, so it does not flap
between paused and fetching on every record.

Per-partition bounds alone let memory grow with the number of partitions a replica is
given, so every window also draws on one `InFlightBudget` for the whole process (all
clusters, all groups): the records taken and not yet finished. At its bound every
partition pauses, and they resume once a quarter of it is free again (so a resumption
admits a useful amount, yet records that wait long — a rate-limited rule, a failing
backend — keep the others waiting only once they fill three quarters of it). It counts
unfinished records only — a finished record waiting behind a slower one for its commit is
no longer held (its window keeps just the offset) — and every record it counts is
already being worked on, never waiting for room, so commits still advance and nothing
waits on itself.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


class InFlightBudget:
    """Records taken from any partition and not yet finished, against one bound."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.in_flight = 0
        self.peak = 0  # the high-water mark of `in_flight`
        self.held = False  # reached the bound: no room until a quarter of it is free
        self._watchers: list[Callable[[], None]] = []

    @property
    def room(self) -> int:
        """How many more records may be taken now."""
        return 0 if self.held else self.bound - self.in_flight

    def watch(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever `held` changes."""
        self._watchers.append(callback)

    def unwatch(self, callback: Callable[[], None]) -> None:
        if callback in self._watchers:
            self._watchers.remove(callback)

    def take(self, count: int) -> None:
        if count > self.room:
            raise ValueError(f"{count} records taken with room for {self.room}")
        self.in_flight += count
        self.peak = max(self.peak, self.in_flight)
        if self.in_flight >= self.bound:
            self._hold(True)

    def release(self, count: int) -> None:
        self.in_flight -= count
        if self.held and self.in_flight <= self.bound - max(self.bound // 4, 1):
            self._hold(False)

    def _hold(self, held: bool) -> None:
        if held != self.held:
            self.held = held
            for callback in list(self._watchers):
                callback()


def _unbounded() -> InFlightBudget:
    return InFlightBudget(sys.maxsize)


@dataclass
class PartitionWindow:
    """Offsets taken from one partition and not yet committable, in fetch order."""

    bound: int
    budget: InFlightBudget = field(default_factory=_unbounded)  # the process's; own if none
    taken: deque[int] = field(default_factory=deque)
    finished: set[int] = field(default_factory=set)
    commit_point: int | None = None  # the next offset to read once committed
    committed: int | None = None  # the last commit_point written to the group
    paused: bool = False  # fetching from the partition is paused (for whatever reason)
    held: bool = False  # the window filled up and has not yet drained to half
    retired: bool = False  # given up (revoked, topics changed, stopping): takes nothing more
    released: bool = False  # its unfinished records were handed back to the budget
    peak: int = 0  # the largest in-flight count seen
    next_offset: int | None = None  # one past the last offset taken: where the log goes on
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def in_flight(self) -> int:
        return len(self.taken)

    @property
    def unfinished(self) -> int:
        return len(self.taken) - len(self.finished)

    @property
    def full(self) -> bool:
        return len(self.taken) >= self.bound

    @property
    def drained(self) -> bool:
        """Low enough to resume fetching."""
        return len(self.taken) <= self.bound // 2

    @property
    def room(self) -> int:
        """How many more records this partition may take now (the budget permitting)."""
        if self.held or self.retired:
            return 0
        return min(self.bound - len(self.taken), self.budget.room)

    def take(self, offset: int) -> None:
        if self.taken and offset <= self.taken[-1]:
            raise ValueError(f"offset {offset} taken after {self.taken[-1]}")
        self.budget.take(1)
        self.taken.append(offset)
        self.next_offset = offset + 1
        self.peak = max(self.peak, len(self.taken))
        self.held = self.held or self.full

    def finish(self, offset: int) -> None:
        """Mark `offset` done; the commit point advances over the finished prefix."""
        if offset in self.finished:
            return
        self.finished.add(offset)
        while self.taken and self.taken[0] in self.finished:
            head = self.taken.popleft()
            self.finished.discard(head)
            self.commit_point = head + 1
        self.held = self.held and not self.drained
        if not self.released:
            self.budget.release(1)

    def release(self) -> None:
        """Hand the unfinished records back to the budget: the window is being dropped, and
        whatever of it did not finish is never committed (the next owner redoes it)."""
        if not self.released:
            self.released = True
            self.budget.release(self.unfinished)

    def to_commit(self) -> int | None:
        """The offset to commit now, or None when the group already has it."""
        if self.commit_point is None or self.commit_point == self.committed:
            return None
        return self.commit_point
