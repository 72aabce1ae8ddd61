"""Workflow names: wide enough never to collide, and a collision never taken for a duplicate.

A name is `<generateName><100-bit hash>`. When a sink finds the name held by a Workflow
of another (rule, idempotency key), the submitter must not count the event as done: it
tries the rule's next deterministic name. Every sink is exercised through its real
transport: the local sink's writer process, the Kubernetes API emulator and the Argo
Server fake over HTTP, and the stdout sink.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WorkflowChecker
from trigger.clock import VirtualClock
from trigger.decoders.kafka import decode_kafka_record
from trigger.events import Event, default_idempotency_key
from trigger.rules.loader import load_rules
from trigger.rules.render import MAX_ALTERNATES, render, workflow_name
from trigger.rules.router import RuleSet
from trigger.submit.argo_server import ArgoServerOptions, ArgoServerSink
from trigger.submit.base import Sink
from trigger.submit.deadletter import DeadLetter, FileDeadLetterSink
from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink
from trigger.submit.local import LocalSink, dump
from trigger.submit.stdout import StdoutSink
from trigger.submit.submitter import NAME_COLLISION, OutcomeKind, Submitter
from trigger.testing.argoserver import ArgoServerFake
from trigger.testing.kubeapi import KubeEmulator

G, V = "argoproj.io", "v1alpha1"
RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: orders}
spec:
  source: {kafka: {topics: [orders]}}
  workflow: {template: fraud-check, namespace: data}
"""
# Under the old 48-bit names, rule "orders" gave these two offsets one name: the second
# order met AlreadyExists, counted as a duplicate, and never got a Workflow.
OLD_COLLISION = (24704098, 26646420)


def order(offset: int) -> Event:
    value = json.dumps({"orderId": f"o-{offset}"}).encode()
    return decode_kafka_record("orders", 0, offset, 1735718400123, None, value, [])


@pytest.fixture
def rules(write_rules: Callable[..., Path]) -> RuleSet:
    return load_rules([write_rules(RULES)])


@dataclass
class Backend:
    """A sink, and how the test plants an object under a name and reads back every name."""

    sink: Sink
    plant: Callable[[dict[str, Any]], Awaitable[None]]
    names: Callable[[], list[str]]


def foreign(workflow: dict[str, Any], key: str = "someone-else") -> dict[str, Any]:
    """The same Workflow, made for another idempotency key (a collision, or a hand-made
    object that happens to bear the name)."""
    meta = workflow["metadata"]
    annotations = {**meta["annotations"], "trigger.dev/idempotency-key": key}
    return {**workflow, "metadata": {**meta, "annotations": annotations}}


@pytest.fixture(params=["local", "kubernetes", "argo-server", "stdout"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    kind = request.param
    if kind == "local":
        local = LocalSink(tmp_path / "out")

        async def plant_file(workflow: dict[str, Any]) -> None:
            path = local.path(workflow["metadata"]["namespace"], workflow["metadata"]["name"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(dump(workflow))

        def local_names() -> list[str]:
            return sorted(p.stem for p in (tmp_path / "out" / "data").glob("*.yaml"))

        yield Backend(local, plant_file, local_names)
        await local.close()
    elif kind == "kubernetes":
        async with KubeEmulator(namespaces=["data"]) as kube:
            options = KubernetesOptions(kubeconfig=str(kube.kubeconfig(tmp_path / "kc")), qps=0)
            sink = await KubernetesSink.connect(options)

            async def plant_object(workflow: dict[str, Any]) -> None:
                kube.put_object(G, V, "workflows", workflow)

            def kube_names() -> list[str]:
                return sorted(w["metadata"]["name"] for w in kube.objects(G, V, "workflows"))

            yield Backend(sink, plant_object, kube_names)
            await sink.close()
    elif kind == "argo-server":
        async with ArgoServerFake(namespaces=["data"]) as argo:
            argo.add_template(
                {"metadata": {"name": "fraud-check", "namespace": "data"}, "spec": {}}
            )
            sink = await ArgoServerSink.connect(ArgoServerOptions(url=argo.url))

            async def plant_argo(workflow: dict[str, Any]) -> None:
                argo.add_workflow(workflow)

            def argo_names() -> list[str]:
                return sorted(w["metadata"]["name"] for w in argo.workflows())

            yield Backend(sink, plant_argo, argo_names)
            await sink.close()
    else:
        stdout = StdoutSink(io.StringIO(), "json")

        async def plant_printed(workflow: dict[str, Any]) -> None:
            await stdout.create(workflow)

        def printed() -> list[str]:
            stream = stdout.stream
            assert isinstance(stream, io.StringIO)
            lines = stream.getvalue().splitlines()
            return sorted(json.loads(line)["metadata"]["name"] for line in lines)

        yield Backend(stdout, plant_printed, printed)
        await stdout.close()


def test_the_reported_pair_no_longer_shares_a_name(rules: RuleSet) -> None:
    """Kafka offsets 24704098 and 26646420 of orders/0 get two names for rule orders."""
    rule = rules.by_name["orders"]
    first, second = (render(rule, order(o))["metadata"]["name"] for o in OLD_COLLISION)
    assert first != second


async def test_both_orders_of_the_reported_pair_get_a_workflow(
    backend: Backend, tmp_path: Path, rules: RuleSet
) -> None:
    """The two orders that once shared a name both become Workflows, through every sink."""
    submitter = Submitter(backend.sink, FileDeadLetterSink(tmp_path / "dl"), VirtualClock())
    outcomes = [await submitter.submit(rules.by_name["orders"], order(o)) for o in OLD_COLLISION]
    assert [o.kind for o in outcomes] == [OutcomeKind.CREATED, OutcomeKind.CREATED]
    assert backend.names() == sorted(o.workflow or "" for o in outcomes)


async def test_a_name_held_by_another_key_is_not_a_duplicate(
    backend: Backend, tmp_path: Path, rules: RuleSet, valid_workflow: WorkflowChecker
) -> None:
    """The name taken by another key: the event is created under the next name, and a
    redelivery finds it there as a duplicate."""
    rule, event = rules.by_name["orders"], order(7)
    ours = render(rule, event)
    await backend.plant(foreign(ours))
    submitter = Submitter(backend.sink, FileDeadLetterSink(tmp_path / "dl"), VirtualClock())

    first = await submitter.submit(rule, event)
    again = await submitter.submit(rule, event)

    alternate = workflow_name(rule, default_idempotency_key(event), 1)
    assert (first.kind, first.workflow) == (OutcomeKind.CREATED, alternate)
    assert (again.kind, again.workflow) == (OutcomeKind.DUPLICATE, alternate)
    assert backend.names() == sorted([ours["metadata"]["name"], alternate])
    valid_workflow({**ours, "metadata": {**ours["metadata"], "name": alternate}})


async def test_every_name_taken_is_dead_lettered_as_a_collision(
    backend: Backend, tmp_path: Path, rules: RuleSet
) -> None:
    """When the name and all its alternates hold other keys, the event is dead-lettered
    as NameCollision with the last name tried: never acknowledged as a duplicate."""
    rule, event = rules.by_name["orders"], order(8)
    ours = render(rule, event)
    key = default_idempotency_key(event)
    names = [workflow_name(rule, key, n) for n in range(MAX_ALTERNATES + 1)]
    for number, name in enumerate(names):
        taken = {**ours, "metadata": {**ours["metadata"], "name": name}}
        await backend.plant(foreign(taken, f"other-{number}"))
    dead = FileDeadLetterSink(tmp_path / "dl")
    submitter = Submitter(backend.sink, dead, VirtualClock())

    outcome = await submitter.submit(rule, event)

    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD_LETTERED, NAME_COLLISION)
    assert outcome.workflow == names[-1]
    await dead.close()
    (line,) = (tmp_path / "dl").read_text().splitlines()
    record = DeadLetter.from_json(json.loads(line))
    assert (record.error, record.event_id) == (NAME_COLLISION, event.id)
    assert backend.names() == sorted(names)
