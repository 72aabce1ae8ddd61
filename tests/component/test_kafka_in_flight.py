"""The process-wide bound on Kafka records in flight (`kafka.max_in_flight`), end to end.

`trigger run` as a subprocess on a 64-partition topic of a real tansu broker, with the
kubernetes sink into the API emulator: creates are slower than fetches, so every
partition's window would fill (64 × 100 records) if the process bound did not stop it.
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

PARTITIONS = 64
EACH = 50  # messages per partition
BOUND = 200  # kafka.max_in_flight in this scenario; the windows would allow 6,400


def metric(daemon: DaemonProcess, name: str) -> float:
    return sum(value for _, value in metric_samples(daemon, name))


def test_records_in_flight_stay_within_the_process_bound(
    broker: KafkaBroker, tmp_path: Path
) -> None:
    """On 64 partitions, at most `kafka.max_in_flight` records are in flight at once, the
    bound is reached, and every message still gets exactly one Workflow, created once."""
    from trigger.testing.kubeapi import KubeEmulator

    topic, group = unique("wide"), unique("g")
    rules = write_rules(tmp_path / "rules", kafka_rule("wide", topic, {"n": "{{ event.value.n }}"}))
    config = write_config(tmp_path / "c.yaml", broker.bootstrap, group=group)
    total = PARTITIONS * EACH

    async def scenario() -> tuple[list[float], float, list[str], int]:
        await broker.create_topics({topic: PARTITIONS})
        await produce(broker.bootstrap, topic, json_records(total, partitions=PARTITIONS))
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
                    "TRIGGER_KUBERNETES__QPS": "100000",
                    "TRIGGER_KUBERNETES__BURST": "100000",
                    "TRIGGER_KAFKA__MAX_IN_FLIGHT": str(BOUND),
                },
            )
            samples: list[float] = []

            def creates() -> int:
                return kube.count(method="POST", path_contains="/workflows")

            async def sample_until_done() -> bool:
                samples.append(
                    await asyncio.to_thread(metric, daemon, "trigger_kafka_records_in_flight")
                )
                return creates() >= total

            try:
                await ready(daemon)
                await poll(sample_until_done, "every Workflow created")
                await poll(lambda: asyncio.to_thread(idle, daemon, PARTITIONS), "all committed")
                peak = await asyncio.to_thread(
                    metric, daemon, "trigger_kafka_records_in_flight_peak"
                )
                ids = [event_id(wf) for wf in kube.objects("argoproj.io", "v1alpha1", "workflows")]
                return samples, peak, ids, creates()
            finally:
                daemon.stop()

    samples, peak, ids, posts = asyncio.run(scenario())
    assert peak == BOUND
    assert max(samples) <= BOUND
    assert sorted(ids) == sorted(
        f"{topic}/{i % PARTITIONS}/{i // PARTITIONS}" for i in range(total)
    )
    assert posts == total
