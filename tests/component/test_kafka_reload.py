"""Rule reloads that change a consumer group's topics, under load, against a real tansu broker.

A topic change re-subscribes the group: what is in flight must be finished and committed
before the switch, and nothing fetched during that wait may be handled again after it.
The daemon runs as a subprocess with the kubernetes sink into the API emulator, which
counts every create request, so a repeated create shows even when it is answered
"already exists".
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.component.test_kafka_source import (
    TEMPLATE,
    event_id,
    idle,
    json_records,
    kafka_rule,
    log_count,
    metric_samples,
    poll,
    produce,
    ready,
    start_daemon,
    unique,
    write_config,
    write_rules,
)
from tests.daemon import DaemonProcess
from trigger.testing.kafka import KafkaBroker

CHANGES = 5  # topic-changing reloads
WAVE = 1200  # messages produced before each reload


def assigned(daemon: DaemonProcess, partitions: int) -> bool:
    """The daemon holds exactly `partitions` partitions (cheaper than reading its log)."""
    return len(metric_samples(daemon, "trigger_kafka_partition_in_flight")) == partitions


def test_topic_changes_under_load_repeat_no_create(broker: KafkaBroker, tmp_path: Path) -> None:
    """Reloads that change the group's topics mid-stream create every Workflow exactly once."""
    from trigger.testing.kubeapi import KubeEmulator

    main, group = unique("reload"), unique("g")
    extras = [unique("extra") for _ in range(CHANGES)]
    rule = kafka_rule("main", main, {"n": "{{ event.value.n }}"})
    rules = write_rules(tmp_path / "rules", rule)
    config = write_config(tmp_path / "c.yaml", broker.bootstrap, group=group)

    async def scenario() -> tuple[int, list[str], float, int]:
        await broker.create_topics({main: 3, **{topic: 1 for topic in extras}})
        async with KubeEmulator(["default"]) as kube:
            kube.put_object("argoproj.io", "v1alpha1", "workflowtemplates", TEMPLATE)
            kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
            daemon = start_daemon(
                tmp_path / "d",
                rules,
                config,
                extra=("--sink", "kubernetes"),
                env={
                    "TRIGGER_KUBERNETES__KUBECONFIG": str(kubeconfig),
                    "TRIGGER_KUBERNETES__QPS": "100000",  # the emulator, not a limiter, sets the pace
                    "TRIGGER_KUBERNETES__BURST": "100000",
                },
            )

            def creates() -> int:
                return kube.count(method="POST", path_contains="/workflows")

            async def at_least(count: int) -> bool:
                return creates() >= count

            try:
                await ready(daemon)
                for i in range(CHANGES):
                    await produce(broker.bootstrap, main, json_records(WAVE, start=i * WAVE))
                    await poll(lambda i=i: at_least(i * WAVE + WAVE // 4), "work under way")
                    extra = [kafka_rule(f"extra-{j}", extras[j], {"n": "x"}) for j in range(i + 1)]
                    write_rules(tmp_path / "rules", rule + "".join(extra))
                    await poll(
                        lambda i=i: asyncio.to_thread(assigned, daemon, 3 + i + 1),
                        f"topic change {i + 1}",
                    )
                total = CHANGES * WAVE
                await poll(lambda: at_least(total), "every Workflow created")
                await poll(
                    lambda: asyncio.to_thread(idle, daemon, 3 + CHANGES), "nothing in flight"
                )
                duplicates = sum(
                    v
                    for labels, v in await asyncio.to_thread(
                        metric_samples, daemon, "trigger_workflows_total"
                    )
                    if labels["outcome"] == "duplicate"
                )
                ids = [event_id(wf) for wf in kube.objects("argoproj.io", "v1alpha1", "workflows")]
                changed = await asyncio.to_thread(log_count, daemon, "kafka subscription changed")
                return creates(), ids, duplicates, changed
            finally:
                daemon.stop()

    posts, ids, duplicates, changed = asyncio.run(scenario())
    expected = {f"{main}/{i % 3}/{i // 3}" for i in range(CHANGES * WAVE)}
    assert changed == CHANGES
    assert sorted(ids) == sorted(expected)
    assert (posts - len(ids), duplicates) == (0, 0)
