"""Rendering: the Workflow object, its deterministic name, and render errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WorkflowChecker
from trigger.decoders.kafka import decode_kafka_record
from trigger.errors import RenderError
from trigger.events import Event
from trigger.rules.loader import load_rules
from trigger.rules.render import render
from trigger.rules.router import RuleSet

NOW = datetime(2025, 1, 1, tzinfo=UTC)
RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: orders}
spec:
  source: {kafka: {topics: [orders]}}
  workflow:
    template: fraud-check
    namespace: risk
    entrypoint: main
    parameters:
      orderId: "{{ event.value.orderId }}"
      amount: "{{ event.value.amount }}"
      static: 42
      argo: "{% raw %}{{workflow.name}}{% endraw %}"
    labels: {team: risk}
    annotations: {owner: "risk@example.com"}
    spec: {priority: 10, podGC: {strategy: OnPodSuccess}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: keyed}
spec:
  source: {kafka: {topics: [orders]}}
  workflow: {template: fraud-check, clusterScope: true, generateName: fraud-}
  idempotencyKey: "{{ event.value.orderId }}"
"""


@pytest.fixture
def rules(write_rules: Callable[..., Path]) -> RuleSet:
    return load_rules([write_rules(RULES)])


def kafka(value: bytes, offset: int = 1) -> Event:
    return decode_kafka_record("orders", 0, offset, 1735718400123, None, value, [])


def test_workflow_shape(rules: RuleSet, valid_workflow: WorkflowChecker) -> None:
    """The Workflow refers to the template, carries parameters, labels and annotations."""
    event = kafka(b'{"orderId": "A-1", "amount": 249.5}')
    wf: dict[str, Any] = render(rules.by_name["orders"], event)
    valid_workflow(wf)
    assert wf["apiVersion"] == "argoproj.io/v1alpha1" and wf["kind"] == "Workflow"
    meta = wf["metadata"]
    assert meta["namespace"] == "risk"
    assert "generateName" not in meta
    assert meta["name"].startswith("orders-") and len(meta["name"]) <= 63
    assert meta["labels"] == {
        "team": "risk",
        "trigger.dev/rule": "orders",
        "trigger.dev/source": "kafka",
    }
    assert meta["annotations"]["trigger.dev/event-id"] == "orders/0/1"
    assert meta["annotations"]["trigger.dev/event-type"] == "kafka.message"
    assert meta["annotations"]["owner"] == "risk@example.com"
    assert wf["spec"]["workflowTemplateRef"] == {"name": "fraud-check"}
    assert wf["spec"]["entrypoint"] == "main"
    assert wf["spec"]["priority"] == 10 and wf["spec"]["podGC"] == {"strategy": "OnPodSuccess"}
    assert wf["spec"]["arguments"]["parameters"] == [
        {"name": "orderId", "value": "A-1"},
        {"name": "amount", "value": "249.5"},
        {"name": "static", "value": "42"},
        {"name": "argo", "value": "{{workflow.name}}"},
    ]


def test_name_is_deterministic_per_rule_and_key(rules: RuleSet) -> None:
    """The same event gives the same name; another event or rule gives another."""
    rule = rules.by_name["orders"]
    first = render(rule, kafka(b'{"orderId": "A", "amount": 1}'))["metadata"]["name"]
    again = render(rule, kafka(b'{"orderId": "A", "amount": 1}'))["metadata"]["name"]
    other = render(rule, kafka(b'{"orderId": "A", "amount": 1}', offset=2))["metadata"]["name"]
    assert first == again != other


def test_idempotency_key_drives_the_name(rules: RuleSet, valid_workflow: WorkflowChecker) -> None:
    """With idempotencyKey, two deliveries of one order give one name; clusterScope is set."""
    rule = rules.by_name["keyed"]
    one = render(rule, kafka(b'{"orderId": "A"}', offset=1))
    two = render(rule, kafka(b'{"orderId": "A"}', offset=9))
    valid_workflow(one)
    assert one["metadata"]["name"] == two["metadata"]["name"]
    assert one["metadata"]["name"].startswith("fraud-")
    assert one["spec"]["workflowTemplateRef"] == {"name": "fraud-check", "clusterScope": True}
    assert "arguments" not in one["spec"]


def test_missing_field_is_a_render_error(rules: RuleSet) -> None:
    """A template that reads a missing field fails with rule, parameter and event id."""
    with pytest.raises(RenderError) as caught:
        render(rules.by_name["orders"], kafka(b'{"amount": 1}', offset=5))
    assert caught.value.rule == "orders"
    assert caught.value.field == "workflow.parameters.orderId"
    assert caught.value.event_id == "orders/0/5"
    assert "orderId" in str(caught.value)


@pytest.mark.parametrize(
    ("rule", "field"), [("orders", "workflow.parameters.orderId"), ("keyed", "idempotencyKey")]
)
def test_null_field_is_a_render_error_in_every_template(
    rules: RuleSet, rule: str, field: str
) -> None:
    """A present but null field fails every template the same way, never rendering 'null'."""
    with pytest.raises(RenderError) as caught:
        render(rules.by_name[rule], kafka(b'{"orderId": null, "amount": 1}', offset=6))
    assert caught.value.field == field
    assert str(caught.value) == (
        f"rule {rule}: {field}: event orders/0/6: event.value.orderId is null; to render null "
        "as empty text, write {{ event.value.orderId | default('', true) }}"
    )


def test_long_generate_name_stays_within_63(write_rules: Callable[..., Path]) -> None:
    """A long rule name still yields a name of at most 63 valid characters."""
    name = "r" * 63
    rules = load_rules([write_rules(RULES.replace("name: orders}", f"name: {name}}}"))])
    wf = render(rules.by_name[name], kafka(b'{"orderId": "A", "amount": 1}'))
    assert len(wf["metadata"]["name"]) <= 63


def test_a_created_object_is_keyed_by_its_content() -> None:
    """Without idempotencyKey, a created OSS object fires once per content (bucket/key@ETAG,
    as polling names it); a deletion or an object without an ETag falls back to the id."""
    from trigger.events import default_idempotency_key

    def oss(kind: str, etag: str | None, event_id: str = "N-1") -> Event:
        fields = {"bucket": "raw", "key": "in/a.csv", "etag": etag}
        return Event(event_id, "oss", kind, "in/a.csv", NOW, {}, fields)

    assert default_idempotency_key(oss("ObjectCreated:PutObject", '"ab12"')) == "raw/in/a.csv@AB12"
    assert default_idempotency_key(oss("ObjectCreated:PutObject", "AB12", "N-2")) == (
        "raw/in/a.csv@AB12"
    )
    assert default_idempotency_key(oss("ObjectRemoved:DeleteObject", "AB12")) == "N-1"
    assert default_idempotency_key(oss("ObjectCreated:PutObject", None)) == "N-1"


def test_a_kafka_record_is_keyed_by_its_offset_and_timestamp() -> None:
    """Without idempotencyKey, a Kafka record fires once per (topic, partition, offset,
    timestamp): a re-created topic's record at an old offset is new work; a record
    without a timestamp falls back to its id."""
    from trigger.events import default_idempotency_key

    def record(stamp: int | None) -> Event:
        fields = {"topic": "orders", "partition": 0, "offset": 7, "timestamp": stamp}
        return Event("orders/0/7", "kafka", "kafka.message", "orders/0/7", NOW, {}, fields)

    assert default_idempotency_key(record(1733400000123)) == "orders/0/7@1733400000123"
    assert default_idempotency_key(record(1733400000123)) != default_idempotency_key(
        record(1733400009999)
    )
    assert default_idempotency_key(record(None)) == "orders/0/7"
    assert default_idempotency_key(record(-1)) == "orders/0/7"
