"""Per-partition commit tracking: which offset may be committed, and when to pause.

Records of one partition are handled concurrently, so they finish out of order; the
partition's committable offset is one past the longest finished prefix of what was taken.
The window is every offset taken and not yet passed by that point, finished or not: its
size is the partition's in-flight count, bounded by `bound`. A full window pauses the
partition (and the caller rewinds the fetch position), so a slow or failing record holds
at most `bound` records in memory and on redelivery, never an unbounded buffer. The
partition resumes when the window has drained to half the bound, so it does not flap
between paused and fetching on every record.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field


@dataclass
class PartitionWindow:
    """Offsets taken from one partition and not yet committable, in fetch order."""

    bound: int
    taken: deque[int] = field(default_factory=deque)
    finished: set[int] = field(default_factory=set)
    commit_point: int | None = None  # the next offset to read once committed
    committed: int | None = None  # the last commit_point written to the group
    paused: bool = False
    peak: int = 0  # the largest in-flight count seen
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def in_flight(self) -> int:
        return len(self.taken)

    @property
    def full(self) -> bool:
        return len(self.taken) >= self.bound

    @property
    def drained(self) -> bool:
        """Low enough to resume fetching."""
        return len(self.taken) <= self.bound // 2

    def take(self, offset: int) -> None:
        if self.taken and offset <= self.taken[-1]:
            raise ValueError(f"offset {offset} taken after {self.taken[-1]}")
        self.taken.append(offset)
        self.peak = max(self.peak, len(self.taken))

    def finish(self, offset: int) -> None:
        """Mark `offset` done; the commit point advances over the finished prefix."""
        self.finished.add(offset)
        while self.taken and self.taken[0] in self.finished:
            head = self.taken.popleft()
            self.finished.discard(head)
            self.commit_point = head + 1

    def to_commit(self) -> int | None:
        """The offset to commit now, or None when the group already has it."""
        if self.commit_point is None or self.commit_point == self.committed:
            return None
        return self.commit_point
