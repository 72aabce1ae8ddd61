"""Gates through the pipeline: file state, local sink, restarts, timeouts, acknowledgement."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from trigger.clock import VirtualClock
from trigger.core.gatekeeper import GateKeeper
from trigger.core.metrics import Metrics
from trigger.core.pipeline import MetricsHooks, Pipeline
from trigger.core.state import FileStateStore, StateError, Value
from trigger.decoders.oss import decode_eventbridge
from trigger.errors import TemporarySubmitError
from trigger.events import Event
from trigger.rules.loader import load_rules
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.local import LocalSink
from trigger.submit.submitter import Submitter

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
        metrics = Metrics()
        submitter = Submitter(
            self.sink, self.dead, self.clock, hooks=MetricsHooks(metrics, self.clock)
        )
        self.pipeline = Pipeline(
            load_rules([self.rules]), submitter, self.dead, metrics, self.clock
        )
        self.pipeline.gates = GateKeeper(self.state, submitter, self.dead, self.clock)
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
    async with Daemon(tmp_path, rules, VirtualClock()) as pipeline:
        for event in shuffled:
            await pipeline.handle(event)
        for event in events:  # everything redelivered after the gate fired
            await pipeline.handle(event)
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
