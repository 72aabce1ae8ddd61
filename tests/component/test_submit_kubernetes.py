"""The submitter through the real kubernetes sink, against the API emulator over HTTP.

Time is virtual: the test advances the clock while a submission sleeps in its backoff.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WorkflowChecker
from trigger.clock import VirtualClock
from trigger.decoders.kafka import decode_kafka_record
from trigger.errors import TemporarySubmitError
from trigger.events import Event
from trigger.rules.loader import load_rules
from trigger.rules.router import RuleSet
from trigger.submit.checked import CheckedSink
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink
from trigger.submit.submitter import OutcomeKind, Submitter
from trigger.submit.templates import TemplateCatalog
from trigger.testing.kubeapi import KubeEmulator

G, V = "argoproj.io", "v1alpha1"
RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: orders}
spec:
  source: {kafka: {topics: [orders]}}
  workflow:
    template: fraud-check
    namespace: data
    parameters: {orderId: "{{ event.value.orderId }}", mode: "{{ event.value.mode }}"}
  retry: {limit: 40, backoff: {initial: 1s, factor: 2, max: 30s}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: cluster}
spec:
  source: {kafka: {topics: [other]}}
  workflow: {template: shared, clusterScope: true, namespace: data}
"""
TEMPLATE = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "fraud-check", "namespace": "data"},
    "spec": {
        "arguments": {
            "parameters": [{"name": "orderId"}, {"name": "mode", "enum": ["fast", "full"]}]
        }
    },
}


def event(order: str, mode: str = "fast", offset: int = 1, topic: str = "orders") -> Event:
    value = json.dumps({"orderId": order, "mode": mode}).encode()
    return decode_kafka_record(topic, 0, offset, 1735718400123, None, value, [])


@pytest.fixture
def rules(write_rules: Callable[..., Path]) -> RuleSet:
    return load_rules([write_rules(RULES)])


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(namespaces=["default", "data"]) as emulator:
        yield emulator


@pytest.fixture
async def sink(kube: KubeEmulator, tmp_path: Path) -> AsyncIterator[KubernetesSink]:
    opened = await KubernetesSink.connect(
        KubernetesOptions(kubeconfig=str(kube.kubeconfig(tmp_path / "kubeconfig")), qps=0)
    )
    yield opened
    await opened.close()


@pytest.fixture
def dead(tmp_path: Path) -> FileDeadLetterSink:
    return FileDeadLetterSink(tmp_path / "dead.jsonl")


async def settle(task: asyncio.Task[Any], clock: VirtualClock) -> None:
    """Wait (real time, with a deadline) until the task sleeps on the clock or ends."""
    end = time.monotonic() + 10
    while not task.done() and clock.sleeping == 0:
        if time.monotonic() > end:
            raise AssertionError("submission neither slept nor finished")
        await asyncio.sleep(0.005)  # lets the HTTP exchange run; not a synchronization


async def run_to_end(task: asyncio.Task[Any], clock: VirtualClock) -> Any:
    """Drive virtual time forward whenever the submission sleeps, until it ends."""
    while True:
        await settle(task, clock)
        if task.done():
            return task.result()
        await clock.advance(60)


def workflows(kube: KubeEmulator) -> list[dict[str, Any]]:
    return kube.objects(G, V, "workflows", "data")


async def test_create_then_duplicate(
    kube: KubeEmulator,
    sink: KubernetesSink,
    dead: FileDeadLetterSink,
    rules: RuleSet,
    valid_workflow: WorkflowChecker,
) -> None:
    """The first submission creates; the same event again is a duplicate, not an error."""
    submitter = Submitter(sink, dead, VirtualClock())
    first = await submitter.submit(rules.by_name["orders"], event("A-1"))
    again = await submitter.submit(rules.by_name["orders"], event("A-1"))
    assert (first.kind, again.kind) == (OutcomeKind.CREATED, OutcomeKind.DUPLICATE)
    (stored,) = workflows(kube)
    assert stored["metadata"]["name"] == first.workflow
    assert "generateName" not in stored["metadata"]
    valid_workflow({k: v for k, v in stored.items() if k != "status"})


async def test_throttled_then_created_honours_retry_after(
    kube: KubeEmulator, sink: KubernetesSink, dead: FileDeadLetterSink, rules: RuleSet
) -> None:
    """429 with Retry-After: 3, then success: two attempts, at least 3 s of (virtual) wait."""
    clock = VirtualClock()
    submitter = Submitter(sink, dead, clock)
    kube.inject(429, count=1, method="POST", retry_after=3)
    start = clock.monotonic()
    task = asyncio.create_task(submitter.submit(rules.by_name["orders"], event("A-2")))
    outcome = await run_to_end(task, clock)
    assert outcome.kind == OutcomeKind.CREATED and outcome.attempts == 2
    assert clock.monotonic() - start >= 3
    assert kube.count(method="POST", path_contains="/workflows") == 2
    assert len(workflows(kube)) == 1


async def test_500_storm_then_created(
    kube: KubeEmulator, sink: KubernetesSink, dead: FileDeadLetterSink, rules: RuleSet
) -> None:
    """Thirty 500s in a row, then success: one Workflow after 31 attempts."""
    clock = VirtualClock()
    submitter = Submitter(sink, dead, clock)
    kube.inject(500, count=30, method="POST")
    task = asyncio.create_task(submitter.submit(rules.by_name["orders"], event("A-3")))
    outcome = await run_to_end(task, clock)
    assert outcome.kind == OutcomeKind.CREATED and outcome.attempts == 31
    assert len(workflows(kube)) == 1


async def test_forbidden_is_dead_lettered_without_retry(
    kube: KubeEmulator,
    sink: KubernetesSink,
    dead: FileDeadLetterSink,
    rules: RuleSet,
    tmp_path: Path,
) -> None:
    """403 is permanent: one attempt, a dead letter with the server's message, no Workflow."""
    submitter = Submitter(sink, dead, VirtualClock())
    kube.inject(403, count=1, method="POST", body_message="workflows is forbidden: no")
    outcome = await submitter.submit(rules.by_name["orders"], event("A-4"))
    assert outcome.kind == OutcomeKind.DEAD_LETTERED and outcome.attempts == 1
    (record,) = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert record["error"] == "PermanentSubmitError" and "forbidden" in record["message"]
    assert workflows(kube) == []


async def test_missing_template_then_appearing(
    kube: KubeEmulator, sink: KubernetesSink, dead: FileDeadLetterSink, rules: RuleSet
) -> None:
    """A template missing at submit time is retried; once it appears, the Workflow is created."""
    clock = VirtualClock()
    catalog = TemplateCatalog(sink.api_client, namespaces=["data"], cluster_templates=False)
    watcher = asyncio.create_task(catalog.run())
    try:
        await asyncio.wait_for(catalog.wait_synced(), 10)
        checked = CheckedSink(sink, catalog, clock, grace=300)
        submitter = Submitter(checked, dead, clock)
        task = asyncio.create_task(submitter.submit(rules.by_name["orders"], event("A-5")))
        await settle(task, clock)
        assert not task.done() and workflows(kube) == []
        appeared = asyncio.Event()
        catalog.subscribe(lambda _key: appeared.set())
        kube.put_object(G, V, "workflowtemplates", TEMPLATE)
        await asyncio.wait_for(appeared.wait(), 10)
        outcome = await run_to_end(task, clock)
        assert outcome.kind == OutcomeKind.CREATED and outcome.attempts >= 2
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def test_enum_violation_is_dead_lettered(
    kube: KubeEmulator, sink: KubernetesSink, dead: FileDeadLetterSink, rules: RuleSet
) -> None:
    """A rendered value outside the template's enum never reaches the API server."""
    kube.put_object(G, V, "workflowtemplates", TEMPLATE)
    catalog = TemplateCatalog(sink.api_client, namespaces=["data"], cluster_templates=False)
    await catalog.load()
    submitter = Submitter(
        CheckedSink(sink, catalog, VirtualClock(), grace=300), dead, VirtualClock()
    )
    outcome = await submitter.submit(rules.by_name["orders"], event("A-6", mode="weekly"))
    assert outcome.kind == OutcomeKind.DEAD_LETTERED and "mode" in outcome.message
    assert kube.count(method="POST", path_contains="/workflows") == 0


async def test_cluster_scope_reference(
    kube: KubeEmulator,
    sink: KubernetesSink,
    dead: FileDeadLetterSink,
    rules: RuleSet,
    valid_workflow: WorkflowChecker,
) -> None:
    """A clusterScope rule creates a Workflow referring to the ClusterWorkflowTemplate."""
    submitter = Submitter(sink, dead, VirtualClock())
    outcome = await submitter.submit(rules.by_name["cluster"], event("A-7", topic="other"))
    assert outcome.kind == OutcomeKind.CREATED
    (stored,) = workflows(kube)
    assert stored["spec"]["workflowTemplateRef"] == {"name": "shared", "clusterScope": True}
    valid_workflow({k: v for k, v in stored.items() if k != "status"})


async def test_exhausted_retries_raise_for_push_sources(
    kube: KubeEmulator, sink: KubernetesSink, dead: FileDeadLetterSink, rules: RuleSet
) -> None:
    """When 500s outlast the retry policy, the error is raised (a push answers 503)."""
    clock = VirtualClock()
    submitter = Submitter(sink, dead, clock)
    kube.inject(500, count=100, method="POST")
    task = asyncio.create_task(submitter.submit(rules.by_name["orders"], event("A-8")))
    with pytest.raises(TemporarySubmitError):
        await run_to_end(task, clock)
    assert workflows(kube) == []
