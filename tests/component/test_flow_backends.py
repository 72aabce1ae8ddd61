"""Flow control against real HTTP backends: the Kubernetes API emulator (with an admission
rate, failures, lost answers) and the Argo Server fake, through the real clients.

What is asserted here is exactness — one Workflow per event, whatever the backend did —
and bounds that hold by construction (a qps ceiling). How close the controller gets to
what a server admits, and how fast it recovers, are figures: `python -m tests.bench.flow`,
and the virtual-time properties in tests/unit/test_flow.py.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from trigger.clock import SystemClock
from trigger.decoders.kafka import decode_kafka_record
from trigger.events import Event
from trigger.rules.loader import load_rules
from trigger.rules.router import RuleSet
from trigger.submit.argo_server import ArgoServerOptions, ArgoServerSink
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.flow import FlowController, FlowSettings
from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink
from trigger.submit.submitter import OutcomeKind, Submitter
from trigger.testing.argoserver import ArgoServerFake
from trigger.testing.kubeapi import KubeEmulator

G, V = "argoproj.io", "v1alpha1"
RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: good}
spec:
  source: {kafka: {topics: [good]}}
  workflow: {template: t, namespace: data}
  retry: {limit: 1000, backoff: {initial: 100ms, factor: 2, max: 2s}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: broken}
spec:
  source: {kafka: {topics: [broken]}}
  workflow: {template: t, namespace: broken}
  retry: {limit: 1000, backoff: {initial: 100ms, factor: 2, max: 2s}}
"""


def event(topic: str, offset: int) -> Event:
    value = json.dumps({"n": offset}).encode()
    return decode_kafka_record(topic, 0, offset, 1735718400000, None, value, [])


@pytest.fixture
def rules(write_rules: Callable[..., Path]) -> RuleSet:
    return load_rules([write_rules(RULES)])


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(namespaces=["data", "broken"]) as emulator:
        yield emulator


async def kube_submitter(
    kube: KubeEmulator, tmp_path: Path, *, qps: float = 0
) -> tuple[Submitter, FlowController, KubernetesSink]:
    options = KubernetesOptions(kubeconfig=str(kube.kubeconfig(tmp_path / "kc")), qps=qps)
    sink = await KubernetesSink.connect(options)
    clock = SystemClock()
    flow = FlowController(
        "kubernetes", clock, FlowSettings(max_rate=qps or None, probe_max=0.5, probe_timeout=1.0)
    )
    dead = FileDeadLetterSink(tmp_path / "dead.jsonl")
    return Submitter(sink, dead, clock, flow=flow, max_in_flight=32), flow, sink


def stored_once(kube: KubeEmulator, namespace: str, expected: int) -> None:
    """Exactly `expected` Workflows in the namespace, one per event id."""
    ids = Counter(
        w["metadata"]["annotations"]["trigger.dev/event-id"]
        for w in kube.objects(G, V, "workflows", namespace)
    )
    assert len(ids) == expected and set(ids.values()) == {1}, ids.most_common(3)


async def test_every_event_once_under_an_admission_rate(
    kube: KubeEmulator, tmp_path: Path, rules: RuleSet
) -> None:
    """A burst against a server admitting 200 creates/s: some are refused with 429, the
    controller slows down, and every event has exactly one Workflow."""
    admission = kube.admit(200, path_contains="/workflows")
    assert admission is not None
    submitter, flow, sink = await kube_submitter(kube, tmp_path)
    try:
        outcomes = await asyncio.gather(
            *(submitter.submit(rules.by_name["good"], event("good", n)) for n in range(800))
        )
    finally:
        await flow.close()
        await sink.close()
    assert {o.kind for o in outcomes} == {OutcomeKind.CREATED}
    stored_once(kube, "data", 800)
    assert admission.admitted == 800  # each refused create came back and was admitted


async def test_a_qps_ceiling_is_never_exceeded(
    kube: KubeEmulator, tmp_path: Path, rules: RuleSet
) -> None:
    """With kubernetes.qps 40 (burst 100 after idle), no second sees more creates than
    the bucket allows, however fast the server would take them."""
    submitter, flow, sink = await kube_submitter(kube, tmp_path, qps=40)
    try:
        await asyncio.gather(
            *(submitter.submit(rules.by_name["good"], event("good", n)) for n in range(200))
        )
    finally:
        await flow.close()
        await sink.close()
    stored_once(kube, "data", 200)
    seen = [
        t for (m, _, _), t in zip(kube.requests, kube.request_times, strict=True) if m == "POST"
    ]
    start = seen[0]
    # The sink's bucket (40/s, burst 100) and the controller's limit (≤ 40/s) both hold:
    # in any window of w seconds from the first create, at most 100 + 40·w went out.
    for index, moment in enumerate(seen):
        assert index + 1 <= 100 + 40 * (moment - start) + 1


async def test_a_storm_of_500_429_and_lost_answers_loses_and_doubles_nothing(
    kube: KubeEmulator, tmp_path: Path, rules: RuleSet
) -> None:
    """500s, then 429s with Retry-After, then answers lost after the object was stored:
    every event ends with exactly one Workflow (a lost answer's retry finds its own)."""
    kube.inject(500, count=6, method="POST", path_contains="/workflows")
    kube.inject(429, count=6, method="POST", path_contains="/workflows", retry_after=1)
    lost = kube.lose(count=12, method="POST", path_contains="/workflows")
    submitter, flow, sink = await kube_submitter(kube, tmp_path)
    try:
        outcomes = await asyncio.gather(
            *(submitter.submit(rules.by_name["good"], event("good", n)) for n in range(300))
        )
    finally:
        await flow.close()
        await sink.close()
    assert lost.remaining == 0
    assert {o.kind for o in outcomes} <= {OutcomeKind.CREATED, OutcomeKind.DUPLICATE}
    assert sum(o.kind == OutcomeKind.DUPLICATE for o in outcomes) <= 12
    stored_once(kube, "data", 300)


async def test_a_failing_namespace_does_not_starve_the_others(
    kube: KubeEmulator, tmp_path: Path, rules: RuleSet
) -> None:
    """One namespace answering 500 to every create: the other namespace's creates all go
    through while the broken ones are still being retried."""
    kube.inject(500, count=10**6, method="POST", path_contains="/namespaces/broken/")
    submitter, flow, sink = await kube_submitter(kube, tmp_path)
    broken = [
        asyncio.create_task(submitter.submit(rules.by_name["broken"], event("broken", n)))
        for n in range(20)
    ]
    try:
        good = await asyncio.gather(
            *(submitter.submit(rules.by_name["good"], event("good", n)) for n in range(300))
        )
        assert {o.kind for o in good} == {OutcomeKind.CREATED}
        assert not any(task.done() for task in broken)  # still retrying, alone
    finally:
        for task in broken:
            task.cancel()
        await asyncio.gather(*broken, return_exceptions=True)
        await flow.close()
        await sink.close()
    stored_once(kube, "data", 300)


async def test_argo_server_storm_loses_and_doubles_nothing(tmp_path: Path, rules: RuleSet) -> None:
    """The Argo Server sink under 429 with Retry-After and then 500s: one Workflow per
    event, the controller shared by every create."""
    async with ArgoServerFake(namespaces=["data"]) as argo:
        argo.inject(429, count=6, method="POST", retry_after=1)
        argo.inject(500, count=6, method="POST")
        sink = await ArgoServerSink.connect(ArgoServerOptions(url=argo.url))
        clock = SystemClock()
        flow = FlowController("argo-server", clock, FlowSettings(probe_max=0.5))
        submitter = Submitter(sink, FileDeadLetterSink(tmp_path / "dl"), clock, flow=flow)
        try:
            outcomes = await asyncio.gather(
                *(submitter.submit(rules.by_name["good"], event("good", n)) for n in range(200))
            )
        finally:
            await flow.close()
            await sink.close()
        assert {o.kind for o in outcomes} == {OutcomeKind.CREATED}
        ids = Counter(
            w["metadata"]["annotations"]["trigger.dev/event-id"] for w in argo.workflows("data")
        )
        assert len(ids) == 200 and set(ids.values()) == {1}
