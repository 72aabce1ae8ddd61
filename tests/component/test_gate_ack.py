"""A source acknowledges a gate member's event only once it is recorded in its gate: while
the gate state cannot be written, a Kafka offset is not committed (real tansu broker) and
an OSS poll checkpoint does not pass the object (OSS server emulator, oss2); once the store
recovers, the gate fires and both advance."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.component.test_kafka_source import committed, poll, produce, unique, workflows
from trigger.clock import SystemClock, VirtualClock
from trigger.core.gatekeeper import GateKeeper
from trigger.core.metrics import Metrics
from trigger.core.pipeline import Pipeline
from trigger.core.state import FileStateStore, StateError, Value
from trigger.errors import TemporarySubmitError
from trigger.rules.loader import load_rules
from trigger.settings import Settings
from trigger.sources.base import SourceContext
from trigger.sources.kafka.source import KafkaSource
from trigger.sources.oss.checkpoint import Checkpoint, digest
from trigger.sources.oss.poll import BucketPoller, poll_groups
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.local import LocalSink
from trigger.submit.submitter import Submitter
from trigger.testing.kafka import KafkaBroker
from trigger.testing.ossserver import OssServer

AK, SK = "AKIDTEST", "SKTEST"


class GateStateOutage(FileStateStore):
    """A file store whose gate keys cannot be written while `down` (an API server refusing
    the gate's ConfigMap, say); other keys — a poll checkpoint — work. Counts refusals."""

    down = True
    refused = 0

    async def update(self, key: str, fn: Any) -> Value | None:
        if self.down and key.startswith("gate/"):
            self.refused += 1
            raise StateError("the gate's state cannot be written", temporary=True)
        return await super().update(key, fn)


def gate_rule(source: str, count: int) -> str:
    return f"""
apiVersion: trigger/v1
kind: Rule
metadata: {{name: load}}
spec:
  gate:
    key: "batch"
    window: 1h
    members:
      part:
        source: {source}
        count: {count}
  workflow:
    template: load
    namespace: data
"""


def parts(tmp: Path, rules: str, clock: Any) -> tuple[Pipeline, LocalSink, FileDeadLetterSink]:
    path = tmp / "rules.yaml"
    path.write_text(rules)
    sink, dead = LocalSink(tmp / "workflows"), FileDeadLetterSink(tmp / "dead.jsonl")
    submitter = Submitter(sink, dead, clock)
    return Pipeline(load_rules([path]), submitter, dead, Metrics(), clock), sink, dead


async def test_kafka_offset_waits_for_the_gate_state(broker: KafkaBroker, tmp_path: Path) -> None:
    """Two records of a gate on tansu: while the gate state is refused neither offset is
    committed (the source retries); once it recovers the gate fires and offset 2 commits."""
    topic, group = unique("parts"), unique("g")
    clock = SystemClock()
    pipeline, sink, dead = parts(tmp_path, gate_rule(f"{{kafka: {{topics: [{topic}]}}}}", 2), clock)
    store = await GateStateOutage.open(tmp_path / "state.json")
    pipeline.gates = GateKeeper(store, pipeline.submitter, dead, clock)
    cluster = {"bootstrap_servers": broker.bootstrap, "group": group,
               "auto_offset_reset": "earliest", "session_timeout": "1s", "heartbeat_interval": "200ms"}  # fmt: skip
    settings = Settings.model_validate({"kafka": {"clusters": {"default": cluster}}})
    await broker.create_topics({topic: 1})
    source = KafkaSource(SourceContext(pipeline, pipeline.metrics, clock, sink, store, settings))
    running = asyncio.create_task(source.run())
    try:
        values = [json.dumps({"n": n}).encode() for n in range(2)]
        await produce(broker.bootstrap, topic, [(0, b"k", v, []) for v in values])
        await poll(lambda: asyncio.sleep(0, store.refused >= 3), "the source to retry the gate")
        assert await committed(broker.bootstrap, group, topic, 1) == {0: -1}
        assert workflows(tmp_path / "workflows") == []
        store.down = False

        async def fired_and_committed() -> bool:
            done = len(workflows(tmp_path / "workflows")) == 1
            return done and await committed(broker.bootstrap, group, topic, 1) == {0: 2}

        await poll(fired_and_committed, "the gate fired and offset 2 committed")
    finally:
        await source.stop(10.0)
        running.cancel()  # a stopped source waits to be cancelled, as the supervisor does
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await store.close()
        await sink.close()
        await dead.close()


async def test_poll_checkpoint_waits_for_the_gate_state(tmp_path: Path) -> None:
    """Two objects of a gate found by the poller: while the gate state is refused the scan
    fails and the saved checkpoint holds neither; once it recovers the gate fires, the
    checkpoint holds both, and the next scan fires nothing."""
    clock = VirtualClock(datetime.now(UTC))
    async with OssServer(["raw"], credentials={AK: SK}, clock=clock.now) as oss:
        source = (
            f"{{oss: {{bucket: raw, key: {{prefix: in/}}, poll: {{endpoint: '{oss.endpoint}', "
            "region: cn-hangzhou, existing: fire, "
            "credentials: {accessKeyIdEnv: OSS_AK, accessKeySecretEnv: OSS_SK}}}}"
        )
        pipeline, sink, dead = parts(tmp_path, gate_rule(source, 2), clock)
        store = await GateStateOutage.open(tmp_path / "state.json")
        pipeline.gates = GateKeeper(store, pipeline.submitter, dead, clock)
        settings = Settings()
        ctx = SourceContext(pipeline, pipeline.metrics, clock, sink, store, settings,
                            {"OSS_AK": AK, "OSS_SK": SK})  # fmt: skip
        (group,) = poll_groups(pipeline.rules).values()
        poller = BucketPoller(ctx, group, settings.oss.poll, asyncio.Event(), None)
        for name in ("in/a.csv", "in/b.csv"):
            oss.put_object("raw", name, name.encode(), last_modified=clock.now())
        found = [oss.get_object("raw", key) for key in ("in/a.csv", "in/b.csv")]
        marks = {digest(o.key, o.etag) for o in found if o is not None}

        async def saved() -> set[int]:
            checkpoint = Checkpoint.load(await store.get(group.state_key))
            return set(checkpoint.seen) | set(checkpoint.scan.seen if checkpoint.scan else {})

        try:
            for _ in range(2):  # the source's retries, each failing the same way
                try:
                    await poller.poll_once()
                except TemporarySubmitError as exc:
                    assert "gate state" in str(exc)
                else:
                    raise AssertionError("the scan went on past an unrecorded object")
                assert not (await saved()) & marks
            assert workflows(tmp_path / "workflows") == []
            store.down = False
            assert await poller.poll_once() == 2
            assert len(workflows(tmp_path / "workflows")) == 1
            assert await saved() >= marks
            assert await poller.poll_once() == 0
        finally:
            await store.close()
            await sink.close()
            await dead.close()
