"""Poison that once stopped a partition for good: deep JSON, and Workflows too large to store.

`trigger run` as a subprocess against a real tansu broker. A record nested hundreds of
levels deep used to decode and then fail its own dead letter (RecursionError), and a
rule with many parameters fed from one large message made a Workflow the API server
refuses; either was retried for ever, the partition's offset stopped there, and nothing
behind it was created. Now each is dead-lettered with its reason and the partition
keeps flowing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.component.test_kafka_source import (
    committed,
    json_records,
    kafka_rule,
    poll,
    produce,
    ready,
    start_daemon,
    unique,
    workflows,
    write_config,
    write_rules,
)
from tests.daemon import DaemonProcess
from trigger.testing.kafka import KafkaBroker
from trigger.testing.kubeapi import KubeEmulator

G, V = "argoproj.io", "v1alpha1"
BEHIND = 300  # good records after the poison, on the same partition


def template(parameters: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "process", "namespace": "default"},
        "spec": {
            "entrypoint": "main",
            "arguments": {"parameters": [{"name": name} for name in parameters]},
            "templates": [{"name": "main", "container": {"image": "busybox"}}],
        },
    }


def dead_letters(daemon: DaemonProcess) -> list[dict[str, Any]]:
    if not daemon.dead_letters.exists():
        return []
    return [json.loads(line) for line in daemon.dead_letters.read_text().splitlines()]


def test_deeply_nested_json_is_dead_lettered_and_the_partition_flows(
    broker: KafkaBroker, tmp_path: Path
) -> None:
    """A record nested 600 levels deep, then 300 good ones on its partition: the deep one
    is one dead letter naming the depth limit, every good one has its Workflow, and the
    offset is committed past all of them."""
    topic, group = unique("deep"), unique("g")
    rules = write_rules(
        tmp_path / "rules", kafka_rule("deep", topic, {"n": "{{ event.value.n }}"}, format="json")
    )
    deep = ('{"n": 0, "x": ' + "[" * 600 + "]" * 600 + "}").encode()
    records = [(0, b"deep", deep, []), *json_records(BEHIND, partitions=1, start=1)]

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[int, int]]:
        await broker.create_topics({topic: 1})
        await produce(broker.bootstrap, topic, records)
        daemon = start_daemon(
            tmp_path / "d", rules, write_config(tmp_path / "c.yaml", broker.bootstrap, group=group)
        )
        try:
            await ready(daemon)

            async def done() -> bool:
                return (await committed(broker.bootstrap, group, topic, 1))[0] == len(records)

            await poll(done, "every offset committed")
            offsets = await committed(broker.bootstrap, group, topic, 1)
            return workflows(daemon.workflows_dir), dead_letters(daemon), offsets
        finally:
            daemon.stop()

    created, letters, offsets = asyncio.run(scenario())
    assert len(created) == BEHIND
    assert [(x["event_id"], x["error"]) for x in letters] == [(f"{topic}/0/0", "DecodeError")]
    assert "nested deeper than 100 levels" in letters[0]["message"]
    assert offsets == {0: len(records)}


CJK = "".join(chr(0x4E00 + i % 2000) for i in range(20_000))  # 60 KB; 120 KB escaped


@pytest.mark.parametrize(
    ("blob", "limit", "reason"),
    [
        (CJK, None, "the daemon's own check: 3.6 MB as JSON, over its 1 MiB"),
        ("x" * 60_000, "3145728", "the API server's 500 from etcd: 1.8 MB, over 1.5 MiB"),
    ],
)
def test_a_workflow_too_large_to_store_is_dead_lettered(
    broker: KafkaBroker, tmp_path: Path, blob: str, limit: str | None, reason: str
) -> None:
    """Thirty 60 KB parameters from one message make a Workflow the API server cannot
    store: it is dead-lettered as WorkflowTooLarge, never retried, and the 300 records
    behind it on the partition are all created."""
    topic, group = unique("large"), unique("g")
    parameters = {f"p{i}": "{{ event.value.blob }}" for i in range(30)}
    parameters["n"] = "{{ event.value.n }}"
    rules = write_rules(tmp_path / "rules", kafka_rule("large", topic, parameters))
    large = json.dumps({"n": 0, "blob": blob}, ensure_ascii=False).encode()
    small = [(0, None, json.dumps({"n": i, "blob": "b"}).encode(), []) for i in range(1, 301)]
    records: list[Any] = [(0, b"large", large, []), *small]
    env: dict[str, str] = {}
    if limit is not None:
        env["TRIGGER_SUBMIT__MAX_WORKFLOW_BYTES"] = limit

    async def scenario() -> tuple[int, list[dict[str, Any]], dict[int, int], int]:
        await broker.create_topics({topic: 1})
        async with KubeEmulator(["default"]) as kube:
            kube.put_object(G, V, "workflowtemplates", template(parameters))
            env["TRIGGER_KUBERNETES__KUBECONFIG"] = str(kube.kubeconfig(tmp_path / "kc"))
            daemon = start_daemon(
                tmp_path / "d",
                rules,
                write_config(tmp_path / "c.yaml", broker.bootstrap, group=group),
                extra=("--sink", "kubernetes"),
                env=env,
            )
            try:
                await ready(daemon)
                await produce(broker.bootstrap, topic, records)

                async def done() -> bool:
                    offsets = await committed(broker.bootstrap, group, topic, 1)
                    return offsets[0] == len(records)

                await poll(done, "every offset committed")
                created = len(kube.objects(G, V, "workflows"))
                offsets = await committed(broker.bootstrap, group, topic, 1)
                attempts = kube.count(method="POST", path_contains="/workflows")
                return created, dead_letters(daemon), offsets, attempts
            finally:
                daemon.stop()

    created, letters, offsets, posts = asyncio.run(scenario())
    assert created == len(small), reason
    assert [(x["event_id"], x["error"]) for x in letters] == [(f"{topic}/0/0", "WorkflowTooLarge")]
    assert offsets == {0: len(records)}
    # Never retried: the daemon's own check sends nothing; the server's answer is final.
    assert posts == len(small) + (0 if limit is None else 1)
