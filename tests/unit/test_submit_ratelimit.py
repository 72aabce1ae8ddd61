"""Virtual clock, token buckets and per-rule rate limiters — all in virtual time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trigger.clock import SystemClock, VirtualClock
from trigger.rules.loader import load_rules
from trigger.rules.rule import Rule
from trigger.submit.ratelimit import RateLimiters, TokenBucket

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def rule_text(name: str, rate_limit: str | None) -> str:
    limit = f"\n  rateLimit: {rate_limit}" if rate_limit else ""
    return f"""
apiVersion: trigger/v1
kind: Rule
metadata: {{name: {name}}}
spec:
  source: {{kafka: {{topics: [orders]}}}}
  workflow: {{template: ingest}}{limit}
"""


def load_rule(write: Callable[..., Path], name: str, rate_limit: str | None) -> Rule:
    return load_rules([write(rule_text(name, rate_limit), f"{name}.yaml")]).by_name[name]


async def wake_times(clock: VirtualClock, delays: list[float]) -> list[float]:
    woke: list[float] = []

    async def sleeper(delay: float) -> None:
        await clock.sleep(delay)
        woke.append(clock.monotonic())

    tasks = [asyncio.create_task(sleeper(d)) for d in delays]
    await clock.run_until_idle()
    await asyncio.gather(*tasks)
    return woke


# --- the virtual clock ------------------------------------------------------------------


async def test_virtual_sleep_waits_for_advance() -> None:
    """A virtual sleep does not end until the clock is advanced past its deadline."""
    clock = VirtualClock(START)
    task = asyncio.create_task(clock.sleep(10))
    await clock.advance(9.5)
    assert not task.done()
    await clock.advance(0.5)
    assert task.done()
    assert clock.now() == START + timedelta(seconds=10)


async def test_sleepers_wake_in_deadline_order() -> None:
    """Sleepers wake in deadline order, each reading its own deadline as the time."""
    clock = VirtualClock(START)
    assert await wake_times(clock, [3.0, 1.0, 2.0, 1.0]) == [1.0, 1.0, 2.0, 3.0]


async def test_advance_without_sleepers_moves_time() -> None:
    """advance() moves now() and monotonic() even when nobody sleeps."""
    clock = VirtualClock(START)
    await clock.advance(90)
    assert (clock.monotonic(), clock.now()) == (90.0, START + timedelta(seconds=90))


async def test_auto_mode_jumps_when_the_loop_is_idle() -> None:
    """In auto mode an awaited sleep returns on its own, with time moved to its deadline."""
    clock = VirtualClock(START, auto=True)
    await clock.sleep(3600)
    assert clock.monotonic() == 3600.0


async def test_auto_mode_keeps_order_across_sleepers() -> None:
    """In auto mode concurrent sleepers wake in deadline order."""
    clock = VirtualClock(auto=True)
    woke: list[float] = []

    async def sleeper(delay: float) -> None:
        await clock.sleep(delay)
        woke.append(clock.monotonic())

    await asyncio.gather(*(sleeper(d) for d in [5.0, 1.0, 3.0]))
    assert woke == [1.0, 3.0, 5.0]


async def test_cancelled_sleeper_is_forgotten() -> None:
    """A cancelled sleep is dropped: run_until_idle does not jump to its deadline."""
    clock = VirtualClock(START)
    task = asyncio.create_task(clock.sleep(100))
    await clock.advance(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await clock.run_until_idle()
    assert (clock.monotonic(), clock.sleeping) == (1.0, 0)


async def test_zero_sleep_only_yields() -> None:
    """sleep(0) returns without anyone advancing the clock."""
    clock = VirtualClock(START)
    await clock.sleep(0)
    assert clock.monotonic() == 0.0


def test_naive_start_is_refused() -> None:
    """A naive start time is a ValueError: now() is always aware UTC."""
    with pytest.raises(ValueError, match="aware"):
        VirtualClock(datetime(2025, 1, 1))


def test_system_clock_now_is_aware_utc() -> None:
    """The system clock's now() is aware and in UTC."""
    assert SystemClock().now().utcoffset() == timedelta(0)


# --- token buckets ----------------------------------------------------------------------


def test_burst_is_available_at_once_then_empty() -> None:
    """A full bucket gives `burst` tokens at once, then try_acquire fails."""
    bucket = TokenBucket(2.0, 3, VirtualClock())
    assert [bucket.try_acquire() for _ in range(4)] == [True, True, True, False]


async def test_bucket_refills_with_time() -> None:
    """An empty bucket gives one token per 1/rate seconds, never more than burst."""
    clock = VirtualClock()
    bucket = TokenBucket(2.0, 2, clock)
    assert bucket.try_acquire() and bucket.try_acquire()
    await clock.advance(0.5)
    assert [bucket.try_acquire(), bucket.try_acquire()] == [True, False]
    await clock.advance(100)
    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]


async def test_acquire_waits_in_order() -> None:
    """At 2/s with burst 2, five acquirers get tokens at 0, 0, 0.5, 1.0 and 1.5 s."""
    clock = VirtualClock(auto=True)
    bucket = TokenBucket(2.0, 2, clock)
    got: list[float] = []

    async def take() -> None:
        await bucket.acquire()
        got.append(clock.monotonic())

    await asyncio.gather(*(take() for _ in range(5)))
    assert got == [0.0, 0.0, 0.5, 1.0, 1.5]


async def test_try_acquire_does_not_jump_the_queue() -> None:
    """While an acquirer waits for a reserved token, try_acquire gets nothing."""
    clock = VirtualClock()
    bucket = TokenBucket(1.0, 1, clock)
    await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await clock.advance(0.5)
    assert not bucket.try_acquire()
    await clock.advance(0.5)
    await waiter
    assert not bucket.try_acquire()


async def test_cancelled_acquire_gives_its_token_back() -> None:
    """A cancelled waiting acquire returns its reservation to the bucket."""
    clock = VirtualClock()
    bucket = TokenBucket(1.0, 1, clock)
    await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await clock.advance(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await clock.advance(0.9)
    assert bucket.try_acquire()


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_invalid_bucket_is_refused(rate: float, burst: int) -> None:
    """A non-positive rate or a burst below 1 is a ValueError."""
    with pytest.raises(ValueError, match="invalid token bucket"):
        TokenBucket(rate, burst, VirtualClock())


# --- per-rule limiters ------------------------------------------------------------------


def test_rule_without_rate_limit_has_no_bucket(write_rules: Callable[..., Path]) -> None:
    """A rule without `rateLimit` is not limited."""
    limiters = RateLimiters(VirtualClock())
    assert limiters.bucket(load_rule(write_rules, "free", None)) is None


def test_bucket_follows_the_rule_limit(write_rules: Callable[..., Path]) -> None:
    """The bucket is built from the rule's perSecond and burst."""
    limiters = RateLimiters(VirtualClock())
    bucket = limiters.bucket(load_rule(write_rules, "slow", "{perSecond: 5, burst: 10}"))
    assert bucket is not None
    assert (bucket.rate, bucket.burst) == (5.0, 10)


def test_same_limit_after_reload_keeps_the_bucket(write_rules: Callable[..., Path]) -> None:
    """Reloading a rule with an unchanged limit keeps its bucket (and its spent tokens)."""
    limiters = RateLimiters(VirtualClock())
    first = limiters.bucket(load_rule(write_rules, "slow", "{perSecond: 1, burst: 1}"))
    again = limiters.bucket(load_rule(write_rules, "slow", "{perSecond: 1, burst: 1}"))
    assert first is not None and first is again


def test_changed_limit_replaces_the_bucket(write_rules: Callable[..., Path]) -> None:
    """Reloading a rule with a new limit gives it a new bucket with the new numbers."""
    limiters = RateLimiters(VirtualClock())
    first = limiters.bucket(load_rule(write_rules, "slow", "{perSecond: 1, burst: 1}"))
    second = limiters.bucket(load_rule(write_rules, "slow", "{perSecond: 3, burst: 4}"))
    assert second is not None and second is not first
    assert (second.rate, second.burst) == (3.0, 4)


def test_buckets_are_per_rule(write_rules: Callable[..., Path]) -> None:
    """Two rules with equal limits get separate buckets."""
    limiters = RateLimiters(VirtualClock())
    one = limiters.bucket(load_rule(write_rules, "one", "{perSecond: 1}"))
    two = limiters.bucket(load_rule(write_rules, "two", "{perSecond: 1}"))
    assert one is not None and two is not None and one is not two


def test_retain_forgets_removed_rules(write_rules: Callable[..., Path]) -> None:
    """retain() drops the buckets of rules no longer loaded."""
    limiters = RateLimiters(VirtualClock())
    rule = load_rule(write_rules, "gone", "{perSecond: 1}")
    first = limiters.bucket(rule)
    limiters.retain({"other"})
    assert limiters.bucket(rule) is not first


async def test_limiters_acquire_waits_for_the_rule(write_rules: Callable[..., Path]) -> None:
    """RateLimiters.acquire waits on the rule's bucket; an unlimited rule never waits."""
    clock = VirtualClock(auto=True)
    limiters = RateLimiters(clock)
    slow = load_rule(write_rules, "slow", "{perSecond: 0.5, burst: 1}")
    free = load_rule(write_rules, "free", None)
    for _ in range(3):
        await limiters.acquire(free)
    assert clock.monotonic() == 0.0
    await limiters.acquire(slow)
    await limiters.acquire(slow)
    assert clock.monotonic() == 2.0


async def test_virtual_clock_reports_the_next_wake() -> None:
    """until_next_wake is the time to the earliest sleeper, or None when nobody sleeps."""
    from trigger.clock import VirtualClock

    clock = VirtualClock()
    assert clock.until_next_wake() is None
    sleepers = [asyncio.create_task(clock.sleep(s)) for s in (30, 10)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert clock.until_next_wake() == 10
    await clock.advance(4)
    assert clock.until_next_wake() == 6
    await clock.advance(30)
    await asyncio.gather(*sleepers)
    assert clock.until_next_wake() is None
