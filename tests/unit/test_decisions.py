"""Decision records: the pipeline leaves one per event, each rule's outcome in it, kept in a
bounded ring; why a filtered rule did not match is computed when asked."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_submitter import MemoryDeadLetters, ScriptedSink, Step
from trigger.clock import VirtualClock
from trigger.core.decisions import CLIPPED, Decisions, clipped, explain
from trigger.core.metrics import Metrics
from trigger.core.pipeline import MetricsHooks, Pipeline
from trigger.decoders.kafka import decode_kafka_record
from trigger.errors import TemporarySubmitError
from trigger.events import Event
from trigger.rules.loader import load_rules
from trigger.submit.submitter import Submitter

RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: big-orders}
spec:
  source: {kafka: {topics: [orders], format: json}}
  filter: {pattern: {value: {amount: [{numeric: [">=", 100]}]}}}
  workflow: {template: fraud-check, namespace: shop}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: all-orders}
spec:
  source: {kafka: {topics: [orders], format: json}}
  workflow:
    template: audit
    namespace: shop
    parameters: {id: "{{ event.value.id }}"}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: paced}
spec:
  source: {kafka: {topics: [paced]}}
  workflow: {template: paced, namespace: shop}
  rateLimit: {perSecond: 1, burst: 1}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: hook}
spec:
  source: {webhook: {path: /hook}}
  workflow: {template: hook, namespace: shop}
"""


def record(topic: str, offset: int, value: Any) -> Event:
    body = value if isinstance(value, bytes) else json.dumps(value).encode()
    return decode_kafka_record(topic, 0, offset, 1735718400000, None, body, [])


class Rig:
    def __init__(self, rules: Path, script: list[Step] | None = None, size: int = 100) -> None:
        self.clock = VirtualClock()
        self.metrics = Metrics()
        self.decisions = Decisions(size)
        self.metrics.watch_decisions(lambda: len(self.decisions), lambda: self.decisions.dropped)
        self.sink = ScriptedSink(self.clock, script or [])
        self.dead = MemoryDeadLetters()
        hooks = MetricsHooks(self.metrics, self.clock, self.decisions)
        self.submitter = Submitter(self.sink, self.dead, self.clock, hooks=hooks)
        self.rules = load_rules([str(rules)])
        self.pipeline = Pipeline(
            self.rules,
            self.submitter,
            self.dead,
            self.metrics,
            self.clock,
            decisions=self.decisions,
        )

    def outcomes(self, event_id: str) -> dict[str, list[Any]]:
        found = self.decisions.find(event_id)
        assert found is not None, event_id
        return {name: [str(o), d] for name, (o, d) in found.rules.items()}


async def turns(condition: Callable[[], Any], limit: int = 1000) -> None:
    """Let the loop run until `condition` holds (on the virtual clock: no time passes)."""
    for _ in range(limit):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


@pytest.fixture
def rules(write_rules: Callable[..., Path]) -> Path:
    return write_rules(RULES)


async def test_each_rule_outcome_is_recorded(rules: Path) -> None:
    """Created, filtered, dead-lettered (render error) and duplicate land in the record."""
    rig = Rig(rules)
    await rig.pipeline.handle(record("orders", 1, {"id": "A", "amount": 150}))
    assert [o for o, _ in rig.outcomes("orders/0/1").values()] == ["created", "created"]
    await rig.pipeline.handle(record("orders", 2, {"amount": 5}))
    outcomes = rig.outcomes("orders/0/2")
    assert outcomes["big-orders"] == ["filtered", None]
    assert outcomes["all-orders"][0] == "dead-lettered"
    assert outcomes["all-orders"][1].startswith("RenderError: ")
    rig.sink.script.append(None)
    await rig.pipeline.handle(record("orders", 1, {"id": "A", "amount": 150}))
    assert rig.sink.workflows  # the redelivery reached the sink
    decision = rig.decisions.find("orders/0/1")
    assert decision is not None and decision.others == 2  # paced and hook: other topics


async def test_duplicates_are_recorded_with_the_workflow_name(rules: Path) -> None:
    """A redelivery's record says duplicate of NAME, the name the first one created."""
    from trigger.errors import AlreadyExists

    rig = Rig(rules, [None, None, AlreadyExists("exists"), AlreadyExists("exists")])
    order = {"id": "A", "amount": 150}
    await rig.pipeline.handle(record("orders", 1, order))
    first = rig.outcomes("orders/0/1")["big-orders"]
    await rig.pipeline.handle(record("orders", 1, order))
    again = rig.outcomes("orders/0/1")["big-orders"]
    assert first[0] == "created" and again == ["duplicate", first[1]]


async def test_filtered_rules_are_explained_on_request(rules: Path) -> None:
    """The explain tree names the failing check, the field and the value seen."""
    rig = Rig(rules)
    await rig.pipeline.handle(record("orders", 2, {"id": "B", "amount": 5}))
    decision = rig.decisions.find("orders/0/2")
    assert decision is not None
    found = explain(rig.rules, decision)
    entry = next(e for e in found["rules"] if e["rule"] == "big-orders")
    assert [s["check"] for s in entry["steps"]] == ["source", "decode", "filter.pattern"]
    pattern = entry["steps"][-1]
    assert not pattern["ok"]
    assert "event.value.amount" in pattern["misses"][0] and "5" in pattern["misses"][0]
    assert found["otherRuleReasons"] == [
        {"reason": "topic 'orders' is not the rule's", "rules": ["paced"]},
        {"reason": "rule takes webhook events, not kafka events", "rules": ["hook"]},
    ]


async def test_retries_and_rate_limit_waits_show_while_in_flight(rules: Path) -> None:
    """A create that is retried shows `retrying` (attempt, error); a rule waiting for its
    rate limit shows `rate-limited`; both end as created."""
    rig = Rig(rules, [None, TemporarySubmitError("HTTP 503", status=503)])
    await rig.pipeline.handle(record("paced", 1, {}))  # takes the one token
    second = asyncio.ensure_future(rig.pipeline.handle(record("paced", 2, {})))
    await turns(lambda: rig.clock.sleeping)
    assert rig.outcomes("paced/0/2")["paced"][0] == "rate-limited"
    await rig.clock.advance(1.0)
    await turns(lambda: rig.outcomes("paced/0/2")["paced"][0] == "retrying")
    assert rig.outcomes("paced/0/2")["paced"][1] == "attempt 1: HTTP 503"
    while not second.done():
        await rig.clock.advance(1.0)
    await second
    assert rig.outcomes("paced/0/2")["paced"][0] == "created"
    assert not rig.decisions.live


async def test_an_event_given_back_is_recorded_as_failed(rules: Path) -> None:
    """When the retries run out and the event is not acknowledged, the record says so."""
    errors: list[Step] = [TemporarySubmitError("HTTP 503", status=503) for _ in range(50)]
    rig = Rig(rules, errors)
    task = asyncio.ensure_future(rig.pipeline.handle(record("orders", 1, {"id": "A"})))
    while not task.done():
        await rig.clock.advance(60.0)
    with pytest.raises(TemporarySubmitError):
        await task
    assert rig.outcomes("orders/0/1")["all-orders"] == [
        "failed",
        "TemporarySubmitError: HTTP 503",
    ]


async def test_the_ring_keeps_the_newest_and_counts_the_dropped(rules: Path) -> None:
    """Past its size the ring drops the oldest; the metrics say how many it keeps and
    dropped."""
    rig = Rig(rules, size=3)
    for offset in range(5):
        await rig.pipeline.handle(record("other", offset, {}))
    assert [d.id for d in rig.decisions.select()] == ["other/0/2", "other/0/3", "other/0/4"]
    sample = rig.metrics.registry.get_sample_value
    assert sample("trigger_decisions_kept") == 3
    assert sample("trigger_decisions_dropped_total") == 2


async def test_select_filters_by_rule_outcome_source_and_position(rules: Path) -> None:
    """?rule, ?outcome, ?source, after and limit narrow the list, oldest first."""
    rig = Rig(rules)
    await rig.pipeline.handle(record("orders", 1, {"id": "A", "amount": 150}))
    await rig.pipeline.handle(record("orders", 2, {"id": "B", "amount": 5}))
    await rig.pipeline.handle(record("paced", 3, {}))
    ids = lambda found: [d.id for d in found]  # noqa: E731
    assert ids(rig.decisions.select(rule="big-orders", outcome="filtered")) == ["orders/0/2"]
    assert ids(rig.decisions.select(outcome="created")) == ["orders/0/1", "orders/0/2", "paced/0/3"]
    assert ids(rig.decisions.select(rule="paced", outcome="other-source")) == [
        "orders/0/1",
        "orders/0/2",
    ]
    assert ids(rig.decisions.select(source="webhook")) == []
    assert ids(rig.decisions.select(limit=1)) == ["paced/0/3"]
    first = rig.decisions.select()[0]
    assert ids(rig.decisions.select(after=first.seq)) == ["orders/0/2", "paced/0/3"]


async def test_the_batch_path_records_like_the_one_event_path(rules: Path, tmp_path: Path) -> None:
    """handle_batch leaves the same records: created per rule, filtered, others."""
    from trigger.submit.local import LocalSink

    rig = Rig(rules)
    sink = LocalSink(tmp_path / "wf")
    rig.submitter = Submitter(sink, rig.dead, rig.clock)
    rig.pipeline.submitter = rig.submitter
    try:
        await rig.pipeline.handle_batch([record("orders", 7, {"id": "C", "amount": 1})])
    finally:
        await sink.close()
    assert rig.outcomes("orders/0/7") == {
        "big-orders": ["filtered", None],
        "all-orders": ["created", rig.outcomes("orders/0/7")["all-orders"][1]],
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=400),
    lambda inner: (
        st.lists(inner, max_size=30) | st.dictionaries(st.text(max_size=50), inner, max_size=30)
    ),
    max_leaves=400,
)


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_a_clipped_event_stays_within_its_budget(value: Any) -> None:
    """Whatever the payload, the kept copy of a large event is bounded in size."""
    event = record("orders", 1, {"value": value, "pad": "x" * 5000})
    kept = clipped(event, 1024)
    size = len(json.dumps([kept.data, dict(kept.fields)], default=str))
    assert size <= 1024 * 3 + 2000  # keys, quotes and markers on top of the text budget
    assert kept.raw is None


def test_a_large_event_is_kept_clipped_and_a_small_one_as_is() -> None:
    """The ring copies nothing for a small event; a large one is clipped and marked."""
    ring = Decisions(10, max_event_bytes=256)
    small = record("orders", 1, {"a": 1})
    large = record("orders", 2, {"a": "y" * 1000})
    assert ring.record(small, small.time, 0).event is small
    kept = ring.record(large, large.time, 0).event
    assert kept.data["a"].endswith(CLIPPED) and len(kept.data["a"]) < 300


def test_bytes_per_record_are_bounded() -> None:
    """A full ring of records for large events costs a bounded amount per record."""
    ring = Decisions(500, max_event_bytes=4096)
    events = [record("orders", n, {"id": n, "blob": "z" * 100_000}) for n in range(500)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for event in events:
            decision = ring.record(event, event.time, 3)
            decision.note("all-orders", "created", f"all-orders-{event.id}")  # type: ignore[arg-type]
        per_record = (tracemalloc.get_traced_memory()[0] - before) / len(events)
    finally:
        tracemalloc.stop()
    assert per_record < 16 * 1024
