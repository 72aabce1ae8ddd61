"""Retry policy: defaults and caps, exponential backoff, jitter, Retry-After, giving up."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from trigger.rules.loader import load_rules
from trigger.rules.model import Backoff, Retry
from trigger.submit.retry import RetryCaps, RetryPolicy

RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: patient}
spec:
  source: {kafka: {topics: [orders]}}
  workflow: {template: ingest}
  retry: {limit: 40, backoff: {initial: 500ms, factor: 3, max: 1m}}
"""


def test_defaults_without_a_rule_retry() -> None:
    """A rule without `retry` gets limit 8, 1s initial, factor 2, 2m max."""
    policy = RetryPolicy.for_rule(None)
    assert (policy.limit, policy.initial, policy.factor, policy.max_delay) == (8, 1.0, 2.0, 120.0)


def test_rule_retry_is_read_from_the_rule_file(write_rules: Callable[..., Path]) -> None:
    """The rule file's retry limit and backoff (durations parsed) become the policy."""
    rule = load_rules([write_rules(RULE)]).by_name["patient"]
    policy = RetryPolicy.for_rule(rule.document.spec.retry)
    assert (policy.limit, policy.initial, policy.factor, policy.max_delay) == (40, 0.5, 3.0, 60.0)


@pytest.mark.parametrize(
    ("limit", "cap", "expected"),
    [(8, 100, 8), (1000, 100, 99), (1000, 1, 0), (0, 100, 0)],
)
def test_attempts_cap_bounds_the_rule_limit(limit: int, cap: int, expected: int) -> None:
    """The daemon's attempts cap (first attempt included) bounds any rule's retry limit."""
    policy = RetryPolicy.for_rule(Retry(limit=limit), RetryCaps(max_attempts_cap=cap))
    assert policy.limit == expected


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (6, 10.0), (10_000, 10.0)],
)
def test_backoff_grows_exponentially_up_to_the_max(attempt: int, expected: float) -> None:
    """Without jitter the wait is initial × factor^(attempt-1), capped at max."""
    policy = RetryPolicy(limit=10, initial=1.0, factor=2.0, max_delay=10.0, jitter=0.0)
    assert policy.delay(attempt, None, random.Random(0)) == expected


@pytest.mark.parametrize("jitter", [0.2, 0.5, 1.0])
def test_jitter_takes_at_most_its_share_off(jitter: float) -> None:
    """Jittered waits stay within [step × (1 - jitter), step] and actually vary."""
    policy = RetryPolicy(initial=4.0, factor=1.0, max_delay=4.0, jitter=jitter)
    rng = random.Random(1)
    waits = [policy.delay(1, None, rng) for _ in range(200)]
    assert all(4.0 * (1 - jitter) <= w <= 4.0 for w in waits)
    assert len(set(waits)) > 100


def test_seeded_rng_gives_the_same_waits() -> None:
    """Two policies fed equally seeded generators wait exactly the same."""
    policy = RetryPolicy()
    first = [policy.delay(n, None, random.Random(42)) for n in range(1, 9)]
    second = [policy.delay(n, None, random.Random(42)) for n in range(1, 9)]
    other = [policy.delay(n, None, random.Random(43)) for n in range(1, 9)]
    assert first == second
    assert first != other


@pytest.mark.parametrize(
    ("attempt", "retry_after"),
    [(1, 3.0), (1, 0.5), (3, 600.0), (8, 1.0)],
)
def test_retry_after_is_a_floor(attempt: int, retry_after: float) -> None:
    """The wait is never shorter than Retry-After, even beyond the rule's max."""
    policy = RetryPolicy(initial=1.0, factor=2.0, max_delay=60.0, jitter=0.2)
    rng = random.Random(3)
    for _ in range(50):
        wait = policy.delay(attempt, retry_after, rng)
        assert wait >= retry_after
        assert wait <= max(policy.backoff(attempt), retry_after * 1.2)


def test_retry_after_zero_is_ignored() -> None:
    """Retry-After 0 leaves the ordinary backoff in place."""
    policy = RetryPolicy(jitter=0.0)
    assert policy.delay(3, 0.0, random.Random(0)) == 4.0


@pytest.mark.parametrize(
    ("attempt", "waited", "next_delay", "exhausted"),
    [
        (1, 0.0, 1.0, False),
        (3, 10.0, 4.0, False),
        (4, 10.0, 8.0, True),  # the limit: 3 retries, so attempt 4 was the last
        (2, 895.0, 4.0, False),
        (2, 897.0, 4.0, True),  # the wait would not fit in the total budget
    ],
)
def test_exhausted_by_limit_or_budget(
    attempt: int, waited: float, next_delay: float, exhausted: bool
) -> None:
    """Retries end after `limit` retries, or when the next wait would overrun the budget."""
    policy = RetryPolicy(limit=3, max_total_delay=900.0)
    assert policy.exhausted(attempt, waited, next_delay) is exhausted


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": -1}, {"factor": 0.5}, {"jitter": 1.5}, {"initial": -1.0}],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    """A negative limit, a shrinking factor or jitter outside 0..1 is a ValueError."""
    with pytest.raises(ValueError, match=r"invalid|jitter"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_backoff_model_defaults_match_the_policy_defaults() -> None:
    """The rule schema's backoff defaults and RetryPolicy's defaults agree."""
    backoff, policy = Backoff(), RetryPolicy()
    assert (backoff.initial, backoff.factor, backoff.max) == (
        policy.initial,
        policy.factor,
        policy.max_delay,
    )
