"""The virtual clock's wall-clock steps and `WallSteps`, which notices them."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from trigger.clock import VIRTUAL_EPOCH, VirtualClock, WallSteps


async def test_step_wall_moves_only_the_wall_clock() -> None:
    """step_wall moves now() but neither monotonic() nor any sleeper."""
    clock = VirtualClock()
    sleeper = asyncio.ensure_future(clock.sleep(10))
    await asyncio.sleep(0)
    clock.step_wall(3600)
    clock.step_wall(-60)
    await asyncio.sleep(0)
    assert clock.now() == VIRTUAL_EPOCH + timedelta(seconds=3540)
    assert clock.monotonic() == 0.0
    assert not sleeper.done()
    await clock.advance(10)
    assert sleeper.done()
    assert clock.now() == VIRTUAL_EPOCH + timedelta(seconds=3550)


@pytest.mark.parametrize(
    ("step", "seen"),
    [(0.0, 0.0), (0.4, 0.0), (-0.4, 0.0), (0.6, 0.6), (-60.0, -60.0), (3600.0, 3600.0)],
)
async def test_wall_steps_reports_steps_beyond_the_tolerance(step: float, seen: float) -> None:
    """A difference between the clocks' progress beyond 0.5 s is reported, with its sign."""
    clock = VirtualClock()
    steps = WallSteps(clock)
    await clock.advance(1)
    clock.step_wall(step)
    await clock.advance(1)
    assert steps.check() == pytest.approx(seen)


async def test_wall_steps_reports_a_step_once() -> None:
    """After reporting a step, the next check compares from the stepped clock."""
    clock = VirtualClock()
    steps = WallSteps(clock)
    clock.step_wall(-60)
    assert steps.check() == -60.0
    await clock.advance(30)
    assert steps.check() == 0.0


async def test_wall_steps_ignores_time_passing() -> None:
    """Time passing alike on both clocks, however much, is no step."""
    clock = VirtualClock()
    steps = WallSteps(clock)
    for seconds in (0.001, 1.0, 86400.0):
        await clock.advance(seconds)
        assert steps.check() == 0.0
