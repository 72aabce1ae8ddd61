"""Two daemons against the Kubernetes API emulator: one leader, and a prompt takeover."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.daemon import DaemonProcess, until
from trigger.testing.kubeapi import KubeEmulator

RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: hook}
spec:
  source: {webhook: {path: /hooks/a, auth: {bearerTokenEnv: HOOK_TOKEN}}}
  workflow: {template: build, namespace: default}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: tick}
spec:
  source: {cron: {schedules: ["* * * * * *"], catchUp: none}}
  workflow: {template: build, namespace: default}
"""
LEASE_ENV = {
    "HOOK_TOKEN": "tok",
    "TRIGGER_LEADER__ENABLED": "true",
    "TRIGGER_LEADER__LEASE_DURATION": "3s",
    "TRIGGER_LEADER__RENEW_DEADLINE": "2s",
    "TRIGGER_LEADER__RETRY_PERIOD": "500ms",
    "TRIGGER_SUBMIT__CHECK_TEMPLATES": "false",
}


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(namespaces=["default"]) as emulator:
        yield emulator


def daemon(tmp: Path, kubeconfig: Path, name: str) -> DaemonProcess:
    workdir = tmp / name
    (workdir / "rules").mkdir(parents=True)
    (workdir / "rules" / "r.yaml").write_text(RULE)
    env = {**LEASE_ENV, "KUBECONFIG": str(kubeconfig), "HOSTNAME": name}
    return DaemonProcess(workdir, workdir / "rules", env=env, extra_args=["--sink", "kubernetes"])


def cron_outcomes(d: DaemonProcess) -> float:
    """Created + duplicate Workflows of the cron rule, from the daemon's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(d.get("/metrics").body.decode()):
        for sample in family.samples:
            if sample.name == "trigger_workflows_total" and sample.labels.get("rule") == "tick":
                total += sample.value
    return total


def leading(d: DaemonProcess) -> bool:
    response = d.get("/status")
    return response.status == 200 and bool(response.json()["leader"])


async def test_one_leader_and_takeover(tmp_path: Path, kube: KubeEmulator) -> None:
    """Exactly one of two daemons leads; after it is killed the other leads within the lease."""
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
    first, second = daemon(tmp_path, kubeconfig, "one"), daemon(tmp_path, kubeconfig, "two")
    try:
        for d in (first, second):
            d.start(ready=False)
        for d in (first, second):
            await asyncio.to_thread(d.wait_ready)
        await until(lambda: leading(first) or leading(second), what="a leader")
        states = [await asyncio.to_thread(leading, d) for d in (first, second)]
        assert states.count(True) == 1
        leader, follower = (first, second) if states[0] else (second, first)
        (lease,) = kube.objects("coordination.k8s.io", "v1", "leases", "default")
        assert lease["spec"]["holderIdentity"]
        # Only the leader runs the cron source: it fires, the follower fires nothing.
        await until(lambda: cron_outcomes(leader) >= 2, what="leader's cron ticks")
        assert await asyncio.to_thread(cron_outcomes, follower) == 0
        leader.stop()  # SIGKILL: no release, the follower must wait for expiry
        await until(lambda: leading(follower), timeout=20, what="takeover")
        await until(lambda: cron_outcomes(follower) >= 1, what="cron ticks after takeover")
        (lease,) = kube.objects("coordination.k8s.io", "v1", "leases", "default")
        assert lease["spec"]["leaseTransitions"] >= 1
        assert (
            await asyncio.to_thread(
                lambda: follower.get("/metrics").body.count(b"trigger_leader 1.0")
            )
            == 1
        )
    finally:
        first.stop()
        second.stop()


async def test_graceful_stop_releases_the_lease(tmp_path: Path, kube: KubeEmulator) -> None:
    """A leader stopped with SIGTERM releases its Lease, so the other takes over at once, and
    logs no warning while it stops."""
    import signal

    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
    first = daemon(tmp_path, kubeconfig, "one")
    second = daemon(tmp_path, kubeconfig, "two")
    try:
        first.start(ready=False)
        await asyncio.to_thread(first.wait_ready)
        await until(lambda: leading(first), what="first leads")
        (lease,) = kube.objects("coordination.k8s.io", "v1", "leases", "default")
        first_identity = lease["spec"]["holderIdentity"]
        second.start(ready=False)
        await asyncio.to_thread(second.wait_ready)
        assert not await asyncio.to_thread(leading, second), second.log()
        first.signal(signal.SIGTERM)
        assert await asyncio.to_thread(first.wait) == 0, first.log()
        (lease,) = kube.objects("coordination.k8s.io", "v1", "leases", "default")
        # Released (or already taken by the other daemon): no longer held by the first.
        assert lease["spec"].get("holderIdentity") != first_identity, (lease, first.log())
        # A clean stop, also of a leader with the kubernetes sink, warns about nothing.
        events = first.log_events()
        stopping = next(i for i, e in enumerate(events) if e["event"].startswith("stopping"))
        assert [e for e in events[stopping:] if e["level"] not in ("info", "debug")] == []
        assert events[-1]["event"] == "stopped cleanly"
        await until(lambda: leading(second), timeout=10, what="second leads")
    finally:
        first.stop()
        second.stop()
