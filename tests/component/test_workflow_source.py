"""The `workflow` source (chaining) against the Kubernetes API emulator over real HTTP.

Each test builds the daemon's parts as `trigger run` does — Pipeline, Submitter, the
kubernetes sink and a state store — runs `WorkflowSource`, ends upstream Workflows the way
Argo's controller does (`KubeEmulator.finish_workflow`) and polls the emulator for the
chained Workflows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import WorkflowChecker
from trigger.clock import SystemClock
from trigger.core.metrics import Metrics
from trigger.core.pipeline import Pipeline
from trigger.core.state import ConfigMapStateStore, FileStateStore, StateStore
from trigger.events import ANNOTATION_EVENT_ID
from trigger.rules.loader import load_rules
from trigger.sources.base import SourceContext
from trigger.sources.workflow.source import WorkflowSource
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink
from trigger.submit.submitter import Submitter
from trigger.testing.kubeapi import KubeEmulator

G, V, WF = "argoproj.io", "v1alpha1", "workflows"
DEADLINE = 10.0

CHAIN = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: report-after-load}
spec:
  source:
    workflow: {namespace: data, templates: [load], phases: [Succeeded]}
  workflow:
    template: report
    namespace: data
    parameters:
      table: "{{ event.outputs.table }}"
      day: "{{ event.parameters.day }}"
      upstream: "{{ event.name }}"
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: alert-on-failure}
spec:
  source:
    workflow: {namespace: data, phases: [Failed, Error]}
  workflow:
    template: alert
    namespace: data
    parameters:
      failed: "{{ event.name }}"
      why: "{{ event.message }}"
"""


def upstream(name: str, template: str = "load", day: str = "2025-06-01") -> dict[str, Any]:
    """A Workflow as trigger creates it: from a template, with the event id annotation."""
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "Workflow",
        "metadata": {
            "name": name,
            "namespace": "data",
            "labels": {"trigger.dev/rule": "nightly-load"},
            "annotations": {ANNOTATION_EVENT_ID: f"nightly@{day}"},
        },
        "spec": {
            "workflowTemplateRef": {"name": template},
            "arguments": {"parameters": [{"name": "day", "value": day}]},
        },
    }


async def until(condition: Callable[[], Any], what: str) -> None:
    """Poll `condition` until it holds; fail after DEADLINE seconds."""
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Harness:
    """The parts `trigger run` builds, around one WorkflowSource."""

    tmp: Path
    kube: KubeEmulator
    sink: KubernetesSink
    state: StateStore
    metrics: Metrics = field(default_factory=Metrics)
    source: WorkflowSource | None = None
    task: asyncio.Task[None] | None = None

    async def start(self, rules: str = CHAIN, **options: Any) -> WorkflowSource:
        path = self.tmp / "rules.yaml"
        path.write_text(rules)
        ruleset = load_rules([path])
        clock = SystemClock()
        dead = FileDeadLetterSink(self.tmp / "dead.jsonl")
        pipeline = Pipeline(ruleset, Submitter(self.sink, dead, clock), dead, self.metrics, clock)
        ctx = SourceContext(pipeline, self.metrics, clock, self.sink, self.state, None)
        options.setdefault("backoff_initial", 0.05)
        # Once the watch is asked for, every later change reaches it: it replays from the
        # version it names.
        watches = self.kube.count(method="GET", path_contains="watch=")
        self.source = WorkflowSource(ctx, **options)
        self.task = asyncio.create_task(self.source.run())
        await until(
            lambda: self.kube.count(method="GET", path_contains="watch=") > watches,
            "the source to watch",
        )
        return self.source

    async def stop(self) -> None:
        if self.source is not None and self.task is not None:
            await asyncio.wait_for(self.source.stop(DEADLINE), DEADLINE)
            await asyncio.wait_for(self.task, DEADLINE)
            self.source = self.task = None

    def chained(self, template: str) -> list[dict[str, Any]]:
        return [
            w
            for w in self.kube.objects(G, V, WF, "data")
            if w["spec"].get("workflowTemplateRef", {}).get("name") == template
        ]

    async def watermark(self) -> str:
        value = await self.state.get("workflow/ns.data")
        assert value is not None
        return str(value["resourceVersion"])


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(namespaces=["default", "data"], bookmark_interval=0.2) as emulator:
        yield emulator


@pytest.fixture
async def kube_sink(kube: KubeEmulator) -> AsyncIterator[KubernetesSink]:
    sink = await KubernetesSink.connect(KubernetesOptions(server=kube.url, token="t"))
    yield sink
    await sink.close()


@pytest.fixture
async def harness(
    tmp_path: Path, kube: KubeEmulator, kube_sink: KubernetesSink
) -> AsyncIterator[Harness]:
    state = await FileStateStore.open(tmp_path / "state.json")
    made = Harness(tmp_path, kube, kube_sink, state)
    yield made
    await made.stop()


def params(workflow: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}


async def test_success_chains_exactly_one_workflow(
    harness: Harness, valid_workflow: WorkflowChecker
) -> None:
    """A load that succeeds creates one report, with its outputs and arguments as parameters."""
    await harness.start()
    harness.kube.put_object(G, V, WF, upstream("load-1"))
    harness.kube.finish_workflow("load-1", "Succeeded", namespace="data", outputs={"table": "t1"})
    await until(lambda: harness.chained("report"), "the chained report")
    # The controller touches the finished Workflow again (a label): nothing more fires.
    again = harness.kube.get_object(G, V, WF, "load-1", "data")
    assert again is not None
    again["metadata"]["labels"]["archived"] = "true"
    harness.kube.put_object(G, V, WF, again)
    await harness.stop()
    (report,) = harness.chained("report")
    assert params(report) == {"table": "t1", "day": "2025-06-01", "upstream": "load-1"}
    assert harness.chained("alert") == []
    assert report["metadata"]["annotations"][ANNOTATION_EVENT_ID].endswith(":Succeeded")
    valid_workflow({k: v for k, v in report.items() if k != "status"})


async def test_failure_fires_the_alert_not_the_next_stage(harness: Harness) -> None:
    """A load that fails fires the alert rule and never the report."""
    await harness.start()
    harness.kube.put_object(G, V, WF, upstream("load-2"))
    harness.kube.finish_workflow("load-2", "Failed", namespace="data", message="OOMKilled")
    await until(lambda: harness.chained("alert"), "the alert")
    await harness.stop()
    (alert,) = harness.chained("alert")
    assert params(alert) == {"failed": "load-2", "why": "OOMKilled"}
    assert harness.chained("report") == []


async def test_running_and_other_templates_do_not_fire(harness: Harness) -> None:
    """Only finished Workflows of the named templates fire; a running one does not."""
    await harness.start()
    harness.kube.put_object(G, V, WF, upstream("other-1", template="other"))
    harness.kube.finish_workflow("other-1", "Succeeded", namespace="data")
    harness.kube.put_object(G, V, WF, upstream("load-3"))
    harness.kube.set_status(G, V, WF, "load-3", {"phase": "Running"}, namespace="data")
    marker = upstream("load-4")
    harness.kube.put_object(G, V, WF, marker)
    harness.kube.finish_workflow("load-4", "Succeeded", namespace="data", outputs={"table": "x"})
    await until(lambda: harness.chained("report"), "the report for load-4")
    await harness.stop()
    assert [params(w)["upstream"] for w in harness.chained("report")] == ["load-4"]


async def test_completion_while_down_fires_after_restart(harness: Harness) -> None:
    """A Workflow that finishes while the daemon is down fires once it runs again."""
    await harness.start()
    harness.kube.put_object(G, V, WF, upstream("load-5"))
    await harness.stop()
    harness.kube.finish_workflow("load-5", "Succeeded", namespace="data", outputs={"table": "t"})
    await harness.start()
    await until(lambda: harness.chained("report"), "the report after the restart")
    await harness.stop()
    await harness.start()  # and a second restart does not fire it again
    await harness.stop()
    assert len(harness.chained("report")) == 1


async def test_expired_watermark_relists_and_fires_once(harness: Harness) -> None:
    """After 410 Gone the scope is listed again: what finished meanwhile fires, once."""
    await harness.start()
    harness.kube.put_object(G, V, WF, upstream("load-6"))
    harness.kube.put_object(G, V, WF, upstream("load-7"))
    harness.kube.finish_workflow("load-6", "Succeeded", namespace="data", outputs={"table": "a"})
    await until(lambda: len(harness.chained("report")) == 1, "the first report")
    await harness.stop()
    harness.kube.finish_workflow("load-7", "Succeeded", namespace="data", outputs={"table": "b"})
    harness.kube.compact()
    await harness.start()
    await until(lambda: len(harness.chained("report")) == 2, "the report after the re-list")
    await harness.stop()
    restarts = harness.metrics.registry.get_sample_value(
        "trigger_workflow_watch_restarts_total", {"reason": "gone"}
    )
    assert restarts == 1
    assert sorted(params(w)["table"] for w in harness.chained("report")) == ["a", "b"]


async def test_gone_on_an_open_watch_relists(harness: Harness) -> None:
    """A 410 answered to a watch request (not only on replay) makes the scope list again."""
    await harness.start()
    harness.kube.inject(410, count=1, method="GET", path_contains="watch=")
    harness.kube.put_object(G, V, WF, upstream("load-8"))
    harness.kube.finish_workflow("load-8", "Succeeded", namespace="data", outputs={"table": "c"})
    await until(lambda: harness.chained("report"), "the report")
    await harness.stop()
    assert len(harness.chained("report")) == 1


async def test_first_start_does_not_fire_what_finished_before(harness: Harness) -> None:
    """A scope seen for the first time starts from now: older completions do not fire."""
    harness.kube.put_object(G, V, WF, upstream("old-1"))
    harness.kube.finish_workflow("old-1", "Succeeded", namespace="data", outputs={"table": "o"})
    await harness.start()
    harness.kube.put_object(G, V, WF, upstream("load-9"))
    harness.kube.finish_workflow("load-9", "Succeeded", namespace="data", outputs={"table": "n"})
    await until(lambda: harness.chained("report"), "the report")
    await harness.stop()
    assert [params(w)["upstream"] for w in harness.chained("report")] == ["load-9"]


async def test_watermark_in_a_configmap_survives_a_restart(
    tmp_path: Path, kube: KubeEmulator, kube_sink: KubernetesSink
) -> None:
    """With the ConfigMap state store the watermark lives in the cluster across restarts."""
    state = ConfigMapStateStore(kube_sink.api_client, "default", "trigger-state")
    harness = Harness(tmp_path, kube, kube_sink, state)
    await harness.start()
    kube.put_object(G, V, WF, upstream("load-10"))
    await harness.stop()
    kube.finish_workflow("load-10", "Succeeded", namespace="data", outputs={"table": "t"})
    await harness.start()
    await until(lambda: harness.chained("report"), "the report")
    await harness.stop()
    assert len(harness.chained("report")) == 1
    assert int(await harness.watermark()) >= 1


async def test_api_outage_is_retried(harness: Harness) -> None:
    """Failing watch requests are retried with backoff; the completion still fires once."""
    await harness.start()
    harness.kube.inject(500, count=3, method="GET", path_contains="watch=")
    harness.kube.put_object(G, V, WF, upstream("load-11"))
    harness.kube.finish_workflow("load-11", "Succeeded", namespace="data", outputs={"table": "t"})
    await until(lambda: harness.chained("report"), "the report")
    await harness.stop()
    assert len(harness.chained("report")) == 1


def test_rules_in_yaml_are_valid(tmp_path: Path) -> None:
    """The chain rules of these tests load (the shape the README documents)."""
    path = tmp_path / "rules.yaml"
    path.write_text(CHAIN)
    assert [r.name for r in load_rules([path]).rules] == ["report-after-load", "alert-on-failure"]
    assert yaml.safe_load_all(CHAIN)


async def test_a_workflow_with_a_large_status_fires(harness: Harness) -> None:
    """A finished Workflow with a large status (a watch event of ~400 KB) still fires."""
    await harness.start()
    big = upstream("load-12")
    nodes = {f"load-12-{i}": {"id": f"load-12-{i}", "message": "x" * 900} for i in range(400)}
    big["status"] = {"phase": "Running", "nodes": nodes}
    harness.kube.put_object(G, V, WF, big)
    harness.kube.finish_workflow("load-12", "Succeeded", namespace="data", outputs={"table": "t"})
    await until(lambda: harness.chained("report"), "the report")
    await harness.stop()
    assert len(harness.chained("report")) == 1
