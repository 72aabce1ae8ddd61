"""Singleton sources follow leadership: they run while leading and end the moment it is lost.

The daemon's parts (SourceManager, Supervisor, Pipeline, Submitter, the kubernetes sink and
the ConfigMap state store against the API emulator) run the real cron source and OSS
poller (against the OSS server emulator) on a VirtualClock; a test switches leadership on
and off by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from trigger.clock import VirtualClock
from trigger.core.metrics import Metrics
from trigger.core.pipeline import Pipeline
from trigger.core.state import ANNOTATION_KEY, DATA_KEY, LABEL_STORE, ConfigMapStateStore
from trigger.daemon.leader import LocalLeader
from trigger.daemon.sources import SourceManager
from trigger.daemon.supervisor import Supervisor
from trigger.events import format_time
from trigger.rules.loader import load_rules
from trigger.settings import Settings
from trigger.sources.base import SourceContext
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink
from trigger.submit.submitter import Submitter
from trigger.testing.kubeapi import KubeEmulator
from trigger.testing.ossserver import OssServer

START = datetime(2025, 6, 1, 0, 0, tzinfo=UTC)
DEADLINE = 10.0  # seconds of real time before a wait fails the test
SHUTDOWN = 25.0  # the drain deadline a graceful stop would be given
AK, SK, BUCKET = "AKIDTEST", "SKTEST", "raw-data"
WORKFLOW = {"template": "report", "namespace": "default", "generateName": "made-"}


def rule(name: str, source: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "trigger/v1",
        "kind": "Rule",
        "metadata": {"name": name},
        "spec": {"source": source, "workflow": WORKFLOW},
    }


def cron_rule() -> dict[str, Any]:
    return rule("tick", {"cron": {"schedules": ["*/15 * * * *"]}})


def poll_rule(endpoint: str) -> dict[str, Any]:
    poll = {
        "endpoint": endpoint,
        "region": "cn-hangzhou",
        "existing": "fire",
        "credentials": {"accessKeyIdEnv": "OSS_AK", "accessKeySecretEnv": "OSS_SK"},
    }
    return rule("poll-in", {"oss": {"bucket": BUCKET, "key": {"prefix": "in/"}, "poll": poll}})


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
    """One replica's singleton machinery: the parts `trigger run` builds, on the emulator."""

    kube: KubeEmulator
    oss: OssServer
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

    def workflows(self) -> list[dict[str, Any]]:
        return self.kube.objects("argoproj.io", "v1alpha1", "workflows")

    def stored(self) -> dict[str, str]:
        """Every watermark and checkpoint, by key, as the state ConfigMaps hold them."""
        found = {
            cm["metadata"]["annotations"][ANNOTATION_KEY]: (cm.get("data") or {}).get(DATA_KEY)
            for cm in self.kube.objects("", "v1", "configmaps", "default")
            if (cm["metadata"].get("labels") or {}).get(LABEL_STORE)
        }
        assert found, "no state stored yet"
        return found


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[Replica]:
    """A follower with a cron rule (watermark at START) and an OSS poll rule (three old
    objects waiting); nothing runs until the test turns leadership on."""
    clock = VirtualClock(START)
    async with contextlib.AsyncExitStack() as stack:
        kube = await stack.enter_async_context(KubeEmulator(namespaces=["default"]))
        oss = await stack.enter_async_context(OssServer([BUCKET], credentials={AK: SK}))
        for i in range(3):
            oss.put_object(BUCKET, f"in/{i}.csv", b"row\n", last_modified=START)
        sink = await KubernetesSink.connect(KubernetesOptions(server=kube.url, token="t"))
        stack.push_async_callback(sink.close)
        state = ConfigMapStateStore(sink.api_client, "default", "trigger-state", clock=clock)
        await state.put("cron/tick", {"scheduledTime": format_time(START)})
        rules_file = tmp_path / "rules.yaml"
        rules_file.write_text(yaml.safe_dump_all([cron_rule(), poll_rule(oss.endpoint)]))
        rules = load_rules([rules_file])
        dead = FileDeadLetterSink(tmp_path / "dead.jsonl")
        metrics = Metrics()
        pipeline = Pipeline(rules, Submitter(sink, dead, clock), dead, metrics, clock)
        settings = Settings()
        environ = {"OSS_AK": AK, "OSS_SK": SK}
        context = SourceContext(pipeline, metrics, clock, sink, state, settings, environ)
        supervisor = Supervisor(clock, metrics)
        leadership = Switch()
        leadership.turn(False)
        manager = SourceManager(context, supervisor, leader=False)
        following = asyncio.create_task(manager.follow(leadership, SHUTDOWN))
        try:
            yield Replica(kube, oss, clock, manager, state, leadership)
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
            await manager.stop_all(DEADLINE)
            await supervisor.stop()


async def test_lost_leadership_cancels_blocked_submissions(replica: Replica) -> None:
    """Cron and the OSS poller, each blocked in a create, are cancelled, not drained, when
    leadership is lost: no submission and no watermark or checkpoint write follows."""
    held = replica.kube.delay(math.inf, count=100, method="POST", path_contains="/workflows")
    replica.leadership.turn(True)
    await until(lambda: held.held == 3, "the poller's creates to be held")
    await until(lambda: replica.clock.sleeping, "the cron rule to wait for its tick")
    await replica.clock.advance(15 * 60)
    await until(lambda: held.held == 4, "the tick's create to be held")
    stored = replica.stored()
    replica.leadership.turn(False)
    mark = len(replica.kube.requests)
    await until(lambda: not replica.manager.supervisor.running("source:"), "the sources to end")
    assert held.held == 4  # they ended while their creates still waited: not drained
    held.release()
    await until(lambda: held.held == 0, "the held creates to be answered")
    await replica.clock.advance(3600)  # later ticks and scans would run now, were any left
    assert replica.writes_since(mark) == []
    assert replica.stored() == stored
    assert replica.manager.running == {}


async def test_regained_leadership_restarts_the_singletons(replica: Replica) -> None:
    """After losing and regaining leadership the singleton sources run again: the cron
    rule fires its tick and the poller its objects, each once."""
    replica.leadership.turn(True)
    await until(lambda: replica.manager.running, "the sources to start")
    replica.leadership.turn(False)
    await until(lambda: not replica.manager.running, "the sources to end")
    replica.leadership.turn(True)
    await until(lambda: len(replica.workflows()) == 3, "the poller's Workflows")
    await until(lambda: replica.clock.sleeping, "the cron rule to wait for its tick")
    await replica.clock.advance(15 * 60 + 1)
    await until(lambda: len(replica.workflows()) == 4, "the tick's Workflow")
    tick = format_time(START + timedelta(minutes=15))
    await until(lambda: replica.clock.sleeping >= 2, "the sources to wait again")
    assert await replica.state.get("cron/tick") == {"scheduledTime": tick}
