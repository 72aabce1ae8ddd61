"""One dead letter per (event, rule, reason), however often the event is redelivered.

An event matched by a rule that can never succeed (poison, a render error, a Workflow the
API server refuses) and by a rule whose creates fail for a while is redelivered by its
source until the second rule is done. Its letters must be written once — when the event
is done — not once per redelivery. The pipeline runs against the Kubernetes API emulator
over HTTP, with the plain file sink (no de-duplicating wrapper), so the ordering alone
is what is tested.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from trigger.clock import VirtualClock
from trigger.core.metrics import Metrics
from trigger.core.pipeline import Pipeline
from trigger.decoders.kafka import decode_kafka_record
from trigger.errors import TemporarySubmitError
from trigger.events import Event
from trigger.rules.loader import load_rules
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink
from trigger.submit.submitter import OutcomeKind, Submitter
from trigger.testing.kubeapi import KubeEmulator

RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: good}
spec:
  source: {kafka: {topics: [orders]}}
  workflow: {template: t, namespace: data}
  retry: {limit: 0}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: unrenderable}
spec:
  source: {kafka: {topics: [orders]}}
  workflow: {template: t, namespace: data, parameters: {x: "{{ event.value.missing }}"}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: refused}
spec:
  source: {kafka: {topics: [orders]}}
  workflow: {template: t, namespace: forbidden}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: strict-json}
spec:
  source: {kafka: {topics: [raw], format: json}}
  workflow: {template: t, namespace: data}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: raw-good}
spec:
  source: {kafka: {topics: [raw], format: text}}
  workflow: {template: t, namespace: data}
  retry: {limit: 0}
"""


@pytest.fixture
async def pipeline(
    tmp_path: Path, write_rules: Callable[..., Path]
) -> AsyncIterator[tuple[Pipeline, KubeEmulator, Path]]:
    async with KubeEmulator(namespaces=["data"]) as kube:
        sink = await KubernetesSink.connect(
            KubernetesOptions(kubeconfig=str(kube.kubeconfig(tmp_path / "kc")), qps=0)
        )
        dead = FileDeadLetterSink(tmp_path / "dead.jsonl")
        clock = VirtualClock()
        submitter = Submitter(sink, dead, clock)
        rules = load_rules([write_rules(RULES)])
        yield Pipeline(rules, submitter, dead, Metrics(), clock), kube, tmp_path / "dead.jsonl"
        await sink.close()
        await dead.close()


def letters(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return sorted((json.loads(x)["rule"], json.loads(x)["error"]) for x in lines)


async def redeliver_until_done(pipeline: Pipeline, event: Event, failures: int) -> int:
    """Handle the event the way a source does: again after every temporary failure."""
    attempts = 0
    while True:
        attempts += 1
        try:
            outcomes = await pipeline.handle(event)
        except TemporarySubmitError:
            assert attempts <= failures, "failed more often than the API was told to"
            continue
        assert {o.kind for o in outcomes} >= {OutcomeKind.CREATED}
        return attempts


async def test_render_and_refusal_letters_are_written_once(
    pipeline: tuple[Pipeline, KubeEmulator, Path],
) -> None:
    """Three redeliveries while the good rule's creates fail: one letter per rule."""
    handler, kube, dead = pipeline
    kube.inject(503, count=3, method="POST", path_contains="/namespaces/data/")
    event = decode_kafka_record("orders", 0, 5, 1735718400000, None, b'{"id": 1}', [])
    assert await redeliver_until_done(handler, event, failures=3) == 4
    assert letters(dead) == [
        ("refused", "PermanentSubmitError"),
        ("unrenderable", "RenderError"),
    ]


async def test_a_poison_letter_is_written_once(
    pipeline: tuple[Pipeline, KubeEmulator, Path],
) -> None:
    """A value a json rule cannot parse, beside a text rule whose creates fail twice: the
    poison letter is written once, when the event is done."""
    handler, kube, dead = pipeline
    kube.inject(503, count=2, method="POST")
    event = decode_kafka_record("raw", 0, 9, 1735718400000, None, b"not json", [])
    assert await redeliver_until_done(handler, event, failures=2) == 3
    assert letters(dead) == [("strict-json", "DecodeError")]
