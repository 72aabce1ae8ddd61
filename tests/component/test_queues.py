"""Queues against the Kubernetes API emulator, over kubernetes-asyncio: the semaphore
ConfigMaps the keeper writes, what it leaves to others, its retries, and the counts that
`trigger queues` and /status show."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from tests.daemon import DaemonProcess, until
from trigger.clock import SystemClock
from trigger.core.metrics import Metrics
from trigger.core.queues import ANNOTATION_OWNED, SemaphoreConfigMaps, declared_limits
from trigger.daemon.leader import LocalLeader
from trigger.daemon.queues import QueueKeeper
from trigger.rules.loader import load_rules
from trigger.rules.queue import LABEL_QUEUE, QUEUE_CONFIGMAP
from trigger.rules.router import RuleSet
from trigger.testing.kubeapi import KubeEmulator

NAMESPACES = ["default", "data", "reports"]
CONFIGMAPS = ("", "v1", "configmaps")
WORKFLOWS = ("argoproj.io", "v1alpha1", "workflows")


def queue(name: str, limit: int, namespaces: list[str] | None = None) -> str:
    spread = f"\n  namespaces: [{', '.join(namespaces)}]" if namespaces else ""
    return (
        f"apiVersion: trigger/v1\nkind: Queue\nmetadata: {{name: {name}}}\n"
        f"spec:\n  limit: {limit}{spread}\n"
    )


def rule(name: str, queue_name: str, namespace: str = "data", priority: int = 0) -> str:
    return f"""apiVersion: trigger/v1
kind: Rule
metadata: {{name: {name}}}
spec:
  source: {{cron: {{schedules: ["0 2 * * *"]}}}}
  workflow: {{template: report, namespace: {namespace}, queue: {queue_name}, priority: {priority}}}
"""


def rules_of(tmp_path: Path, *documents: str) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text("---\n".join(documents))
    return load_rules([path])


class Clock(SystemClock):
    """The system clock, but sleeps only yield (backoff between retries is not waited)."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


StatusLog = list[tuple[str, str, int]]
# Called after each response: (method, path, status); how a test plays another writer.
Hook = Callable[[str, str, int], None]
HOOKS: list[Hook] = []


@pytest.fixture
async def kube() -> AsyncIterator[tuple[KubeEmulator, StatusLog]]:
    """The emulator, logging every response's (method, path, status) and running the
    hooks a test adds to HOOKS after each one."""
    statuses: StatusLog = []
    emulator = KubeEmulator(namespaces=NAMESPACES)

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        statuses.append((request.method, request.path, response.status))
        for hook in HOOKS:
            hook(request.method, request.path, response.status)
        return response

    emulator.app.middlewares.append(record)
    try:
        async with emulator:
            yield emulator, statuses
    finally:
        HOOKS.clear()


@pytest.fixture
async def semaphores(kube: tuple[KubeEmulator, StatusLog]) -> AsyncIterator[SemaphoreConfigMaps]:
    async with client.ApiClient(configuration=kube[0].client_configuration()) as api_client:
        yield SemaphoreConfigMaps(api_client, clock=Clock())


def configmap(emulator: KubeEmulator, namespace: str) -> dict[str, Any] | None:
    return emulator.get_object(*CONFIGMAPS, QUEUE_CONFIGMAP, namespace)


def seed(emulator: KubeEmulator, namespace: str, data: dict[str, str], **meta: Any) -> None:
    body = {"metadata": {"name": QUEUE_CONFIGMAP, "namespace": namespace, **meta}, "data": data}
    emulator.put_object(*CONFIGMAPS, body)


async def test_configmaps_are_created_with_the_declared_limits(
    tmp_path: Path, kube: tuple[KubeEmulator, StatusLog], semaphores: SemaphoreConfigMaps
) -> None:
    """Each queue namespace gets trigger-queues holding every queue's limit as a string,
    its keys listed as trigger's own; namespaces of no queue get nothing."""
    emulator, _ = kube
    rules = rules_of(
        tmp_path,
        queue("nightly", 2, ["data", "reports"]),
        queue("adhoc", 5),
        rule("a", "nightly"),
        rule("b", "adhoc", namespace="reports"),
    )
    assert await semaphores.apply(declared_limits(rules)) == []
    data, reports = configmap(emulator, "data"), configmap(emulator, "reports")
    assert data is not None and reports is not None
    assert data["data"] == {"nightly": "2"}
    assert reports["data"] == {"adhoc": "5", "nightly": "2"}
    assert json.loads(reports["metadata"]["annotations"][ANNOTATION_OWNED]) == ["adhoc", "nightly"]
    assert configmap(emulator, "default") is None


async def test_reload_updates_owned_keys_and_others_survive(
    tmp_path: Path, kube: tuple[KubeEmulator, StatusLog], semaphores: SemaphoreConfigMaps
) -> None:
    """A new limit replaces trigger's key; a key another owner wrote — even one named like
    a queue — is neither changed nor removed, and is reported with what it holds."""
    emulator, _ = kube
    seed(emulator, "data", {"team-x": "3", "adhoc": "9"}, labels={"owner": "team-x"})
    first = rules_of(tmp_path, queue("nightly", 2, ["data"]), rule("a", "nightly"))
    assert await semaphores.apply(declared_limits(first)) == []
    reloaded = rules_of(
        tmp_path,
        queue("nightly", 4, ["data"]),
        queue("adhoc", 1, ["data"]),
        rule("a", "nightly"),
        rule("b", "adhoc"),
    )
    foreign = await semaphores.apply(declared_limits(reloaded))
    found = configmap(emulator, "data")
    assert found is not None
    assert found["data"] == {"team-x": "3", "adhoc": "9", "nightly": "4"}
    assert found["metadata"]["labels"] == {"owner": "team-x"}
    assert json.loads(found["metadata"]["annotations"][ANNOTATION_OWNED]) == ["nightly"]
    assert [(f.namespace, f.queue, f.value) for f in foreign] == [("data", "adhoc", "9")]
    assert "adhoc" in str(foreign[0]) and "'9'" in str(foreign[0])


async def test_unchanged_limits_write_nothing(
    tmp_path: Path, kube: tuple[KubeEmulator, StatusLog], semaphores: SemaphoreConfigMaps
) -> None:
    """Applying the same limits again only reads: no PUT, no new resourceVersion."""
    emulator, _ = kube
    limits = declared_limits(rules_of(tmp_path, queue("nightly", 2, ["data"])))
    await semaphores.apply(limits)
    version = configmap(emulator, "data")["metadata"]["resourceVersion"]  # type: ignore[index]
    puts = emulator.count(method="PUT")
    await semaphores.apply(limits)
    assert emulator.count(method="PUT") == puts
    assert configmap(emulator, "data")["metadata"]["resourceVersion"] == version  # type: ignore[index]


async def test_a_concurrent_write_is_retried_not_lost(
    tmp_path: Path, kube: tuple[KubeEmulator, StatusLog], semaphores: SemaphoreConfigMaps
) -> None:
    """Another writer changing the ConfigMap between our read and our write makes our
    replace fail with 409 (resourceVersion); the keeper reads again and keeps both."""
    emulator, statuses = kube
    seed(emulator, "data", {"team-x": "3"})
    raced: list[bool] = []

    def other_writer(method: str, path: str, status: int) -> None:
        if method == "GET" and QUEUE_CONFIGMAP in path and not raced:
            raced.append(True)  # after our first read: someone adds a key
            current = configmap(emulator, "data")
            assert current is not None
            current["data"]["team-y"] = "1"
            emulator.put_object(*CONFIGMAPS, current)

    HOOKS.append(other_writer)
    limits = declared_limits(rules_of(tmp_path, queue("nightly", 2, ["data"])))
    assert await semaphores.apply(limits) == []
    path = f"/api/v1/namespaces/data/configmaps/{QUEUE_CONFIGMAP}"
    assert ("PUT", path, 409) in statuses and ("PUT", path, 200) in statuses
    found = configmap(emulator, "data")
    assert found is not None
    assert found["data"] == {"team-x": "3", "team-y": "1", "nightly": "2"}


async def test_a_create_race_rereads_and_merges(
    tmp_path: Path, kube: tuple[KubeEmulator, StatusLog], semaphores: SemaphoreConfigMaps
) -> None:
    """When another writer creates the ConfigMap after our read found none, our create
    gets 409 AlreadyExists; the keeper reads theirs and adds its key to it."""
    emulator, statuses = kube

    def other_creator(method: str, path: str, status: int) -> None:
        if method == "GET" and status == 404 and QUEUE_CONFIGMAP in path:
            seed(emulator, "data", {"team-x": "3"})  # after our read found none

    HOOKS.append(other_creator)
    limits = declared_limits(rules_of(tmp_path, queue("nightly", 2, ["data"])))
    assert await semaphores.apply(limits) == []
    assert ("POST", "/api/v1/namespaces/data/configmaps", 409) in statuses
    found = configmap(emulator, "data")
    assert found is not None and found["data"] == {"team-x": "3", "nightly": "2"}


async def test_keeper_writes_while_leading_and_again_on_reload(
    tmp_path: Path, kube: tuple[KubeEmulator, StatusLog], semaphores: SemaphoreConfigMaps
) -> None:
    """The keeper writes the limits once it leads, and the new ones after rules_changed."""
    emulator, _ = kube
    first = rules_of(tmp_path, queue("nightly", 2, ["data"]))
    keeper = QueueKeeper(semaphores, LocalLeader(), SystemClock(), first)
    task = asyncio.ensure_future(keeper.run())
    try:
        await until(lambda: configmap(emulator, "data") is not None, what="the ConfigMap")
        keeper.rules_changed(rules_of(tmp_path, queue("nightly", 7, ["data"])))
        await until(
            lambda: (configmap(emulator, "data") or {}).get("data") == {"nightly": "7"},
            what="the new limit",
        )
        assert keeper.synced and keeper.problems == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Switch(LocalLeader):
    """A leadership the test turns on and off."""

    def turn(self, leader: bool) -> None:
        self._set(leader)


async def test_keeper_writes_only_while_leading(
    tmp_path: Path, kube: tuple[KubeEmulator, StatusLog], semaphores: SemaphoreConfigMaps
) -> None:
    """A follower writes nothing; leading, the keeper writes; once leadership is lost a
    reload writes nothing until this replica leads again, which then writes the new limit."""
    emulator, _ = kube
    leadership = Switch()
    leadership.turn(False)
    keeper = QueueKeeper(
        semaphores, leadership, SystemClock(), rules_of(tmp_path, queue("nightly", 2, ["data"]))
    )
    task = asyncio.ensure_future(keeper.run())
    try:
        for _ in range(20):  # a negative check: the keeper gets the loop, and must not write
            await asyncio.sleep(0)
        assert emulator.count(path_contains=QUEUE_CONFIGMAP) == 0
        leadership.turn(True)
        await until(lambda: keeper.synced, what="the first write")
        assert (configmap(emulator, "data") or {}).get("data") == {"nightly": "2"}
        leadership.turn(False)
        await until(lambda: not keeper.synced, what="the keeper to stop")
        requests = emulator.count(path_contains=QUEUE_CONFIGMAP)
        keeper.rules_changed(rules_of(tmp_path, queue("nightly", 7, ["data"])))
        for _ in range(20):
            await asyncio.sleep(0)
        assert emulator.count(path_contains=QUEUE_CONFIGMAP) == requests
        leadership.turn(True)
        await until(
            lambda: (configmap(emulator, "data") or {}).get("data") == {"nightly": "7"},
            what="the new limit once leading again",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_keeper_reports_a_refusal_and_recovers(
    tmp_path: Path, kube: tuple[KubeEmulator, StatusLog], semaphores: SemaphoreConfigMaps
) -> None:
    """A 403 is shown as the keeper's problem and counted (not retried as a conflict);
    once the API allows it, the next attempt writes the ConfigMap and clears the problem.
    A key of another owner is a problem too, counted as `foreign`."""
    emulator, _ = kube
    emulator.inject(403, count=1, method="GET", path_contains=QUEUE_CONFIGMAP)
    metrics = Metrics()
    rules = rules_of(tmp_path, queue("nightly", 2, ["data", "reports"]))
    keeper = QueueKeeper(semaphores, LocalLeader(), SystemClock(), rules, metrics=metrics)
    assert not await keeper.apply()
    assert keeper.problems and "403" in keeper.problems[0] and not keeper.synced
    assert errors(metrics) == {"failed": 1.0}
    seed(emulator, "reports", {"nightly": "1"})
    assert await keeper.apply()
    assert configmap(emulator, "data") is not None
    assert len(keeper.problems) == 1 and "reports/trigger-queues" in keeper.problems[0]
    assert errors(metrics) == {"failed": 1.0, "foreign": 1.0}


def errors(metrics: Metrics) -> dict[str, float]:
    """trigger_queue_sync_errors_total by reason."""
    return {
        sample.labels["reason"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "trigger_queue_sync_errors"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def workflow(name: str, queue_name: str | None, namespace: str = "data") -> dict[str, Any]:
    labels = {LABEL_QUEUE: queue_name} if queue_name else {}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"workflowTemplateRef": {"name": "report"}},
    }


def seed_workflows(emulator: KubeEmulator) -> None:
    """nightly in data: 2 Running, 1 Pending, 1 without phase, 1 finished; one Workflow of
    another queue and one of none."""
    for index, phase in enumerate(["Running", "Running", "Pending", None, "Running"]):
        emulator.put_object(*WORKFLOWS, workflow(f"n{index}", "nightly"))
        if phase is not None:
            emulator.set_status(*WORKFLOWS, f"n{index}", {"phase": phase}, namespace="data")
    emulator.finish_workflow("n4", "Succeeded", namespace="data")
    emulator.put_object(*WORKFLOWS, workflow("other", "adhoc"))
    emulator.set_status(*WORKFLOWS, "other", {"phase": "Running"}, namespace="data")
    emulator.put_object(*WORKFLOWS, workflow("plain", None))


async def test_trigger_queues_counts_by_phase(
    tmp_path: Path, kube: tuple[KubeEmulator, StatusLog]
) -> None:
    """`trigger queues -o json` lists by the queue label and counts Running as running,
    Pending or no phase as waiting, and finished ones not at all."""
    emulator, _ = kube
    seed_workflows(emulator)
    path = tmp_path / "rules.yaml"
    path.write_text("---\n".join([queue("nightly", 2, ["data"]), queue("adhoc", 1, ["data"])]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGER_")}
    env["KUBECONFIG"] = str(emulator.kubeconfig(tmp_path / "kubeconfig"))
    command = ["-m", "trigger.cli", "queues", "--rules", str(path), "--sink", "kubernetes"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *command, "-o", "json", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert json.loads(out) == {
        "adhoc": {"limit": 1, "namespaces": ["data"], "running": 1, "waiting": 0},
        "nightly": {"limit": 2, "namespaces": ["data"], "running": 2, "waiting": 2},
    }


RULES = """\
{queue}---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: hook}}
spec:
  source: {{webhook: {{path: /hooks/a}}}}
  workflow: {{template: report, namespace: data, queue: nightly, priority: 5}}
"""


async def test_daemon_keeps_the_configmap_and_shows_the_queue(
    tmp_path: Path, kube: tuple[KubeEmulator, StatusLog]
) -> None:
    """The daemon (kubernetes sink) creates trigger-queues on start, updates it when the
    rule files change, and /status shows the queue with its counts."""
    emulator, _ = kube
    seed_workflows(emulator)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES.format(queue=queue("nightly", 2)))
    env = {
        "KUBECONFIG": str(emulator.kubeconfig(tmp_path / "kubeconfig")),
        "TRIGGER_SUBMIT__CHECK_TEMPLATES": "false",
        "TRIGGER_LEADER__ENABLED": "false",
        "TRIGGER_RELOAD": "true",
    }
    daemon = DaemonProcess(tmp_path, rules, env=env, extra_args=["--sink", "kubernetes"])
    try:
        daemon.start(ready=False)
        await asyncio.to_thread(daemon.wait_ready)
        await until(
            lambda: (configmap(emulator, "data") or {}).get("data") == {"nightly": "2"},
            what="the ConfigMap on start",
        )
        status = (await asyncio.to_thread(daemon.get, "/status")).json()
        assert status["queues"] == {
            "nightly": {"limit": 2, "namespaces": ["data"], "running": 2, "waiting": 2}
        }
        (rules / "r.yaml").write_text(RULES.format(queue=queue("nightly", 3)))
        await until(
            lambda: (configmap(emulator, "data") or {}).get("data") == {"nightly": "3"},
            what="the ConfigMap after the reload",
        )
        posted = await asyncio.to_thread(
            daemon.post, "/hooks/a", b"{}", {"Content-Type": "application/json"}
        )
        assert posted.status == 200, posted.body
        created = [
            w
            for w in emulator.objects(*WORKFLOWS, "data")
            if w["metadata"]["labels"].get("trigger.dev/rule") == "hook"
        ]
        assert len(created) == 1 and created[0]["spec"]["priority"] == 5
        assert created[0]["spec"]["synchronization"]["semaphores"][0]["configMapKeyRef"] == {
            "name": QUEUE_CONFIGMAP,
            "key": "nightly",
        }
    finally:
        daemon.stop()


def test_trigger_queues_asks_a_running_daemon(tmp_path: Path) -> None:
    """`trigger queues --server URL` prints the daemon's /status queues; with the local
    sink a fired Workflow is waiting (its manifest is not finished) and a note says that
    nothing runs local manifests."""
    import subprocess

    from tests.daemon import running

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES.format(queue=queue("nightly", 2)))
    with running(tmp_path, rules) as daemon:
        assert daemon.post("/hooks/a", b"{}", {"Content-Type": "application/json"}).status == 200
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGER_")}
        result = subprocess.run(
            [sys.executable, "-m", "trigger.cli", "queues", "--server", daemon.url, "-o", "json"],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)["nightly"]
    assert (found["limit"], found["running"], found["waiting"]) == (2, 0, 1)
    assert found["namespaces"] == ["data"] and "local sink" in found["note"]
