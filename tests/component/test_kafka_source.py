"""The Kafka source end to end: `trigger run` as a subprocess against a real tansu broker.

One broker serves the module; each scenario uses its own topics and consumer group.
Scenarios that several tests look at run once in a module fixture and return what they
observed; each test then asserts one behaviour of it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import DaemonProcess
from trigger.testing.kafka import KafkaBroker

DEADLINE = 60.0
Record = tuple[
    int, bytes | None, bytes | None, list[tuple[str, bytes]]
]  # partition, key, value, headers


# --- helpers (the benchmark uses them too) ----------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def write_config(path: Path, bootstrap: str, *, group: str, **cluster: Any) -> Path:
    """A daemon config: the default cluster with test timeouts, starting from earliest."""
    default = {
        "bootstrap_servers": bootstrap,
        "group": group,
        "auto_offset_reset": "earliest",
        "session_timeout": "1s",
        "heartbeat_interval": "200ms",
        **cluster,
    }
    config = {"shutdown_deadline": "10s", "kafka": {"clusters": {"default": default}}}
    path.write_text(yaml.safe_dump(config))
    return path


def write_rules(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules.yaml").write_text(textwrap.dedent(text).lstrip())
    return directory


def kafka_rule(name: str, topic: str, parameters: dict[str, str], **extra: Any) -> str:
    """One rule document; `extra` goes under spec (filter, retry) or source.kafka (format)."""
    kafka: dict[str, Any] = {"topics": [topic]}
    if "format" in extra:
        kafka["format"] = extra.pop("format")
    spec = {
        "source": {"kafka": kafka},
        **extra,
        "workflow": {
            "template": "process",
            "namespace": "default",
            "generateName": f"{name}-",
            "parameters": parameters,
        },
    }
    doc = {"apiVersion": "trigger/v1", "kind": "Rule", "metadata": {"name": name}, "spec": spec}
    return "---\n" + yaml.safe_dump(doc, sort_keys=False)


async def produce(bootstrap: str, topic: str, records: list[Record]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 << 20, linger_ms=5)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, value, key=key, partition=partition, headers=headers)
            for partition, key, value, headers in records
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def json_records(count: int, partitions: int = 3, start: int = 0) -> list[Record]:
    return [
        (i % partitions, f"k{i}".encode(), json.dumps({"n": i}).encode(), [])
        for i in range(start, start + count)
    ]


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets (a consumer that does not join the group)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        result = {}
        for p in range(partitions):
            offset = await consumer.committed(TopicPartition(topic, p))
            result[p] = -1 if offset is None else offset
        return result
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, count: int) -> list[Any]:
    """The first `count` records of a one-partition topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        records: list[Any] = []
        end = time.monotonic() + DEADLINE
        while len(records) < count and time.monotonic() < end:
            batch = await consumer.getmany(tp, timeout_ms=200)
            records.extend(batch.get(tp, []))
        return records
    finally:
        await consumer.stop()


async def poll(condition: Callable[[], Awaitable[Any]], what: str, within: float = DEADLINE) -> Any:
    """Await `condition` until truthy; fail after `within` seconds."""
    end = time.monotonic() + within
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # polling interval, not synchronization


def workflows(directory: Path) -> list[dict[str, Any]]:
    """The local sink's Workflows (a file per name: the sink's truth)."""
    if not directory.exists():
        return []
    return [yaml.safe_load(p.read_text()) for p in sorted(directory.rglob("*.yaml"))]


def event_id(workflow: dict[str, Any]) -> str:
    return str(workflow["metadata"]["annotations"]["trigger.dev/event-id"])


def parameters(workflow: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}


def rule_of(workflow: dict[str, Any]) -> str:
    return str(workflow["metadata"]["labels"]["trigger.dev/rule"])


def metric_samples(daemon: DaemonProcess, name: str) -> list[tuple[dict[str, str], float]]:
    text = daemon.get("/metrics").body.decode()
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def idle(daemon: DaemonProcess, partitions: int) -> bool:
    """The daemon holds `partitions` partitions and nothing is in flight on any."""
    samples = metric_samples(daemon, "trigger_kafka_partition_in_flight")
    return len(samples) == partitions and all(v == 0 for _, v in samples)


def log_count(daemon: DaemonProcess, event: str) -> int:
    return sum(1 for line in daemon.log_events() if line.get("event") == event)


def start_daemon(
    workdir: Path,
    rules: Path,
    config: Path,
    *,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> DaemonProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    daemon = DaemonProcess(
        workdir, rules, extra_args=("--config", str(config), *extra), env=env or {}
    )
    return daemon.start(ready=False)


async def ready(daemon: DaemonProcess) -> None:
    await asyncio.to_thread(daemon.wait_ready)


# --- every message, every matching rule -------------------------------------------------


def test_each_message_gets_one_workflow_per_matching_rule(
    broker: KafkaBroker, tmp_path: Path
) -> None:
    """300 messages on 3 partitions and 3 rules: exactly one Workflow per (message, match)."""
    topic, group = unique("orders"), unique("g")
    rules = write_rules(
        tmp_path / "rules",
        "".join(
            [
                kafka_rule("all", topic, {"n": "{{ event.value.n }}", "key": "{{ event.key }}"}),
                kafka_rule(
                    "even",
                    topic,
                    {"n": "{{ event.value.n }}", "partition": "{{ event.partition }}"},
                    filter={"expr": "event.value.n % 2 == 0"},
                ),
                kafka_rule("text", topic, {"raw": "{{ event.value }}"}, format="text"),
            ]
        ),
    )
    records = json_records(300)

    async def scenario() -> list[dict[str, Any]]:
        await broker.create_topics({topic: 3})
        await produce(broker.bootstrap, topic, records)
        daemon = start_daemon(
            tmp_path / "d", rules, write_config(tmp_path / "c.yaml", broker.bootstrap, group=group)
        )
        try:
            await ready(daemon)
            await poll(
                lambda: asyncio.to_thread(lambda: len(daemon.workflow_files()) >= 750),
                "750 workflows",
            )
            await poll(lambda: asyncio.to_thread(idle, daemon, 3), "nothing in flight")
            return workflows(daemon.workflows_dir)
        finally:
            daemon.stop()

    found = asyncio.run(scenario())
    by_rule: dict[str, dict[str, dict[str, str]]] = {}
    for wf in found:
        by_rule.setdefault(rule_of(wf), {})[event_id(wf)] = parameters(wf)
    expected: dict[str, dict[str, dict[str, str]]] = {"all": {}, "even": {}, "text": {}}
    for i, (partition, key, value, _) in enumerate(records):
        offset = i // 3
        eid = f"{topic}/{partition}/{offset}"
        assert key is not None and value is not None
        expected["all"][eid] = {"n": str(i), "key": key.decode()}
        if i % 2 == 0:
            expected["even"][eid] = {"n": str(i), "partition": str(partition)}
        expected["text"][eid] = {"raw": value.decode()}
    assert len(found) == 750
    assert by_rule == expected


# --- crash and restart ----------------------------------------------------------------------


@dataclass
class CrashResult:
    total: int
    beyond_commit_at_kill: int  # Workflows whose offsets were not yet committed at the kill
    files: list[dict[str, Any]] = field(default_factory=list)
    duplicates_after_restart: float = 0.0
    rebalanced_after_restart: bool = False  # partitions given up or a commit refused


@pytest.fixture(scope="module")
def crash(broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> CrashResult:
    tmp = tmp_path_factory.mktemp("crash")
    topic, group = unique("crash"), unique("g")
    # Paced at 200/s (commits every 0.2 s), so there is always finished but uncommitted
    # work to freeze: unpaced, a quiet machine finished all 600 before the first freeze.
    pace = {"rateLimit": {"perSecond": 200, "burst": 10}}
    rules = write_rules(
        tmp / "rules", kafka_rule("crash", topic, {"n": "{{ event.value.n }}"}, **pace)
    )
    config = write_config(tmp / "c.yaml", broker.bootstrap, group=group)
    total = 600

    def beyond(done: list[dict[str, Any]], offsets: dict[int, int]) -> int:
        return sum(
            1
            for wf in done
            if int(event_id(wf).split("/")[2]) >= offsets[int(event_id(wf).split("/")[1])]
        )

    async def scenario() -> CrashResult:
        await broker.create_topics({topic: 3})
        await produce(broker.bootstrap, topic, json_records(total))
        daemon = start_daemon(tmp / "d", rules, config)
        try:
            await ready(daemon)
            while True:  # freeze it mid-stream with finished but uncommitted work
                await poll(
                    lambda: asyncio.to_thread(lambda: len(daemon.workflow_files()) >= 60),
                    "first workflows",
                )
                daemon.signal(signal.SIGSTOP)
                done = workflows(daemon.workflows_dir)
                if len(done) >= total:
                    raise AssertionError("the daemon finished before it could be killed mid-stream")
                if beyond(done, await committed(broker.bootstrap, group, topic, 3)):
                    break
                daemon.signal(signal.SIGCONT)
            daemon.stop()  # SIGKILL
            at_kill = workflows(daemon.workflows_dir)
            result = CrashResult(
                total, beyond(at_kill, await committed(broker.bootstrap, group, topic, 3))
            )
            lines_at_kill = len(daemon.log_events())
            daemon.start(ready=False)
            await ready(daemon)
            await poll(
                lambda: asyncio.to_thread(lambda: len(daemon.workflow_files()) >= total),
                "all workflows",
            )
            await poll(lambda: asyncio.to_thread(idle, daemon, 3), "nothing in flight")
            result.rebalanced_after_restart = any(
                line.get("event") in {"kafka partitions given up", "kafka commit failed"}
                for line in daemon.log_events()[lines_at_kill:]
            )
            result.files = workflows(daemon.workflows_dir)
            result.duplicates_after_restart = sum(
                v
                for labels, v in metric_samples(daemon, "trigger_workflows_total")
                if labels["outcome"] == "duplicate"
            )
            return result
        finally:
            daemon.stop()

    return asyncio.run(scenario())


def test_sigkill_and_restart_lose_no_message(crash: CrashResult) -> None:
    """After SIGKILL mid-stream and a restart, every message has its Workflow."""
    ids = sorted(event_id(wf) for wf in crash.files)
    assert len(ids) == crash.total
    assert len(set(ids)) == crash.total


def test_sigkill_redelivery_is_counted_as_duplicates(crash: CrashResult) -> None:
    """Work finished but uncommitted at the kill is redelivered and met as duplicates.

    A rebalance in the restarted daemon's life (the killed member's session expiring
    on a loaded machine) may redeliver more finished work; only then may there be more."""
    assert crash.beyond_commit_at_kill > 0
    if crash.rebalanced_after_restart:
        assert crash.duplicates_after_restart >= crash.beyond_commit_at_kill
    else:
        assert crash.duplicates_after_restart == crash.beyond_commit_at_kill


# --- poison ---------------------------------------------------------------------------------

POISON: list[tuple[str, bytes, bytes]] = [  # case, value, what the error message says
    ("invalid-json", b"{not json", b"value: invalid JSON"),
    ("invalid-utf8", b"\xff\xfe\xfd", b"value: invalid UTF-8"),
    ("one-megabyte", b"x" * (1 << 20), b"value: invalid JSON"),
]


@dataclass
class PoisonResult:
    topic: str
    rule: str
    dead: list[Any]
    files: list[dict[str, Any]]
    committed: dict[int, int]
    sent: list[Record]


@pytest.fixture(scope="module")
def poison(broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> PoisonResult:
    tmp = tmp_path_factory.mktemp("poison")
    topic, dlq, group, rule = unique("poison"), unique("dlq"), unique("g"), "poison-json"
    rules = write_rules(tmp / "rules", kafka_rule(rule, topic, {"n": "{{ event.value.n }}"}))
    config = write_config(tmp / "c.yaml", broker.bootstrap, group=group, dead_letter_topic=dlq)
    sent: list[Record] = [(0, b"good-0", b'{"n": 0}', [])]
    sent += [
        (0, name.encode(), value, [("origin", b"test"), ("case", name.encode())])
        for name, value, _ in POISON
    ]
    sent += [(0, b"good-4", b'{"n": 4}', [])]

    async def scenario() -> PoisonResult:
        await broker.create_topics({topic: 1, dlq: 1})
        await produce(broker.bootstrap, topic, sent)
        daemon = start_daemon(tmp / "d", rules, config)
        try:
            await ready(daemon)

            async def all_committed() -> bool:
                return (await committed(broker.bootstrap, group, topic, 1))[0] == len(sent)

            await poll(all_committed, "every offset committed")
            dead = await read_topic(broker.bootstrap, dlq, len(POISON))
            offsets = await committed(broker.bootstrap, group, topic, 1)
            return PoisonResult(topic, rule, dead, workflows(daemon.workflows_dir), offsets, sent)
        finally:
            daemon.stop()

    return asyncio.run(scenario())


def test_poison_records_reach_the_dead_letter_topic_unchanged(poison: PoisonResult) -> None:
    """Each poison record is re-produced with its original key, value and headers."""
    got = [
        (r.key, r.value, [h for h in r.headers if not h[0].startswith("trigger.")])
        for r in poison.dead
    ]
    assert got == [(key, value, headers) for _, key, value, headers in poison.sent[1:4]]


def test_dead_letter_headers_name_rule_error_and_origin(
    poison: PoisonResult, broker: KafkaBroker
) -> None:
    """Dead letters carry the rule, the error class and message, and the original
    coordinates and timestamp (part of a Kafka event's idempotency key, for replays)."""
    assert len(poison.dead) == len(POISON)
    originals = asyncio.run(read_topic(broker.bootstrap, poison.topic, len(poison.sent)))
    for offset, (record, (_, _, message)) in enumerate(
        zip(poison.dead, POISON, strict=True), start=1
    ):
        headers = dict(record.headers)
        assert headers["trigger.rule"] == poison.rule.encode()
        assert headers["trigger.error.class"] == b"DecodeError"
        assert headers["trigger.error.message"].startswith(message)
        assert headers["trigger.original.topic"] == poison.topic.encode()
        assert headers["trigger.original.partition"] == b"0"
        assert headers["trigger.original.offset"] == str(offset).encode()
        assert headers["trigger.original.timestamp"] == str(originals[offset].timestamp).encode()


def test_partition_moves_past_poison_and_commits(poison: PoisonResult) -> None:
    """Good records around the poison get their Workflows and every offset is committed."""
    assert sorted(parameters(wf)["n"] for wf in poison.files) == ["0", "4"]
    assert poison.committed == {0: len(poison.sent)}


# --- the Kubernetes API fails for a while -----------------------------------------------------

BOUND = 4  # max_in_flight_per_partition in this scenario
OUTAGE = 1_000_000  # injected failures: more than any run meets before the API recovers
TEMPLATE = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "process", "namespace": "default"},
    "spec": {
        "entrypoint": "main",
        "arguments": {"parameters": [{"name": "n"}]},
        "templates": [{"name": "main", "container": {"image": "busybox", "command": ["true"]}}],
    },
}


@dataclass
class OutageResult:
    total: int
    ids: list[str]
    violations: list[str]  # commits seen past a message without its Workflow
    samples_during_outage: int
    peaks: list[float]
    paused_seen: bool
    failures_left: int


@pytest.fixture(scope="module")
def outage(broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> OutageResult:
    from trigger.testing.kubeapi import KubeEmulator

    tmp = tmp_path_factory.mktemp("outage")
    topic, group, total = unique("outage"), unique("g"), 60
    rules = write_rules(
        tmp / "rules", kafka_rule("outage", topic, {"n": "{{ event.value.n }}"}, retry={"limit": 0})
    )
    config = write_config(
        tmp / "c.yaml", broker.bootstrap, group=group, max_in_flight_per_partition=BOUND
    )

    async def scenario() -> OutageResult:
        await broker.create_topics({topic: 3})
        async with KubeEmulator(["default"]) as kube:
            kube.put_object("argoproj.io", "v1alpha1", "workflowtemplates", TEMPLATE)
            kubeconfig = kube.kubeconfig(tmp / "kubeconfig")
            # The outage lasts until the daemon has met it several times and its partitions
            # have paused; then the API recovers (a count of failures would instead be
            # paced by the flow controller's probes, one at a time).
            failures = kube.inject(500, count=OUTAGE, method="POST", path_contains="/workflows")
            reader = AIOKafkaConsumer(
                bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False
            )
            await reader.start()
            daemon = start_daemon(
                tmp / "d",
                rules,
                config,
                extra=("--sink", "kubernetes"),
                env={"TRIGGER_KUBERNETES__KUBECONFIG": str(kubeconfig)},
            )
            result = OutageResult(total, [], [], 0, [], False, 0)
            try:
                await ready(daemon)
                await produce(broker.bootstrap, topic, json_records(total))

                async def sample() -> bool:
                    during = failures.remaining > 0
                    if during and OUTAGE - failures.remaining >= 8 and result.paused_seen:
                        failures.remaining = 0  # the API recovers
                    offsets = {
                        p: await reader.committed(TopicPartition(topic, p)) or 0 for p in range(3)
                    }
                    done = {
                        event_id(wf) for wf in kube.objects("argoproj.io", "v1alpha1", "workflows")
                    }
                    result.violations += [
                        f"{topic}/{p}/{o} committed without its Workflow"
                        for p, upto in offsets.items()
                        for o in range(upto)
                        if f"{topic}/{p}/{o}" not in done
                    ]
                    result.samples_during_outage += during
                    paused = await asyncio.to_thread(
                        metric_samples, daemon, "trigger_kafka_partition_paused"
                    )
                    result.paused_seen |= any(v == 1 for _, v in paused)
                    return len(done) >= total and sum(offsets.values()) == total

                await poll(sample, "all Workflows created and committed")
                peaks = await asyncio.to_thread(
                    metric_samples, daemon, "trigger_kafka_partition_in_flight_peak"
                )
                result.peaks = [v for _, v in peaks]
                result.ids = [
                    event_id(wf) for wf in kube.objects("argoproj.io", "v1alpha1", "workflows")
                ]
                result.failures_left = failures.remaining
                return result
            finally:
                daemon.stop()
                await reader.stop()

    return asyncio.run(scenario())


def test_outage_loses_nothing_once_the_api_recovers(outage: OutageResult) -> None:
    """Every message gets its Workflow after the API answered 500 for a while."""
    assert outage.failures_left == 0
    assert sorted(outage.ids) == sorted({*outage.ids}) and len(outage.ids) == outage.total


def test_outage_commits_never_pass_unfinished_work(outage: OutageResult) -> None:
    """While creates fail, no committed offset passes a message without its Workflow."""
    assert outage.samples_during_outage > 0
    assert outage.violations == []


def test_outage_pauses_partitions_at_the_in_flight_bound(outage: OutageResult) -> None:
    """In-flight records per partition never exceed the bound; full partitions pause."""
    assert len(outage.peaks) == 3
    assert max(outage.peaks) == BOUND
    assert outage.paused_seen


# --- two daemons in one group -------------------------------------------------------------


@dataclass
class ShareResult:
    total: int
    files: list[dict[str, Any]]
    shared: list[set[str]]  # each daemon's partitions while both ran
    survivor: set[str]  # the second daemon's partitions after the first stopped
    exit_code: int
    created: int
    duplicates: int


def assignments(daemon: DaemonProcess) -> list[set[str]]:
    return [
        set(e["partitions"])
        for e in daemon.log_events()
        if e.get("event") == "kafka partitions assigned"
    ]


@pytest.fixture(scope="module")
def shared(broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> ShareResult:
    tmp = tmp_path_factory.mktemp("shared")
    topic, group = unique("shared"), unique("g")
    rules = write_rules(tmp / "rules", kafka_rule("shared", topic, {"n": "{{ event.value.n }}"}))
    config = write_config(tmp / "c.yaml", broker.bootstrap, group=group)
    sink = ("--sink", f"local:{tmp / 'workflows'}")  # one sink: a double would be a duplicate

    async def scenario() -> ShareResult:
        await broker.create_topics({topic: 3})
        first = start_daemon(tmp / "a", rules, config, extra=sink)
        second = start_daemon(tmp / "b", rules, config, extra=sink)
        try:
            await ready(first)
            await ready(second)

            def split() -> bool:
                a, b = assignments(first), assignments(second)
                return bool(
                    a and b and a[-1] and b[-1] and not a[-1] & b[-1] and len(a[-1] | b[-1]) == 3
                )

            await poll(lambda: asyncio.to_thread(split), "partitions shared by both daemons")
            together = [assignments(first)[-1], assignments(second)[-1]]
            await produce(broker.bootstrap, topic, json_records(300))
            await poll(
                lambda: asyncio.to_thread(lambda: len(workflows(tmp / "workflows")) >= 100),
                "work under way",
            )
            first.signal(signal.SIGTERM)  # while it has work in flight
            code = await asyncio.to_thread(first.wait)
            await produce(broker.bootstrap, topic, json_records(300, start=300))
            await poll(
                lambda: asyncio.to_thread(lambda: len(workflows(tmp / "workflows")) >= 600),
                "all workflows",
            )
            await poll(
                lambda: asyncio.to_thread(idle, second, 3), "the survivor idle with all partitions"
            )
            daemons = (first, second)
            return ShareResult(
                600,
                workflows(tmp / "workflows"),
                together,
                assignments(second)[-1],
                code,
                sum(log_count(d, "workflow created") for d in daemons),
                sum(log_count(d, "workflow already exists (redelivery)") for d in daemons),
            )
        finally:
            first.stop()
            second.stop()

    return asyncio.run(scenario())


def test_two_daemons_share_the_partitions(shared: ShareResult) -> None:
    """Two daemons in one group each hold some of the partitions, none twice."""
    a, b = shared.shared
    assert a and b and not a & b and len(a | b) == 3


def test_survivor_takes_over_after_sigterm(shared: ShareResult) -> None:
    """After one daemon stops gracefully, the other holds every partition."""
    assert shared.exit_code == 0
    assert len(shared.survivor) == 3


def test_handover_loses_and_doubles_nothing(shared: ShareResult) -> None:
    """Across the handover every message gets exactly one Workflow, created once."""
    ids = [event_id(wf) for wf in shared.files]
    assert len(ids) == len(set(ids)) == shared.total
    assert shared.created == shared.total
    assert shared.duplicates == 0


# --- the batch path hands back what the sink failed ----------------------------------------


def test_items_a_batch_could_not_write_are_retried_alone(
    broker: KafkaBroker, tmp_path: Path
) -> None:
    """The local sink writes a fetch in one batch. Items it fails (here: one namespace's
    directory cannot be made) go the one-record way, retried until they are written; the
    others are created once, and no offset is committed past an unwritten item."""
    topic, group = unique("batch"), unique("g")
    rules = write_rules(
        tmp_path / "rules",
        kafka_rule("plain", topic, {"n": "{{ event.value.n }}"})
        + kafka_rule("blocked", topic, {"n": "{{ event.value.n }}"}).replace(
            "namespace: default", "namespace: blocked"
        ),
    )
    records = json_records(60)
    workdir = tmp_path / "d"
    blocker = workdir / "workflows" / "blocked"

    async def scenario() -> tuple[dict[str, int], dict[int, int], dict[int, int], int]:
        await broker.create_topics({topic: 3})
        await produce(broker.bootstrap, topic, records)
        blocker.parent.mkdir(parents=True)
        blocker.write_text("a file where the namespace directory should be")
        daemon = start_daemon(
            workdir, rules, write_config(tmp_path / "c.yaml", broker.bootstrap, group=group)
        )
        try:
            await ready(daemon)
            await poll(
                lambda: asyncio.to_thread(
                    lambda: log_count(daemon, "submit failed, retrying") >= 60
                ),
                "every record retrying its blocked Workflow",
            )
            held = await committed(broker.bootstrap, group, topic, 3)
            blocker.unlink()
            await poll(
                lambda: asyncio.to_thread(lambda: len(daemon.workflow_files()) >= 120),
                "120 workflows",
            )
            await poll(lambda: asyncio.to_thread(idle, daemon, 3), "nothing in flight")
            counts: dict[str, int] = {}
            for labels, value in metric_samples(daemon, "trigger_workflows_total"):
                key = f"{labels['rule']}/{labels['outcome']}"
                counts[key] = counts.get(key, 0) + int(value)
            done = await poll(
                lambda: _all_committed(broker.bootstrap, group, topic), "offsets committed"
            )
            return counts, held, done, len(daemon.workflow_files())
        finally:
            daemon.stop()

    counts, held, done, files = asyncio.run(scenario())
    assert files == 120
    assert counts.get("plain/created") == 60
    assert counts.get("blocked/created") == 60
    assert counts.get("plain/duplicate", 0) == 0
    assert held == {0: -1, 1: -1, 2: -1}  # nothing committed while every record was unfinished
    assert done == {0: 20, 1: 20, 2: 20}


async def _all_committed(bootstrap: str, group: str, topic: str) -> dict[int, int] | None:
    offsets = await committed(bootstrap, group, topic, 3)
    return offsets if offsets == {0: 20, 1: 20, 2: 20} else None
