"""Chains end to end: `trigger run` as a subprocess against the Kubernetes API emulator.

Upstream Workflows are created and ended in the emulator as Argo's controller would; the
daemon (or two of them, electing a leader and sharing ConfigMap state) must create exactly
one downstream Workflow per completion, through SIGKILLs and takeovers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WorkflowChecker
from tests.daemon import DaemonProcess, until
from trigger.events import ANNOTATION_EVENT_ID
from trigger.testing.kubeapi import KubeEmulator

G, V, WF = "argoproj.io", "v1alpha1", "workflows"
RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: report-after-load}
spec:
  source:
    workflow: {namespace: data, templates: [load], phases: [Succeeded]}
  workflow:
    template: report
    namespace: data
    parameters: {table: "{{ event.outputs.table }}"}
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
    parameters: {failed: "{{ event.name }}"}
"""
ENV = {
    "TRIGGER_LEADER__ENABLED": "true",
    "TRIGGER_LEADER__LEASE_DURATION": "3s",
    "TRIGGER_LEADER__RENEW_DEADLINE": "2s",
    "TRIGGER_LEADER__RETRY_PERIOD": "500ms",
    "TRIGGER_SUBMIT__CHECK_TEMPLATES": "false",
}


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(namespaces=["default", "data"], bookmark_interval=0.5) as emulator:
        yield emulator


def daemon(tmp: Path, kube: KubeEmulator, name: str) -> DaemonProcess:
    workdir = tmp / name
    (workdir / "rules").mkdir(parents=True, exist_ok=True)
    (workdir / "rules" / "r.yaml").write_text(RULES)
    kubeconfig = kube.kubeconfig(tmp / "kubeconfig")
    env = {**ENV, "KUBECONFIG": str(kubeconfig), "HOSTNAME": name}
    args = ["--sink", "kubernetes", "--state", "kubernetes:default/trigger-state"]
    return DaemonProcess(workdir, workdir / "rules", env=env, extra_args=args)


def load(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "Workflow",
        "metadata": {
            "name": name,
            "namespace": "data",
            "annotations": {ANNOTATION_EVENT_ID: f"nightly@{name}"},
        },
        "spec": {"workflowTemplateRef": {"name": "load"}},
    }


def chained(kube: KubeEmulator, template: str) -> list[dict[str, Any]]:
    return [
        w
        for w in kube.objects(G, V, WF, "data")
        if w["spec"].get("workflowTemplateRef", {}).get("name") == template
    ]


def upstreams(kube: KubeEmulator, template: str) -> list[str]:
    """The upstream Workflow each chained one was made for, from its event id."""
    return sorted(
        w["metadata"]["annotations"]["trigger.dev/event-subject"] for w in chained(kube, template)
    )


def watching(kube: KubeEmulator, before: int) -> bool:
    return kube.count(method="GET", path_contains="watch=") > before


def leading(d: DaemonProcess) -> bool:
    response = d.get("/status")
    return response.status == 200 and bool(response.json()["leader"])


async def test_restart_between_completion_and_watch(
    tmp_path: Path, kube: KubeEmulator, valid_workflow: WorkflowChecker
) -> None:
    """A completion while the daemon is killed fires once after it restarts; a failure fires
    the alert rule, not the next stage."""
    one = daemon(tmp_path, kube, "one")
    try:
        before = kube.count(method="GET", path_contains="watch=")
        one.start(ready=False)
        await asyncio.to_thread(one.wait_ready)
        await until(lambda: watching(kube, before), what="the daemon to watch")
        kube.put_object(G, V, WF, load("load-a"))
        kube.put_object(G, V, WF, load("load-b"))
        one.stop()  # SIGKILL
        kube.finish_workflow("load-a", "Succeeded", namespace="data", outputs={"table": "t"})
        kube.finish_workflow("load-b", "Failed", namespace="data", message="boom")
        one.start(ready=False)
        await asyncio.to_thread(one.wait_ready)
        await until(lambda: chained(kube, "report") and chained(kube, "alert"), what="chains")
        assert upstreams(kube, "report") == ["data/load-a"]
        assert upstreams(kube, "alert") == ["data/load-b"]
        for workflow in chained(kube, "report") + chained(kube, "alert"):
            valid_workflow({k: v for k, v in workflow.items() if k != "status"})
    finally:
        one.stop()


async def test_two_replicas_chain_once_through_a_takeover(
    tmp_path: Path, kube: KubeEmulator
) -> None:
    """Two replicas sharing ConfigMap state: each completion makes one Workflow, also when
    the leader is killed and the other takes over."""
    first, second = daemon(tmp_path, kube, "one"), daemon(tmp_path, kube, "two")
    try:
        before = kube.count(method="GET", path_contains="watch=")
        for d in (first, second):
            d.start(ready=False)
        for d in (first, second):
            await asyncio.to_thread(d.wait_ready)
        await until(lambda: watching(kube, before), what="the leader to watch")
        for name in ("load-1", "load-2"):
            kube.put_object(G, V, WF, load(name))
            kube.finish_workflow(name, "Succeeded", namespace="data", outputs={"table": name})
        await until(lambda: len(chained(kube, "report")) == 2, what="two reports")
        states = [await asyncio.to_thread(leading, d) for d in (first, second)]
        assert states.count(True) == 1
        leader, follower = (first, second) if states[0] else (second, first)
        leader.stop()  # SIGKILL: the follower takes over after the lease expires
        kube.put_object(G, V, WF, load("load-3"))
        kube.finish_workflow("load-3", "Succeeded", namespace="data", outputs={"table": "3"})
        await until(lambda: leading(follower), timeout=20, what="takeover")
        await until(lambda: len(chained(kube, "report")) == 3, what="the third report")
        follower.signal(15)
        assert await asyncio.to_thread(follower.wait) == 0
        assert upstreams(kube, "report") == ["data/load-1", "data/load-2", "data/load-3"]
    finally:
        first.stop()
        second.stop()
