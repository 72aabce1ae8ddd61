"""Gates through the pipeline: file state, local sink, restarts, timeouts, acknowledgement."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from trigger.clock import VirtualClock
from trigger.core.gatekeeper import GateKeeper
from trigger.core.metrics import Metrics
from trigger.core.pipeline import MetricsHooks, Pipeline
from trigger.core.state import ConfigMapStateStore, FileStateStore, StateError, Value
from trigger.decoders.oss import decode_eventbridge
from trigger.errors import TemporarySubmitError
from trigger.events import Event
from trigger.rules.loader import load_rules
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.local import LocalSink
from trigger.submit.submitter import Submitter
from trigger.testing.kubeapi import KubeEmulator

HOURS = 6
RULES = f"""
apiVersion: trigger/v1
kind: Rule
metadata: {{name: nightly-load}}
spec:
  gate:
    key: "{{{{ event.key | dirname }}}}"
    window: 1h
    members:
      hourly:
        source: {{oss: {{bucket: raw, key: {{prefix: sales/}}}}}}
        filter: {{pattern: {{key: [{{suffix: .csv}}]}}}}
        count: {HOURS}
      marker:
        source: {{oss: {{bucket: raw, key: {{prefix: sales/}}}}}}
        filter: {{pattern: {{key: [{{suffix: /_SUCCESS}}]}}}}
  workflow:
    template: nightly-load
    namespace: data
    parameters:
      day: "{{{{ gate.key | basename }}}}"
      files: "{{{{ gate.members.hourly | map(attribute='key') | sort | join(',') }}}}"
"""


def oss(key: str) -> Event:
    """A created object in `raw`; its ETag is its key, so each file is its own content."""
    etag = format(abs(hash(key)), "x").upper()
    return decode_eventbridge(
        {
            "specversion": "1.0",
            "id": f"id-{key}",
            "source": "acs.oss",
            "type": "oss:ObjectCreated:PutObject",
            "time": "2026-12-06T01:00:00Z",
            "aliyunaccountid": "1234567890123456",
            "aliyunregionid": "cn-hangzhou",
            "data": {
                "oss": {"bucket": {"name": "raw"}, "object": {"key": key, "size": 1, "eTag": etag}}
            },
        }
    )[0]


def batch(day: str) -> list[Event]:
    return [oss(f"sales/{day}/{h:02d}.csv") for h in range(HOURS)] + [oss(f"sales/{day}/_SUCCESS")]


class Daemon:
    """The parts of one daemon process that gates use, over files that outlive it."""

    def __init__(self, tmp: Path, rules: Path, clock: VirtualClock) -> None:
        self.tmp, self.rules, self.clock = tmp, rules, clock

    async def __aenter__(self) -> Pipeline:
        self.sink = LocalSink(self.tmp / "workflows")
        self.dead = FileDeadLetterSink(self.tmp / "dead.jsonl")
        self.state = await FileStateStore.open(self.tmp / "state.json")
        self.metrics = metrics = Metrics()
        submitter = Submitter(
            self.sink, self.dead, self.clock, hooks=MetricsHooks(metrics, self.clock)
        )
        self.pipeline = Pipeline(
            load_rules([self.rules]), submitter, self.dead, metrics, self.clock
        )
        self.pipeline.gates = GateKeeper(
            self.state, submitter, self.dead, self.clock, metrics, self.pipeline.record_outcome
        )
        return self.pipeline

    async def __aexit__(self, *exc: Any) -> None:
        await self.state.close()
        await self.sink.close()
        await self.dead.close()


def workflows(tmp: Path) -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted((tmp / "workflows").rglob("*.yaml"))]


def dead_letters(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "dead.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def parameters(workflow: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}


@pytest.fixture
def rules(write_rules: Callable[..., Path]) -> Path:
    return write_rules(RULES)


async def test_batch_in_random_order_with_redeliveries_fires_once(
    tmp_path: Path, rules: Path
) -> None:
    """A batch in random order, with redeliveries, gives one Workflow with every file."""
    events = batch("2026-12-06")
    shuffled = random.Random(7).sample(events + events[:3], len(events) + 3)
    daemon = Daemon(tmp_path, rules, VirtualClock())
    async with daemon as pipeline:
        for event in shuffled:
            await pipeline.handle(event)
        for event in events:  # everything redelivered after the gate fired
            await pipeline.handle(event)
    counts = {
        outcome: daemon.metrics.registry.get_sample_value(
            "trigger_gate_events_total", {"rule": "nightly-load", "outcome": outcome}
        )
        for outcome in ("opened", "added", "duplicate")
    }
    assert counts == {"opened": 1, "added": HOURS, "duplicate": 3 + HOURS + 1}
    sample = daemon.metrics.registry.get_sample_value
    assert sample("trigger_gates_closed_total", {"rule": "nightly-load", "outcome": "fired"}) == 1
    sizes = sample("trigger_gate_state_bytes_count", {"rule": "nightly-load"})
    assert sizes == len(events) * 2 + 3  # one observation per event recorded
    assert sample("trigger_gate_state_bytes_sum", {"rule": "nightly-load"}) > 0
    [workflow] = workflows(tmp_path)
    params = parameters(workflow)
    assert params["day"] == "2026-12-06"
    assert params["files"] == ",".join(f"sales/2026-12-06/{h:02d}.csv" for h in range(HOURS))
    assert workflow["metadata"]["labels"]["trigger.dev/rule"] == "nightly-load"


async def test_restart_between_members_fires_once_with_all(tmp_path: Path, rules: Path) -> None:
    """A daemon restart after each member loses none and still fires exactly once."""
    clock = VirtualClock()
    for event in batch("2026-12-06"):
        async with Daemon(tmp_path, rules, clock) as pipeline:
            await pipeline.handle(event)
    [workflow] = workflows(tmp_path)
    assert len(parameters(workflow)["files"].split(",")) == HOURS


async def test_event_is_recorded_before_handle_returns(tmp_path: Path, rules: Path) -> None:
    """When `handle` returns (the source acknowledges), the event is in the gate's state."""
    async with Daemon(tmp_path, rules, VirtualClock()) as pipeline:
        await pipeline.handle(oss("sales/2026-12-06/03.csv"))
    stored = json.loads((tmp_path / "state.json").read_text())
    [state] = [v for k, v in stored.items() if k.startswith("gate/nightly-load/")]
    assert state["key"] == "sales/2026-12-06"
    assert [e["event"]["key"] for e in state["open"]["members"]["hourly"]] == [
        "sales/2026-12-06/03.csv"
    ]


async def test_two_days_interleaved_never_mix(tmp_path: Path, rules: Path) -> None:
    """Two keys' events interleaved: two Workflows, each with only its own day's files."""
    mixed = [e for pair in zip(batch("2026-12-05"), batch("2026-12-06"), strict=True) for e in pair]
    async with Daemon(tmp_path, rules, VirtualClock()) as pipeline:
        for event in mixed:
            await pipeline.handle(event)
    found = {parameters(w)["day"]: parameters(w)["files"] for w in workflows(tmp_path)}
    assert sorted(found) == ["2026-12-05", "2026-12-06"]
    for day, files in found.items():
        assert all(f.startswith(f"sales/{day}/") for f in files.split(","))


async def test_timeout_dead_letters_what_was_missing(tmp_path: Path, rules: Path) -> None:
    """An incomplete gate seen again after its window is dead-lettered, naming what lacked."""
    clock = VirtualClock()
    async with Daemon(tmp_path, rules, clock) as pipeline:
        for event in batch("2026-12-06")[:2]:
            await pipeline.handle(event)
        clock.step_wall(3601)
        await pipeline.handle(oss("sales/2026-12-06/_SUCCESS"))
    assert workflows(tmp_path) == []
    [letter] = dead_letters(tmp_path)
    assert letter["error"] == "GateTimeout" and letter["rule"] == "nightly-load"
    assert "missing: hourly (4), marker (1)" in letter["message"]


class FailingStore(FileStateStore):
    async def update(self, key: str, fn: Any) -> Value | None:
        raise StateError("etcd is down", temporary=True)


async def test_unrecorded_event_is_not_acknowledged(tmp_path: Path, rules: Path) -> None:
    """A temporary state failure raises TemporarySubmitError: the source must not ack."""
    async with Daemon(tmp_path, rules, VirtualClock()) as pipeline:
        assert pipeline.gates is not None
        pipeline.gates.store = FailingStore(tmp_path / "other.json", {})
        with pytest.raises(TemporarySubmitError, match="etcd is down"):
            await pipeline.handle(oss("sales/2026-12-06/03.csv"))
    assert workflows(tmp_path) == []


@pytest.mark.parametrize(
    ("on_timeout", "fired", "letters"), [("dead-letter", 0, 1), ("fire", 1, 0), ("drop", 0, 0)]
)
async def test_leader_sweep_ends_a_gate_no_event_returns_to(
    tmp_path: Path, write_rules: Callable[..., Path], on_timeout: str, fired: int, letters: int
) -> None:
    """With no further event for its key, the sweep times a gate out per onTimeout, and
    the open-gates gauge and the closed count follow."""
    rules = write_rules(
        RULES.replace("    window: 1h\n", f"    window: 1h\n    onTimeout: {on_timeout}\n")
    )
    clock = VirtualClock()
    async with Daemon(tmp_path, rules, clock) as pipeline:
        assert pipeline.gates is not None
        await pipeline.handle(oss("sales/2026-12-06/00.csv"))
        assert await pipeline.gates.sweep(pipeline.rules) == 1
        assert workflows(tmp_path) == [] and dead_letters(tmp_path) == []
        sample = pipeline.metrics.registry.get_sample_value
        assert sample("trigger_gates_open", {"rule": "nightly-load"}) == 1
        clock.step_wall(3600)
        await pipeline.gates.sweep(pipeline.rules)
        assert sample("trigger_gates_open", {"rule": "nightly-load"}) == 0
        outcome = {"dead-letter": "timeout-dead-letter", "fire": "timeout-fired"}.get(
            on_timeout, "timeout-dropped"
        )
        closed = {"rule": "nightly-load", "outcome": outcome}
        assert sample("trigger_gates_closed_total", closed) == 1
        shown = pipeline.status.get("nightly-load")  # /status of the gate rule
        counts = (shown.created, shown.dead_letters) if shown else (0, 0)
        assert counts == (fired, letters)
        clock.step_wall(3600)  # past the seen ids' lapse too: the key is gone
        await pipeline.gates.sweep(pipeline.rules)
        assert await pipeline.gates.store.keys("gate/") == []
    assert len(workflows(tmp_path)) == fired and len(dead_letters(tmp_path)) == letters
    if fired:
        assert parameters(workflows(tmp_path)[0])["files"] == "sales/2026-12-06/00.csv"


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    emulator = KubeEmulator(namespaces=["trigger"])
    async with emulator:
        yield emulator


async def test_two_replicas_sharing_configmap_state_fire_once(
    tmp_path: Path, rules: Path, kube: KubeEmulator
) -> None:
    """Members spread over two replicas sharing ConfigMap state: one Workflow, all members."""
    clock = VirtualClock()
    clients = [client.ApiClient(configuration=kube.client_configuration()) for _ in range(2)]
    sink = LocalSink(tmp_path / "workflows")
    dead = FileDeadLetterSink(tmp_path / "dead.jsonl")
    replicas = []
    for api_client in clients:
        submitter = Submitter(sink, dead, clock)
        pipeline = Pipeline(load_rules([rules]), submitter, dead, Metrics(), clock)
        store = ConfigMapStateStore(api_client, "trigger", "trigger-state", clock=clock)
        pipeline.gates = GateKeeper(store, submitter, dead, clock)
        replicas.append(pipeline)
    try:
        events = batch("2026-12-06")
        for index, event in enumerate(events + events):  # each also redelivered to the other
            await replicas[index % 2].handle(event)
        stored = await replicas[0].gates.store.keys("gate/nightly-load/")  # type: ignore[union-attr]
        assert len(stored) == 1
    finally:
        for api_client in clients:
            await api_client.close()
        await sink.close()
        await dead.close()
    [workflow] = workflows(tmp_path)
    assert len(parameters(workflow)["files"].split(",")) == HOURS


async def test_configmap_state_refuses_a_gate_over_the_limit(
    tmp_path: Path, rules: Path, kube: KubeEmulator
) -> None:
    """A gate whose state would pass the per-key limit dead-letters the event that would."""
    clock = VirtualClock()
    api_client = client.ApiClient(configuration=kube.client_configuration())
    sink = LocalSink(tmp_path / "workflows")
    dead = FileDeadLetterSink(tmp_path / "dead.jsonl")
    submitter = Submitter(sink, dead, clock)
    pipeline = Pipeline(load_rules([rules]), submitter, dead, Metrics(), clock)
    store = ConfigMapStateStore(api_client, "trigger", "trigger-state", clock=clock, max_bytes=4000)
    pipeline.gates = GateKeeper(store, submitter, dead, clock)
    try:
        for event in batch("2026-12-06"):
            await pipeline.handle(event)
    finally:
        await api_client.close()
        await sink.close()
        await dead.close()
    letters = dead_letters(tmp_path)
    assert letters and {letter["error"] for letter in letters} == {"GateStateTooLarge"}
    assert "over the 4000-byte limit" in letters[0]["message"]
    assert workflows(tmp_path) == []


async def test_reload_changing_members_while_a_gate_is_open(
    tmp_path: Path, rules: Path, write_rules: Callable[..., Path]
) -> None:
    """A reload renames `marker` (suffix /_SUCCESS) to `done` (/_DONE) while a day's gate is
    open: the files recorded before stay, the old marker's event is dropped, and the gate
    fires once with every file when `done` arrives."""
    renamed = write_rules(
        RULES.replace("      marker:\n", "      done:\n").replace("/_SUCCESS", "/_DONE"),
        "renamed.yaml",
    )
    events = batch("2026-12-06")
    async with Daemon(tmp_path, rules, VirtualClock()) as pipeline:
        for event in events[:3] + events[-1:]:  # three files and the old marker
            await pipeline.handle(event)
        pipeline.swap(load_rules([renamed]))
        for event in events[3:HOURS]:
            await pipeline.handle(event)
        assert workflows(tmp_path) == [] and pipeline.gates is not None
        [key] = await pipeline.gates.store.keys("gate/nightly-load/")
        state = await pipeline.gates.store.get(key)
        assert state is not None
        assert {m: len(es) for m, es in state["open"]["members"].items()} == {"hourly": HOURS, "done": 0}  # fmt: skip
        await pipeline.handle(oss("sales/2026-12-06/_DONE"))
    [workflow] = workflows(tmp_path)
    assert parameters(workflow)["files"] == ",".join(e.fields["key"] for e in events[:HOURS])


async def test_decision_records_say_gated_then_name_the_gate_workflow(
    tmp_path: Path, rules: Path
) -> None:
    """Each member event's decision record says `gated` for its member, with the gate's key
    and what it still lacks after the event (`complete` for the one that completed it);
    that event also names the gate rule's created Workflow (issue 17's records)."""
    events = batch("2026-12-06")
    async with Daemon(tmp_path, rules, VirtualClock()) as pipeline:
        for event in events:
            await pipeline.handle(event)
        records = {d.id: d.summary()["rules"] for d in pipeline.decisions._ring}
    [workflow] = workflows(tmp_path)
    gate = "gate nightly-load key sales/2026-12-06"
    for hour, event in enumerate(events[:-1]):
        left = HOURS - hour - 1
        lacking = f"hourly ({left}), marker (1)" if left else "marker (1)"
        assert records[event.id] == [
            {"rule": "nightly-load.marker", "outcome": "filtered", "detail": None},
            {"rule": "nightly-load.hourly", "outcome": "gated", "detail": f"{gate}: missing {lacking}"},
        ]  # fmt: skip
    assert records[events[-1].id] == [
        {"rule": "nightly-load.hourly", "outcome": "filtered", "detail": None},
        {"rule": "nightly-load.marker", "outcome": "gated", "detail": f"{gate}: complete"},
        {"rule": "nightly-load", "outcome": "created", "detail": workflow["metadata"]["name"]},
    ]
