"""Kafka broker outages end to end: `trigger run` as a subprocess against tansu that the test
stops and starts again on the same port.

- **A real restart**: tansu keeps its topics and committed offsets in an S3 bucket (moto's
  server on loopback), the daemon writes Workflows into the Kubernetes API emulator, and
  the broker is stopped mid-stream for 5 s (30 s under `pytest --long`). Every
  message gets exactly one Workflow, the daemon stays up, and while the broker is away
  `/readyz`, `/metrics` and the log say so.
- **The topic deleted and re-created**: tansu's memory store after a restart has no topics
  and no committed offsets, and the re-created topic numbers its records from 0 again. The
  daemon is frozen (SIGSTOP) right after it finished a round of messages, so it still holds
  offsets it has not committed, while the broker restarts; every message produced after
  each re-creation must still get its Workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.component.test_kafka_source import (
    TEMPLATE,
    committed,
    idle,
    kafka_rule,
    metric_samples,
    parameters,
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
from trigger.testing.s3 import S3Store

PARTITIONS = 3
LOG_EVERY = 10.0  # seconds: a repeated library line is logged at most this often


def log_lines(daemon: DaemonProcess) -> list[str]:
    return [line for line in daemon.log().splitlines() if line.strip()]


def broker_up(daemon: DaemonProcess) -> float | None:
    found = [v for labels, v in metric_samples(daemon, "trigger_kafka_broker_up")
             if labels.get("cluster") == "default"]  # fmt: skip
    return found[0] if found else None


# --- a real restart: durable storage ------------------------------------------------------


@dataclass
class RestartResult:
    produced: int
    ids: list[str] = field(default_factory=list)  # the `n` parameter of every Workflow
    readyz_status: int = 0  # /readyz while the broker was away
    readyz_problems: dict[str, list[str]] = field(default_factory=dict)
    up_during: float | None = None
    up_after: float | None = None
    problems_after: dict[str, list[str]] | None = None
    lines: list[str] = field(default_factory=list)
    alive: bool = False
    restarts: float = 0.0


@pytest.fixture(scope="module")
def restart(long_run: bool, tmp_path_factory: pytest.TempPathFactory) -> RestartResult:
    from trigger.testing.kubeapi import KubeEmulator

    tmp = tmp_path_factory.mktemp("restart")
    outage = 30.0 if long_run else 5.0
    before, after = (20_000, 5_000) if long_run else (2_000, 500)
    deadline = 300.0 if long_run else 60.0  # the emulator takes ~1,000 creates/s at best
    topic, group = unique("durable"), unique("g")
    rules = write_rules(tmp / "rules", kafka_rule("durable", topic, {"n": "{{ event.value.n }}"}))

    async def scenario() -> RestartResult:
        async with S3Store() as s3, KubeEmulator(["default"]) as kube:
            broker = KafkaBroker(storage=s3)
            await broker.start()
            config = write_config(tmp / "c.yaml", broker.bootstrap, group=group)
            kube.put_object("argoproj.io", "v1alpha1", "workflowtemplates", TEMPLATE)
            daemon = start_daemon(
                tmp / "d",
                rules,
                config,
                extra=("--sink", "kubernetes"),
                env={"TRIGGER_KUBERNETES__KUBECONFIG": str(kube.kubeconfig(tmp / "kubeconfig"))},
            )
            result = RestartResult(before + after)

            def created() -> list[dict[str, Any]]:
                return kube.objects("argoproj.io", "v1alpha1", "workflows")

            async def at_least(count: int) -> bool:
                # The daemon's count, read in a thread: copying thousands of objects out of
                # the emulator would stall the loop that serves it to the daemon.
                return await asyncio.to_thread(lambda: _created(daemon) >= count)

            try:
                await broker.create_topics({topic: PARTITIONS})
                await ready(daemon)
                await produce(broker.bootstrap, topic, _numbered(0, before))
                await poll(lambda: at_least(before // 10), "the stream under way")
                assert not await at_least(before), "the daemon finished before the broker stopped"
                # Mid-stream: the rest waits in the bucket. (In a thread: this loop serves
                # the API emulator the daemon writes to.)
                await asyncio.to_thread(broker.halt, signal.SIGTERM)
                # The outage lasts its length (a scenario parameter); meanwhile the test
                # looks at what the daemon shows, until it shows the outage.
                end = asyncio.get_running_loop().time() + outage
                while asyncio.get_running_loop().time() < end:
                    answer = await asyncio.to_thread(daemon.get, "/readyz")
                    result.readyz_status = answer.status
                    result.readyz_problems = answer.json().get("problems", {})
                    result.up_during = await asyncio.to_thread(broker_up, daemon)
                    if "kafka" in result.readyz_problems and result.up_during == 0:
                        break
                    await asyncio.sleep(0.1)  # polling interval, not synchronization
                await asyncio.sleep(max(end - asyncio.get_running_loop().time(), 0.0))
                await broker.start()
                await produce(broker.bootstrap, topic, _numbered(before, after))
                await poll(lambda: at_least(before + after), "every Workflow", within=deadline)
                await poll(lambda: asyncio.to_thread(idle, daemon, PARTITIONS), "all finished")

                def recovered() -> bool:
                    return broker_up(daemon) == 1 and "problems" not in daemon.get("/readyz").json()

                with contextlib.suppress(AssertionError):  # the tests below say what is missing
                    await poll(lambda: asyncio.to_thread(recovered), "the recovery to show", 10)
                result.up_after = await asyncio.to_thread(broker_up, daemon)
                result.problems_after = daemon.get("/readyz").json().get("problems")
                result.ids = [parameters(wf)["n"] for wf in created()]
                result.alive = daemon.process is not None and daemon.process.poll() is None
                result.restarts = sum(
                    v for _, v in metric_samples(daemon, "trigger_source_restarts_total")
                )
                result.lines = log_lines(daemon)
                return result
            finally:
                daemon.stop()
                broker.stop()

    return asyncio.run(scenario())


def _numbered(start: int, count: int) -> list[tuple[int, bytes, bytes, list[Any]]]:
    return [
        (i % PARTITIONS, f"k{i}".encode(), json.dumps({"n": i}).encode(), [])
        for i in range(start, start + count)
    ]


def _created(daemon: DaemonProcess) -> float:
    samples = metric_samples(daemon, "trigger_workflows_total")
    return sum(v for labels, v in samples if labels["outcome"] == "created")


def test_restart_gives_every_message_exactly_one_workflow(restart: RestartResult) -> None:
    """Messages produced before, across and after a broker restart: one Workflow each."""
    counts = Counter(restart.ids)
    assert sorted(counts) == sorted(str(i) for i in range(restart.produced))
    assert [n for n, c in counts.items() if c > 1] == []


def test_restart_leaves_the_daemon_up(restart: RestartResult) -> None:
    """The daemon neither exits nor restarts its Kafka source across the outage."""
    assert restart.alive
    assert restart.restarts == 0


def test_outage_is_listed_in_readyz_while_it_lasts(restart: RestartResult) -> None:
    """While the broker is away /readyz lists it under `problems.kafka` (and stays 200: a
    broker outage is every replica's, and webhooks still work); the entry goes with it."""
    assert restart.readyz_status == 200
    assert any("default" in line for line in restart.readyz_problems.get("kafka", []))
    assert restart.problems_after is None


def test_outage_is_a_metric(restart: RestartResult) -> None:
    """`trigger_kafka_broker_up{cluster}` is 0 while the broker is away, 1 once it is back."""
    assert restart.up_during == 0
    assert restart.up_after == 1


def test_outage_is_one_warning_and_recovery_one_line(restart: RestartResult) -> None:
    """The daemon warns once when the brokers become unreachable and says once, with how
    long it lasted, when they are back."""
    events = [json.loads(line) for line in restart.lines]
    lost = [e for e in events if e.get("event") == "kafka brokers unreachable"]
    back = [e for e in events if e.get("event") == "kafka brokers reachable again"]
    assert len(lost) == 1 and lost[0]["level"] == "warning" and lost[0]["cluster"] == "default"
    assert len(back) == 1 and back[0]["cluster"] == "default" and back[0]["down_for"] > 0


def test_library_lines_are_json_and_rate_limited(restart: RestartResult) -> None:
    """aiokafka's lines during the outage are JSON lines naming their `logger`, and one
    kind of line repeats at most once every 10 s (the count left out is on the next one)."""
    events = [json.loads(line) for line in restart.lines]  # every line parses
    library = [e for e in events if str(e.get("logger", "")).startswith("aiokafka")]
    assert library, "aiokafka said nothing during the outage"
    last: dict[tuple[str, str], datetime] = {}
    for e in library:
        key, at = (e["logger"], e["event"]), datetime.fromisoformat(e["timestamp"])
        if key in last:
            assert (at - last[key]).total_seconds() >= LOG_EVERY, e
        last[key] = at


# --- the topic deleted and re-created: memory storage ----------------------------------


@dataclass
class RecreateResult:
    produced: list[str] = field(default_factory=list)  # ids produced after a re-creation
    found: list[str] = field(default_factory=list)  # ids of their Workflows
    held_back: int = 0  # restarts that met the daemon with finished work not yet committed
    restarts: int = 0
    resets: float = 0.0
    alive: bool = False


def phase(round_: int, name: str, count: int) -> list[tuple[int, bytes, bytes, list[Any]]]:
    """`count` messages with unique ids, spread over the partitions."""
    values = [{"id": f"{round_}-{name}-{i}", "checked": name == "checked"} for i in range(count)]
    return [(i % PARTITIONS, None, json.dumps(v).encode(), []) for i, v in enumerate(values)]


@pytest.fixture(scope="module")
def recreate(long_run: bool, tmp_path_factory: pytest.TempPathFactory) -> RecreateResult:
    tmp = tmp_path_factory.mktemp("recreate")
    restarts, checked, stream = (12, 600, 1200) if long_run else (4, 300, 600)
    topic, group = unique("recreate"), unique("g")
    # Offsets start from 0 in every incarnation of the topic, and the rules keep the
    # default idempotency key: its record timestamp tells a new message at an old offset
    # from a redelivery (keyed by offset alone, it would meet the old Workflow as a
    # duplicate). Checked messages get Workflows in their own namespace, so the test
    # counts them apart from the stream cut short by each restart.
    params = {"id": "{{ event.value.id }}"}
    rules = write_rules(
        tmp / "rules",
        kafka_rule("checked", topic, params, filter={"expr": "event.value.checked"}).replace(
            "namespace: default", "namespace: checked"
        )
        + kafka_rule("stream", topic, params, filter={"expr": "!event.value.checked"}),
    )

    async def scenario() -> RecreateResult:
        broker = KafkaBroker()
        await broker.start()
        config = write_config(tmp / "c.yaml", broker.bootstrap, group=group)
        daemon = start_daemon(tmp / "d", rules, config)
        result = RecreateResult()
        checked_dir = daemon.workflows_dir / "checked"
        try:
            await broker.create_topics({topic: PARTITIONS})
            await ready(daemon)
            for round_ in range(restarts + 1):
                # Produced after a re-creation (or the first creation): each must be handled.
                sent = phase(round_, "checked", checked)
                result.produced += [json.loads(v)["id"] for _, _, v, _ in sent]
                await produce(broker.bootstrap, topic, sent)
                await _handled(
                    daemon, broker, group, topic, checked_dir, len(result.produced), checked
                )
                if round_ == restarts:
                    break
                # A stream under way when the broker goes: what it has not handed out yet
                # goes with the memory store, and is not counted.
                base = _count(daemon.workflows_dir)
                await produce(broker.bootstrap, topic, phase(round_, "stream", stream))
                await _handled(
                    daemon,
                    broker,
                    group,
                    topic,
                    daemon.workflows_dir,
                    base + stream // 3,
                    checked + stream,
                )
                daemon.signal(signal.SIGSTOP)
                try:
                    offsets = await committed(broker.bootstrap, group, topic, PARTITIONS)
                    done = _count(daemon.workflows_dir) - base
                    result.held_back += sum(offsets.values()) < checked + done
                    broker.halt()
                    await broker.start()  # memory: no topic, no committed offset
                    # Before the daemon can ask for it (tansu would make it with 4 partitions).
                    await broker.create_topics({topic: PARTITIONS})
                finally:
                    daemon.signal(signal.SIGCONT)
                result.restarts += 1
            result.found = [parameters(wf)["id"] for wf in workflows(checked_dir)]
            result.resets = sum(
                v for _, v in metric_samples(daemon, "trigger_kafka_offset_resets_total")
            )
            result.alive = daemon.process is not None and daemon.process.poll() is None
            return result
        finally:
            daemon.stop()
            broker.stop()

    return asyncio.run(scenario())


def _count(directory: Path) -> int:
    return sum(1 for _ in directory.rglob("*.yaml")) if directory.exists() else 0


async def _handled(  # noqa: PLR0917 - the scenario's parts, then what to wait for
    daemon: DaemonProcess,
    broker: KafkaBroker,
    group: str,
    topic: str,
    directory: Path,
    total: int,
    produced: int,
) -> None:
    """`directory` holds `total` Workflows, or the daemon holds nothing in flight and has
    committed every partition at or past the `produced` messages of this topic: it will
    fetch nothing before that, so whatever is missing was skipped."""
    each = produced // PARTITIONS

    async def done() -> bool:
        if _count(directory) >= total:
            return True
        if not await asyncio.to_thread(idle_all, daemon):
            return False
        offsets = await committed(broker.bootstrap, group, topic, PARTITIONS)
        return all(offset >= each for offset in offsets.values())

    await poll(done, f"{total} Workflows in {directory.name}")


def idle_all(daemon: DaemonProcess) -> bool:
    """Nothing in flight on any partition the daemon holds (it holds some)."""
    samples = metric_samples(daemon, "trigger_kafka_partition_in_flight")
    return bool(samples) and all(v == 0 for _, v in samples)


def test_recreated_topic_loses_no_message(recreate: RecreateResult) -> None:
    """After each re-creation of the topic, every message produced gets its Workflow,
    although the daemon held uncommitted offsets of the old topic when it went."""
    assert recreate.held_back > 0, "no restart met the daemon with an uncommitted offset"
    missing = sorted(set(recreate.produced) - set(recreate.found))
    assert missing == [], f"{len(missing)} of {len(recreate.produced)} messages lost"
    assert len(recreate.found) == len(set(recreate.found))


def test_recreated_topic_leaves_the_daemon_up(recreate: RecreateResult) -> None:
    """Repeated re-creations never end the daemon."""
    assert recreate.alive


def test_recreated_topic_is_counted(recreate: RecreateResult) -> None:
    """Each re-creation the daemon met is counted in `trigger_kafka_offset_resets_total`."""
    assert recreate.resets >= recreate.held_back
