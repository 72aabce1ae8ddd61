"""Singleton sources follow leadership: they run while leading and end the moment it is lost.

The daemon's parts (SourceManager, Supervisor, Pipeline, Submitter, the kubernetes sink and
the ConfigMap state store against the API emulator) run the real cron source on a
VirtualClock; a test switches leadership on and off by hand.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from trigger.events import format_time
from trigger.rules.loader import load_rules
from trigger.runtime.leader import LocalLeader
from trigger.runtime.metrics import Metrics
from trigger.runtime.pipeline import Pipeline
from trigger.runtime.sources import SourceManager
from trigger.runtime.state import ConfigMapStateStore
from trigger.runtime.supervisor import Supervisor
from trigger.sources.base import SourceContext
from trigger.submit.clock import VirtualClock
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink
from trigger.submit.submitter import Submitter
from trigger.testing.kubeapi import KubeEmulator

START = datetime(2025, 6, 1, 0, 0, tzinfo=UTC)
DEADLINE = 10.0  # seconds of real time before a wait fails the test
SHUTDOWN = 25.0  # the drain deadline a graceful stop would be given
RULE = {
    "apiVersion": "trigger/v1",
    "kind": "Rule",
    "metadata": {"name": "tick"},
    "spec": {
        "source": {"cron": {"schedules": ["*/15 * * * *"]}},
        "workflow": {"template": "report", "namespace": "default", "generateName": "tick-"},
    },
}


async def until(condition: Callable[[], Any], what: str) -> None:
    """Poll `condition` (real time) until it holds; fail after DEADLINE seconds."""
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


class Switch(LocalLeader):
    """A leadership the test turns on and off."""

    def turn(self, leader: bool) -> None:
        self._set(leader)


@dataclass
class Replica:
    """One replica's singleton machinery around a cron rule, against the emulator."""

    kube: KubeEmulator
    clock: VirtualClock
    manager: SourceManager
    state: ConfigMapStateStore
    leadership: Switch

    def writes_since(self, mark: int) -> list[tuple[str, str]]:
        """Creates of Workflows and writes of the state ConfigMap after request `mark`."""
        return [
            (method, path)
            for method, path, _ in self.kube.requests[mark:]
            if method != "GET" and ("/workflows" in path or "/configmaps" in path)
        ]


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[Replica]:
    clock = VirtualClock(START)
    async with KubeEmulator(namespaces=["default"]) as kube:
        sink = await KubernetesSink.connect(KubernetesOptions(server=kube.url, token="t"))
        state = ConfigMapStateStore(sink.api_client, "default", "trigger-state", clock=clock)
        await state.put("cron/tick", {"scheduledTime": format_time(START)})
        rules_file = tmp_path / "rules.yaml"
        rules_file.write_text(yaml.safe_dump(RULE))
        rules = load_rules([rules_file])
        dead = FileDeadLetterSink(tmp_path / "dead.jsonl")
        metrics = Metrics()
        pipeline = Pipeline(rules, Submitter(sink, dead, clock), dead, metrics, clock)
        context = SourceContext(pipeline, metrics, clock, sink, state, None)
        supervisor = Supervisor(clock, metrics)
        leadership = Switch()
        leadership.turn(False)
        manager = SourceManager(context, supervisor, leader=False)
        following = asyncio.create_task(manager.follow(leadership, SHUTDOWN))
        try:
            yield Replica(kube, clock, manager, state, leadership)
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
            await manager.stop_all(DEADLINE)
            await supervisor.stop()
            await sink.close()


async def test_lost_leadership_cancels_a_blocked_cron_tick(replica: Replica) -> None:
    """A cron tick blocked in its create is cancelled, not drained, when leadership is lost:
    no submission and no watermark write happens after `leading` is cleared."""
    held = replica.kube.delay(math.inf, count=10, method="POST", path_contains="/workflows")
    replica.leadership.turn(True)
    await until(lambda: replica.clock.sleeping == 1, "the cron rule to wait for its tick")
    await replica.clock.advance(15 * 60)
    await until(lambda: held.held == 1, "the tick's create to be held")
    replica.leadership.turn(False)
    mark = len(replica.kube.requests)
    await until(lambda: not replica.manager.supervisor.running("source:"), "the cron source to end")
    assert held.held == 1  # ended while its create still waited: cancelled, not drained
    held.release()
    await until(lambda: held.held == 0, "the held create to be answered")
    await replica.clock.advance(3600)  # later ticks would fire now, were anything left
    assert replica.writes_since(mark) == []
    assert await replica.state.get("cron/tick") == {"scheduledTime": format_time(START)}
    assert replica.manager.running == {}


async def test_regained_leadership_restarts_the_singletons(replica: Replica) -> None:
    """After losing and regaining leadership the cron source runs again and fires its tick."""
    replica.leadership.turn(True)
    await until(lambda: replica.clock.sleeping == 1, "the cron rule to wait for its tick")
    replica.leadership.turn(False)
    await until(lambda: not replica.manager.running, "the cron source to end")
    replica.leadership.turn(True)
    await until(lambda: replica.clock.sleeping == 1, "the cron rule to wait again")
    await replica.clock.advance(15 * 60 + 1)
    tick = format_time(START + timedelta(minutes=15))
    await until(
        lambda: len(replica.kube.objects("argoproj.io", "v1alpha1", "workflows")) == 1,
        "the tick's Workflow",
    )
    await until(lambda: replica.clock.sleeping == 1, "the cron rule to wait for the next tick")
    assert await replica.state.get("cron/tick") == {"scheduledTime": tick}
