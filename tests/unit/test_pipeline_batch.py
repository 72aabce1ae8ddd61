"""The batch path: Pipeline.handle_batch, Submitter.create_batch and the sinks'
create_many, with the real local and stdout sinks."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from trigger.clock import VirtualClock
from trigger.core.metrics import Metrics
from trigger.core.pipeline import DONE, SLOW, MetricsHooks, Pipeline
from trigger.decoders.kafka import decode_kafka_record
from trigger.errors import AlreadyExists, PermanentSubmitError, TemporarySubmitError
from trigger.events import Event
from trigger.rules.loader import load_rules
from trigger.rules.render import render
from trigger.submit.base import BatchSink, Created
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.local import LocalSink
from trigger.submit.stdout import StdoutSink
from trigger.submit.submitter import Outcome, OutcomeKind, Submitter

RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: orders}
spec:
  source: {kafka: {topics: [orders], format: json}}
  filter: {pattern: {value: {kind: [order]}}}
  workflow:
    template: fraud-check
    namespace: shop
    parameters: {orderId: "{{ event.value.orderId }}"}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: audit}
spec:
  source: {kafka: {topics: [orders]}}
  filter: {pattern: {value: {kind: [order]}}}
  workflow: {template: audit, namespace: audit}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: refunds}
spec:
  source: {kafka: {topics: [refunds]}}
  workflow: {template: refund, namespace: shop}
  rateLimit: {perSecond: 5, burst: 5}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: strict}
spec:
  source: {kafka: {topics: [strict]}}
  workflow:
    template: strict
    namespace: shop
    parameters: {id: "{{ event.value.id }}"}
"""


def record(topic: str, offset: int, value: bytes) -> Event:
    return decode_kafka_record(topic, 0, offset, 1735718400000, None, value, [])


def order(offset: int) -> Event:
    return record("orders", offset, b'{"kind": "order", "orderId": "A-%d"}' % offset)


class Rig:
    def __init__(self, tmp: Path, sink: Any, rules_path: Path) -> None:
        self.clock = VirtualClock()
        self.metrics = Metrics()
        self.sink = sink
        self.dead = FileDeadLetterSink(tmp / "dead.jsonl")
        self.submitter = Submitter(
            sink, self.dead, self.clock, hooks=MetricsHooks(self.metrics, self.clock)
        )
        rules = load_rules([str(rules_path)])
        self.pipeline = Pipeline(rules, self.submitter, self.dead, self.metrics, self.clock)

    def count(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


@pytest.fixture
async def rig(tmp_path: Path, write_rules: Callable[..., Path]) -> AsyncIterator[Rig]:
    sink = LocalSink(tmp_path / "workflows")
    made = Rig(tmp_path, sink, write_rules(RULES))
    yield made
    await sink.close()
    await made.dead.close()


def manifests(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml"))


async def test_plain_events_are_done_in_one_batch(rig: Rig, tmp_path: Path) -> None:
    events = [order(i) for i in range(5)]
    assert rig.pipeline.batches
    results = await rig.pipeline.handle_batch(events)
    assert results == [DONE] * 5
    files = manifests(tmp_path / "workflows")
    assert len(files) == 10  # two rules match every order
    assert sum(f.startswith("shop/") for f in files) == 5
    assert rig.count("trigger_workflows_total", rule="orders", outcome="created", error="") == 5
    assert rig.count("trigger_events_received_total", source="kafka") == 5
    assert rig.count("trigger_events_matched_total", rule="audit") == 5
    status = rig.pipeline.status["orders"]
    assert (status.matched, status.created, status.last_event) == (5, 5, "orders/0/4")
    written = yaml.safe_load(next((tmp_path / "workflows" / "shop").glob("*.yaml")).read_text())
    assert written["spec"]["arguments"]["parameters"][0]["name"] == "orderId"


async def test_a_redelivered_batch_is_all_duplicates(rig: Rig) -> None:
    events = [order(i) for i in range(3)]
    await rig.pipeline.handle_batch(events)
    assert await rig.pipeline.handle_batch(events) == [DONE] * 3
    assert rig.count("trigger_workflows_total", rule="audit", outcome="duplicate", error="") == 3
    assert rig.pipeline.status["audit"].duplicates == 3


async def test_events_needing_the_one_event_path_are_left_untouched(
    rig: Rig, tmp_path: Path
) -> None:
    """Poison for a json rule, a rate-limited rule and a render error all come back SLOW,
    with nothing written, counted or dead-lettered; unmatched events are simply done."""
    events = [
        record("orders", 1, b"not json"),  # poison for `orders`
        record("refunds", 2, b"{}"),  # rate-limited rule
        record("strict", 3, b"{}"),  # render error: no `id`
        record("orders", 4, b'{"kind": "other"}'),  # matches nothing
        order(5),
    ]
    results = await rig.pipeline.handle_batch(events)
    assert results == [SLOW, SLOW, SLOW, DONE, DONE]
    assert len(manifests(tmp_path / "workflows")) == 2
    assert not (tmp_path / "dead.jsonl").exists() or not (tmp_path / "dead.jsonl").read_text()
    assert rig.count("trigger_events_received_total", source="kafka") == 2
    # The one-event path then does what the batch left, dead letters included.
    outcomes = await rig.pipeline.handle(events[2])
    assert [o.kind for o in outcomes] == [OutcomeKind.DEAD_LETTERED]


async def test_items_the_sink_fails_are_handed_back(rig: Rig, tmp_path: Path) -> None:
    """A namespace directory that cannot be made fails its items alone; the caller gets
    exactly those (rule, event) pairs back, and `submit_matches` takes them."""
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "audit").write_text("a file where a directory should be")
    results = await rig.pipeline.handle_batch([order(1), order(2)])
    assert [r.slow for r in results] == [False, False]
    assert [[rule.name for rule, _ in r.failed] for r in results] == [["audit"], ["audit"]]
    assert manifests(tmp_path / "workflows") == sorted(
        f"shop/{p.name}" for p in (tmp_path / "workflows" / "shop").glob("*.yaml")
    )
    assert rig.count("trigger_workflows_total", rule="orders", outcome="created", error="") == 2
    (tmp_path / "workflows" / "audit").unlink()
    event, failed = order(1), results[0].failed
    outcomes = await rig.pipeline.submit_matches(event, failed)
    assert [o.kind for o in outcomes] == [OutcomeKind.CREATED]
    assert len(manifests(tmp_path / "workflows")) == 3


async def test_create_batch_outcomes_and_refusal_without_batch_sink(
    rig: Rig, write_rules: Callable[..., Path]
) -> None:
    rules = load_rules([str(write_rules(RULES, "again.yaml"))])
    rule = rules.by_name["audit"]
    items = [(rule, order(i), render(rule, order(i))) for i in (1, 2)]
    first = await rig.submitter.create_batch(items)
    assert [o.kind for o in first if isinstance(o, Outcome)] == [OutcomeKind.CREATED] * 2
    again = await rig.submitter.create_batch(items[:1])
    assert isinstance(again[0], Outcome) and again[0].kind == OutcomeKind.DUPLICATE
    assert await rig.submitter.create_batch([]) == []
    assert rig.submitter.in_flight == 0

    class Plain:
        kind = "plain"

        async def create(self, workflow: Any) -> Created:
            raise AssertionError("not called")

        async def check(self) -> None: ...

        async def close(self) -> None: ...

    plain = Submitter(Plain(), rig.dead, rig.clock)
    assert not plain.batches
    with pytest.raises(TypeError, match="no batch create"):
        await plain.create_batch(items)


async def test_local_create_many_answers_each_item(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    assert isinstance(sink, BatchSink)
    assert isinstance(StdoutSink(io.StringIO()), BatchSink)
    try:
        meta = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow"}
        good = {**meta, "metadata": {"name": "a", "namespace": "ns"}}
        results = await sink.create_many(
            [
                good,
                {**meta, "metadata": {"name": "Bad_Name", "namespace": "ns"}},
                {**meta, "metadata": {"namespace": "ns"}},
                good,
                {**meta, "metadata": {"name": "b", "namespace": "ns"}, "x": {1, 2}},
            ]
        )
        assert results[0] == Created(name="a", namespace="ns")
        assert isinstance(results[1], PermanentSubmitError)
        assert isinstance(results[2], PermanentSubmitError)
        assert isinstance(results[3], AlreadyExists)
        assert isinstance(results[4], PermanentSubmitError)
        assert await sink.create_many([]) == []
        assert manifests(tmp_path) == ["ns/a.yaml"]
    finally:
        await sink.close()


async def test_stdout_create_many_prints_once_per_name() -> None:
    stream = io.StringIO()
    sink = StdoutSink(stream, "json")
    wf = {"metadata": {"name": "a", "namespace": "ns"}}
    results = await sink.create_many([wf, wf, {"metadata": {"name": "b"}}])
    assert results[0] == Created(name="a", namespace="ns")
    assert isinstance(results[1], AlreadyExists)
    assert results[2] == Created(name="b", namespace="default")
    assert len(stream.getvalue().splitlines()) == 2
    stream.close()
    failed = await sink.create_many([{"metadata": {"name": "c"}}])
    assert isinstance(failed[0], TemporarySubmitError)
    # A failed print is forgotten: the retry is not taken for a duplicate.
    sink.stream = io.StringIO()
    assert await sink.create_many([{"metadata": {"name": "c"}}]) == [
        Created(name="c", namespace="default")
    ]
