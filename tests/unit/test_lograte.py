"""LogRate: the first occurrence is logged, repeats once per interval with a count."""

from __future__ import annotations

from trigger.clock import VirtualClock
from trigger.core.lograte import LOG_EVERY, LogRate


async def test_repeats_are_logged_once_per_interval_with_their_count() -> None:
    """Within LOG_EVERY of a line only the count grows; the next line says how many were left out."""
    clock = VirtualClock()
    rate = LogRate(clock)
    assert rate.due("a") == 0
    assert [rate.due("a") for _ in range(4)] == [None] * 4
    assert rate.due("b") == 0  # each key has its own interval
    await clock.advance(LOG_EVERY - 0.001)
    assert rate.due("a") is None
    await clock.advance(0.001)
    assert rate.due("a") == 5
    assert rate.due("a") is None
