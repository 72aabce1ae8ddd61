"""The submitter: outcomes, retries, rate limits, concurrency, drain and cancellation.

Time is virtual (VirtualClock in auto mode) and the sink is a scripted in-test fake:
each create call takes the next step of its script — an exception to raise, a future to
wait for (a gate the test opens), or nothing (created).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from trigger.clock import VirtualClock
from trigger.decoders.kafka import decode_kafka_record
from trigger.errors import AlreadyExists, PermanentSubmitError, TemporarySubmitError
from trigger.events import Event
from trigger.rules.loader import load_rules
from trigger.rules.render import ANNOTATION_IDEMPOTENCY_KEY, workflow_name
from trigger.rules.router import RuleSet
from trigger.submit.base import Created
from trigger.submit.deadletter import DeadLetter
from trigger.submit.retry import RetryCaps
from trigger.submit.submitter import NoHooks, Outcome, OutcomeKind, Submitter

RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: orders}
spec:
  source: {kafka: {topics: [orders]}}
  workflow:
    template: fraud-check
    parameters: {orderId: "{{ event.value.orderId }}"}
  retry: {limit: 3, backoff: {initial: 1s, factor: 2, max: 10s}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: storm}
spec:
  source: {kafka: {topics: [orders]}}
  workflow: {template: fraud-check}
  retry: {limit: 40, backoff: {initial: 1s, factor: 2, max: 5s}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: throttled}
spec:
  source: {kafka: {topics: [orders]}}
  workflow: {template: fraud-check}
  rateLimit: {perSecond: 2, burst: 2}
"""

Step = BaseException | asyncio.Future[None] | None


class ScriptedSink:
    """A Sink whose create calls follow a script; records each call's name and time."""

    kind = "scripted"

    def __init__(self, clock: VirtualClock, script: Iterable[Step] = ()) -> None:
        self.clock = clock
        self.script = list(script)
        self.calls: list[tuple[str, float]] = []
        self.workflows: list[Mapping[str, Any]] = []

    async def create(self, workflow: Mapping[str, Any]) -> Created:
        name = workflow["metadata"]["name"]
        self.calls.append((name, self.clock.monotonic()))
        self.workflows.append(workflow)
        step = self.script.pop(0) if self.script else None
        if isinstance(step, asyncio.Future):
            await step
        elif isinstance(step, BaseException):
            raise step
        return Created(name, workflow["metadata"]["namespace"])

    async def check(self) -> None:
        pass

    async def close(self) -> None:
        pass


class MemoryDeadLetters:
    def __init__(self) -> None:
        self.records: list[DeadLetter] = []

    async def write(self, record: DeadLetter) -> None:
        self.records.append(record)

    async def close(self) -> None:
        pass


class Recorder(NoHooks):
    def __init__(self) -> None:
        self.delays: list[float] = []
        self.created: list[tuple[str, str]] = []
        self.dead: list[DeadLetter] = []

    def on_retry(
        self, rule: Any, event: Event | None, attempt: int, delay: float, error: Exception
    ) -> None:
        self.delays.append(delay)

    def on_created(self, rule: Any, event: Event | None, workflow: str, latency: float) -> None:
        self.created.append((rule.name, workflow))

    def on_dead_letter(self, record: DeadLetter) -> None:
        self.dead.append(record)


class Rig:
    """One submitter on a virtual clock with a scripted sink, dead letters and hooks."""

    def __init__(
        self,
        script: Iterable[Step] = (),
        *,
        max_in_flight: int = 64,
        auto: bool = True,
        **kwargs: Any,
    ) -> None:
        self.clock = VirtualClock(auto=auto)
        self.sink = ScriptedSink(self.clock, script)
        self.dead = MemoryDeadLetters()
        self.hooks = Recorder()
        self.submitter = Submitter(
            self.sink,
            self.dead,
            self.clock,
            max_in_flight=max_in_flight,
            rng=kwargs.pop("rng", random.Random(0)),
            hooks=self.hooks,
            **kwargs,
        )

    def times(self) -> list[float]:
        return [t for _, t in self.sink.calls]


def event(value: bytes = b'{"orderId": "A-1"}', offset: int = 7) -> Event:
    return decode_kafka_record("orders", 0, offset, 1735718400000, None, value, [])


def temporary(status: int = 503, retry_after: float | None = None) -> TemporarySubmitError:
    return TemporarySubmitError(f"HTTP {status}", status=status, retry_after=retry_after)


async def until(condition: Callable[[], bool], cycles: int = 10_000) -> None:
    """Let the loop run until `condition` holds; fail after `cycles` iterations."""
    for _ in range(cycles):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


@pytest.fixture
def rules(write_rules: Callable[..., Path]) -> RuleSet:
    return load_rules([write_rules(RULES)])


# --- outcomes ---------------------------------------------------------------------------


async def test_created(rules: RuleSet) -> None:
    """A Workflow the sink accepts is CREATED after one attempt, named deterministically."""
    rig = Rig()
    outcome = await rig.submitter.submit(rules.by_name["orders"], event())
    assert outcome == Outcome(OutcomeKind.CREATED, "orders", rig.sink.calls[0][0], 1)
    assert rig.hooks.created == [("orders", rig.sink.calls[0][0])]


async def test_already_exists_is_a_duplicate(rules: RuleSet) -> None:
    """AlreadyExists ends the submission as DUPLICATE, with no retry and no dead letter."""
    rig = Rig([AlreadyExists("exists")])
    outcome = await rig.submitter.submit(rules.by_name["orders"], event())
    assert (outcome.kind, outcome.attempts, len(rig.sink.calls)) == (OutcomeKind.DUPLICATE, 1, 1)
    assert rig.dead.records == []


async def test_redelivery_gets_the_same_name(rules: RuleSet) -> None:
    """Submitting the same event twice asks the sink for the same Workflow name."""
    rig = Rig([None, AlreadyExists("exists")])
    await rig.submitter.submit(rules.by_name["orders"], event())
    await rig.submitter.submit(rules.by_name["orders"], event())
    assert rig.sink.calls[0][0] == rig.sink.calls[1][0]


async def test_permanent_error_is_dead_lettered_at_once(rules: RuleSet) -> None:
    """A 403 is dead-lettered after one attempt, with the backend's message kept."""
    rig = Rig([PermanentSubmitError("workflows.argoproj.io is forbidden", status=403)])
    outcome = await rig.submitter.submit(rules.by_name["orders"], event())
    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD_LETTERED, "PermanentSubmitError")
    assert len(rig.sink.calls) == 1
    [record] = rig.dead.records
    assert record.message == "workflows.argoproj.io is forbidden"
    assert (record.rule, record.event_id, record.attempts) == ("orders", "orders/0/7", 1)
    assert record.workflow == rig.sink.calls[0][0]
    assert rig.hooks.dead == [record]


async def test_render_error_is_dead_lettered_without_submitting(rules: RuleSet) -> None:
    """A template failing for the event is dead-lettered with rule, field and event id."""
    rig = Rig()
    outcome = await rig.submitter.submit(rules.by_name["orders"], event(b'{"other": 1}', 9))
    assert (outcome.kind, outcome.reason, outcome.workflow) == (
        OutcomeKind.DEAD_LETTERED,
        "RenderError",
        None,
    )
    assert rig.sink.calls == []
    [record] = rig.dead.records
    assert (record.rule, record.event_id, record.attempts) == ("orders", "orders/0/9", 0)
    assert "parameters.orderId" in record.message
    assert record.event is not None and record.event["value"] == {"other": 1}


# --- retries ----------------------------------------------------------------------------


async def test_retry_after_is_waited_for(rules: RuleSet) -> None:
    """A 429 with Retry-After 3 is retried once, at least 3 virtual seconds later."""
    rig = Rig([temporary(429, retry_after=3.0)])
    outcome = await rig.submitter.submit(rules.by_name["orders"], event())
    assert (outcome.kind, outcome.attempts) == (OutcomeKind.CREATED, 2)
    first, second = rig.times()
    assert second - first >= 3.0


async def test_error_storm_backs_off_and_caps(rules: RuleSet) -> None:
    """30 failures then success with limit 40: 31 attempts, waits 1, 2, 4, then 5 s each."""
    rig = Rig([temporary(500) for _ in range(30)], caps=RetryCaps(jitter=0.0))
    outcome = await rig.submitter.submit(rules.by_name["storm"], event())
    assert (outcome.kind, outcome.attempts) == (OutcomeKind.CREATED, 31)
    assert rig.hooks.delays == [1.0, 2.0, 4.0] + [5.0] * 27
    times = rig.times()
    assert [b - a for a, b in itertools.pairwise(times)] == rig.hooks.delays


async def test_exhausted_retries_raise_by_default(rules: RuleSet) -> None:
    """After limit 3 the last temporary error is re-raised and nothing is dead-lettered."""
    rig = Rig([temporary(503) for _ in range(10)])
    with pytest.raises(TemporarySubmitError, match="HTTP 503"):
        await rig.submitter.submit(rules.by_name["orders"], event())
    assert (len(rig.sink.calls), rig.dead.records) == (4, [])


async def test_exhausted_retries_can_be_dead_lettered(rules: RuleSet) -> None:
    """With on_exhausted="dead-letter" the submission ends in one RetriesExhausted record."""
    rig = Rig([temporary(503) for _ in range(10)])
    outcome = await rig.submitter.submit(
        rules.by_name["orders"], event(), on_exhausted="dead-letter"
    )
    assert (outcome.kind, outcome.reason, outcome.attempts) == (
        OutcomeKind.DEAD_LETTERED,
        "RetriesExhausted",
        4,
    )
    [record] = rig.dead.records
    assert (record.error, record.attempts) == ("RetriesExhausted", 4)
    assert "HTTP 503" in record.message


async def test_total_delay_budget_ends_retries(rules: RuleSet) -> None:
    """A Retry-After beyond the total-delay budget ends the retries without waiting."""
    rig = Rig([temporary(429, retry_after=3600.0)], caps=RetryCaps(max_total_delay=900.0))
    with pytest.raises(TemporarySubmitError):
        await rig.submitter.submit(rules.by_name["orders"], event())
    assert (len(rig.sink.calls), rig.clock.monotonic()) == (1, 0.0)


async def test_seeded_rng_makes_jitter_repeatable(rules: RuleSet) -> None:
    """Two submitters with equally seeded generators wait exactly the same jittered times."""
    runs = []
    for _ in range(2):
        rig = Rig([temporary(500) for _ in range(3)], rng=random.Random(1234))
        await rig.submitter.submit(rules.by_name["orders"], event())
        runs.append(rig.hooks.delays)
    assert runs[0] == runs[1]
    assert runs[0] != [1.0, 2.0, 4.0]  # jitter was applied


# --- rate limits and concurrency --------------------------------------------------------


async def test_rate_limit_delays_the_fifth_submission(rules: RuleSet) -> None:
    """At 2/s burst 2, five submissions reach the sink at 0, 0, 0.5, 1.0 and 1.5 s."""
    rig = Rig()
    rule = rules.by_name["throttled"]
    await rig.submitter.submit_many([(rule, event(offset=n)) for n in range(5)])
    assert sorted(rig.times()) == [0.0, 0.0, 0.5, 1.0, 1.5]


async def test_max_in_flight_bounds_create_calls(rules: RuleSet) -> None:
    """With max_in_flight=3 and a blocked sink, the 4th submission waits for a slot."""
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    rig = Rig([gate, gate, gate], max_in_flight=3)
    rule = rules.by_name["orders"]
    tasks = [asyncio.create_task(rig.submitter.submit(rule, event(offset=n))) for n in range(4)]
    await until(lambda: len(rig.sink.calls) == 3)
    for _ in range(100):
        await asyncio.sleep(0)
    assert (len(rig.sink.calls), rig.submitter.in_flight) == (3, 4)
    gate.set_result(None)
    outcomes = await asyncio.gather(*tasks)
    assert [o.kind for o in outcomes] == [OutcomeKind.CREATED] * 4
    assert rig.submitter.in_flight == 0


async def test_cancellation_frees_the_slot(rules: RuleSet) -> None:
    """Cancelling a blocked submission re-raises CancelledError and lets the next one in."""
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    rig = Rig([gate], max_in_flight=1)
    rule = rules.by_name["orders"]
    blocked = asyncio.create_task(rig.submitter.submit(rule, event(offset=1)))
    await until(lambda: len(rig.sink.calls) == 1)
    waiting = asyncio.create_task(rig.submitter.submit(rule, event(offset=2)))
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    assert (await waiting).kind is OutcomeKind.CREATED
    assert rig.submitter.in_flight == 0


async def test_cancellation_during_backoff_ends_the_submission(rules: RuleSet) -> None:
    """A submission cancelled while backing off stops retrying and is no longer in flight."""
    rig = Rig([temporary(503)], auto=False)  # the backoff sleep waits for the test
    task = asyncio.create_task(rig.submitter.submit(rules.by_name["orders"], event()))
    await until(lambda: rig.clock.sleeping == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await rig.clock.run_until_idle()
    assert (len(rig.sink.calls), rig.submitter.in_flight) == (1, 0)


# --- drain, submit_many, fire -----------------------------------------------------------


async def test_drain_waits_for_in_flight_work(rules: RuleSet) -> None:
    """drain() returns True only after the in-flight submission has finished."""
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    rig = Rig([gate], auto=False)  # time stands still: only the gate can end the drain
    task = asyncio.create_task(rig.submitter.submit(rules.by_name["orders"], event()))
    await until(lambda: len(rig.sink.calls) == 1)
    drained = asyncio.create_task(rig.submitter.drain(timeout=3600))
    for _ in range(100):
        await asyncio.sleep(0)
    assert not drained.done()
    gate.set_result(None)
    assert await drained is True
    assert task.done()


async def test_drain_finding_nothing_in_flight_is_not_fooled_by_later_work(
    rules: RuleSet,
) -> None:
    """drain() that finds nothing in flight answers True at once, even when a submission
    begins before its caller resumes (a late delivery at a stop is not a forced exit)."""
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    rig = Rig([gate], auto=False)  # time stands still
    drained = asyncio.create_task(rig.submitter.drain(timeout=3600))
    task = asyncio.create_task(rig.submitter.submit(rules.by_name["orders"], event()))
    try:
        await until(drained.done)
        assert drained.result() is True
    finally:
        gate.set_result(None)
        await task


async def test_drain_gives_up_at_its_timeout(rules: RuleSet) -> None:
    """drain() returns False once its (virtual) timeout passes with work still in flight."""
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    rig = Rig([gate])
    task = asyncio.create_task(rig.submitter.submit(rules.by_name["orders"], event()))
    await until(lambda: len(rig.sink.calls) == 1)
    assert await rig.submitter.drain(timeout=30) is False
    assert rig.clock.monotonic() == 30.0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_drain_with_nothing_in_flight_returns_at_once() -> None:
    """drain() on an idle submitter returns True without time passing."""
    rig = Rig()
    assert await rig.submitter.drain(timeout=10) is True
    assert rig.clock.monotonic() == 0.0


async def test_submit_many_returns_one_outcome_per_rule(rules: RuleSet) -> None:
    """submit_many gives one outcome per (rule, event), in the order given."""
    rig = Rig()
    outcomes = await rig.submitter.submit_many(
        [(rules.by_name["orders"], event()), (rules.by_name["storm"], event())]
    )
    assert [o.rule for o in outcomes] == ["orders", "storm"]
    assert len({o.workflow for o in outcomes}) == 2


async def test_submit_many_raises_after_the_others_finish(rules: RuleSet) -> None:
    """One rule's exhausted retries raise from submit_many, yet the other rule was created."""
    rig = Rig([temporary(503) for _ in range(4)], caps=RetryCaps(jitter=0.0))
    rig.sink.script.insert(1, None)  # the storm rule's first call succeeds
    with pytest.raises(TemporarySubmitError):
        await rig.submitter.submit_many(
            [(rules.by_name["orders"], event()), (rules.by_name["storm"], event())]
        )
    assert [rule for rule, _ in rig.hooks.created] == ["storm"]


async def test_fire_creates_the_keyed_workflow(rules: RuleSet) -> None:
    """fire() creates a Workflow named after the key, with the parameters, retrying too."""
    rig = Rig([temporary(503)])
    rule = rules.by_name["orders"]
    outcome = await rig.submitter.fire(rule, {"orderId": "manual"}, "2025-01-01")
    assert (outcome.kind, outcome.attempts) == (OutcomeKind.CREATED, 2)
    assert outcome.workflow == workflow_name(rule, "2025-01-01")
    workflow = rig.sink.workflows[-1]
    assert workflow["spec"]["arguments"]["parameters"] == [{"name": "orderId", "value": "manual"}]
    assert workflow["metadata"]["annotations"][ANNOTATION_IDEMPOTENCY_KEY] == "2025-01-01"


async def test_fire_rejected_is_dead_lettered_without_event(rules: RuleSet) -> None:
    """A rejected manual firing is dead-lettered with the rule and no event fields."""
    rig = Rig([PermanentSubmitError("bad parameter", status=422)])
    outcome = await rig.submitter.fire(rules.by_name["orders"], {"orderId": "x"}, "k")
    assert outcome.kind is OutcomeKind.DEAD_LETTERED
    [record] = rig.dead.records
    assert (record.rule, record.event_id, record.message) == ("orders", None, "bad parameter")


@pytest.mark.parametrize("on_exhausted", ["dead-letter", "raise"])
async def test_an_exhausted_submission_counts_as_failed_once(
    rules: RuleSet, on_exhausted: str
) -> None:
    """trigger_workflows_total{outcome="failed"} grows by one per submission that gives up,
    whether it is dead-lettered (counted under its dead letter's error) or raised."""
    from trigger.core.metrics import Metrics
    from trigger.core.pipeline import MetricsHooks

    clock = VirtualClock(auto=True)
    metrics = Metrics()
    dead = MemoryDeadLetters()
    submitter = Submitter(
        ScriptedSink(clock, [temporary(503) for _ in range(10)]), dead, clock,
        rng=random.Random(0), hooks=MetricsHooks(metrics, clock),
    )  # fmt: skip
    try:
        await submitter.submit(rules.by_name["orders"], event(), on_exhausted=on_exhausted)  # type: ignore[arg-type]
    except TemporarySubmitError:
        assert on_exhausted == "raise"
    failed = {
        s.labels["error"]: s.value
        for f in metrics.workflows.collect()
        for s in f.samples
        if s.name.endswith("_total") and s.labels["outcome"] == "failed"
    }
    expected = "RetriesExhausted" if on_exhausted == "dead-letter" else "TemporarySubmitError"
    assert failed == {expected: 1.0}
