"""A gate with an OSS member and a Kafka member, through `trigger run` and a tansu broker."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import yaml

from tests.component.test_kafka_source import (
    committed,
    poll,
    produce,
    ready,
    start_daemon,
    unique,
    write_config,
    write_rules,
)
from tests.e2e.test_gate_crash import delivery
from trigger.testing.kafka import KafkaBroker

RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: load-approved}
spec:
  gate:
    key: "{{ event.key | dirname }}"
    window: 1h
    members:
      file:
        source: {oss: {bucket: raw, key: {prefix: sales/}}}
      approval:
        source: {kafka: {topics: [TOPIC]}}
        filter: {pattern: {value: {approved: [true]}}}
  workflow:
    template: load
    namespace: data
    parameters:
      file: "{{ gate.members.file[0].key }}"
      by: "{{ gate.members.approval[0].value.by }}"
"""


def test_oss_file_and_kafka_approval_fire_one_gate(broker: KafkaBroker, tmp_path: Path) -> None:
    """An OSS file and a Kafka approval of one key fire once (the approval's offset is
    committed), and the file redelivered after a SIGKILL fires nothing more."""
    topic, group = unique("approvals"), unique("g")
    rules = write_rules(tmp_path / "rules", RULES.replace("TOPIC", topic))
    config = write_config(tmp_path / "c.yaml", broker.bootstrap, group=group)
    approval = json.dumps({"approved": True, "by": "ana"}).encode()
    headers = {"Content-Type": "application/cloudevents+json"}

    async def scenario() -> list[Path]:
        await broker.create_topics({topic: 1})
        daemon = start_daemon(tmp_path / "d", rules, config)
        try:
            await ready(daemon)
            answer = daemon.post("/oss/eventbridge", delivery("sales/2026-12-06/x.csv", 1), headers)
            assert answer.status == 200
            await produce(broker.bootstrap, topic, [(0, b"sales/2026-12-06/ok", approval, [])])
            await poll(
                lambda: asyncio.to_thread(lambda: len(daemon.workflow_files()) == 1), "the gate"
            )

            async def past_approval() -> bool:
                return await committed(broker.bootstrap, group, topic, 1) == {0: 1}

            await poll(past_approval, "the approval's offset committed")
            daemon.signal(signal.SIGKILL)
            daemon.wait()
            daemon.start()  # the file again: a duplicate of the fired gate
            answer = daemon.post("/oss/eventbridge", delivery("sales/2026-12-06/x.csv", 1), headers)
            assert answer.status == 200
            return daemon.workflow_files()
        finally:
            daemon.stop()

    files = asyncio.run(scenario())
    assert len(files) == 1
    workflow = yaml.safe_load(files[0].read_text())
    params = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert params == {"file": "sales/2026-12-06/x.csv", "by": "ana"}
