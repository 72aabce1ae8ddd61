"""Benchmark: chained Workflows/s from a watch of 10,000 finished Workflows vs a bare
create loop.

An API emulator runs as a subprocess on loopback (its CPU is not the client's). The bare
side creates 10,000 Workflows with kubernetes_asyncio, one at a time (as the source
submits) and 16 at a time (the sink's best). The chain side starts `WorkflowSource` once
(it stores its watermark and stops), then 10,000 Workflows of the upstream template are
created finished in `up`, and the source starts again: its watch replays the 10,000
completions from the watermark and the rule creates one Workflow per completion in
`data`, through the daemon's Pipeline, Submitter and KubernetesSink. Timed from the
second start until every chained Workflow is created. Prints the rates and writes
tests/bench/results/workflow_chain.json.

Run: .venv/bin/python -m tests.bench.workflow_chain [COUNT]
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from trigger.clock import SystemClock
from trigger.core.metrics import Metrics
from trigger.core.pipeline import Pipeline
from trigger.core.state import FileStateStore
from trigger.rules.loader import load_rules
from trigger.sources.base import SourceContext
from trigger.sources.workflow.source import WorkflowSource
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink
from trigger.submit.submitter import Submitter

RESULTS = Path(__file__).parent / "results"
TOKEN = "bench-token"
COUNT = 10_000
IN_FLIGHT = 16
G, V, WF = "argoproj.io", "v1alpha1", "workflows"
RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: report-after-load}
spec:
  source: {workflow: {namespace: up, templates: [load], phases: [Succeeded]}}
  workflow:
    template: report
    namespace: data
    parameters: {table: "{{ event.outputs.table }}", day: "{{ event.parameters.day }}"}
"""


def upstream(i: int) -> dict[str, Any]:
    """A finished Workflow as Argo's controller leaves it."""
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "Workflow",
        "metadata": {
            "name": f"load-{i:07d}",
            "namespace": "up",
            "labels": {
                "workflows.argoproj.io/completed": "true",
                "workflows.argoproj.io/phase": "Succeeded",
            },
            "annotations": {"trigger.dev/event-id": f"nightly@{i}"},
        },
        "spec": {
            "workflowTemplateRef": {"name": "load"},
            "arguments": {"parameters": [{"name": "day", "value": "2025-06-01"}]},
        },
        "status": {
            "phase": "Succeeded",
            "startedAt": "2025-06-01T02:00:00Z",
            "finishedAt": "2025-06-01T02:10:00Z",
            "outputs": {"parameters": [{"name": "table", "value": f"t{i}"}]},
        },
    }


def bare_body(i: int, namespace: str) -> dict[str, Any]:
    body = upstream(i)
    body["metadata"] = {"name": f"bare-{i:07d}", "namespace": namespace}
    body.pop("status")
    return body


def start_emulator(count: int) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "trigger.testing.kubeapi", "--port", "0"]
    command += ["--namespaces", "up,data,bare1,bare16", "--token", TOKEN]
    command += ["--history", str(4 * count + 1000)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("READY "):
        process.kill()
        raise RuntimeError(f"emulator did not start: {line!r}")
    return process, line.split()[1]


async def create_all(custom: Any, bodies: list[dict[str, Any]], in_flight: int) -> float:
    """Create every body with `in_flight` workers; seconds taken."""
    queue = iter(bodies)

    async def worker() -> None:
        for body in queue:
            namespace = body["metadata"]["namespace"]
            await custom.create_namespaced_custom_object(G, V, namespace, WF, body)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - started


async def chain(url: str, custom: Any, count: int, tmp: Path) -> float:
    """Seconds from the source's start until `count` replayed completions are chained."""
    (tmp / "rules.yaml").write_text(RULE)
    rules = load_rules([tmp / "rules.yaml"])
    sink = await KubernetesSink.connect(KubernetesOptions(server=url, token=TOKEN))
    state = await FileStateStore.open(tmp / "state.json")
    metrics, clock = Metrics(), SystemClock()
    dead = FileDeadLetterSink(tmp / "dead.jsonl")
    pipeline = Pipeline(rules, Submitter(sink, dead, clock), dead, metrics, clock)
    ctx = SourceContext(pipeline, metrics, clock, sink, state, None)

    def created() -> int:
        status = pipeline.status.get("report-after-load")
        return 0 if status is None else status.created

    async def run_until(done: Any) -> float:
        source = WorkflowSource(ctx)
        task = asyncio.create_task(source.run())
        started = time.perf_counter()
        while not done():  # noqa: ASYNC110 - polling a counter the pipeline keeps
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - started
        await source.stop(30)
        await task
        return seconds

    try:
        await run_until((tmp / "state.json").exists)  # the watermark: start from now
        await create_all(custom, [upstream(i) for i in range(count)], IN_FLIGHT)
        return await run_until(lambda: created() >= count)
    finally:
        await sink.close()
        await state.close()


async def measure(url: str, count: int) -> dict[str, Any]:
    config = client.Configuration(host=url)
    config.api_key = {"BearerToken": TOKEN}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    api = client.ApiClient(config)
    api.rest_client.pool_manager._trust_env = False
    custom = client.CustomObjectsApi(api)
    try:
        one = await create_all(custom, [bare_body(i, "bare1") for i in range(count)], 1)
        many = await create_all(custom, [bare_body(i, "bare16") for i in range(count)], IN_FLIGHT)
        with tempfile.TemporaryDirectory() as tmp:
            chained = await chain(url, custom, count, Path(tmp))
    finally:
        await api.close()
    return {
        "workflows": count,
        "bare_creates_per_s_1_in_flight": round(count / one, 1),
        f"bare_creates_per_s_{IN_FLIGHT}_in_flight": round(count / many, 1),
        "chained_per_s": round(count / chained, 1),
        "ratio_to_bare_1": round(one / chained, 3),
        f"ratio_to_bare_{IN_FLIGHT}": round(many / chained, 3),
    }


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else COUNT
    process, url = start_emulator(count)
    try:
        figures = asyncio.run(measure(url, count))
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    figures["python"] = sys.version.split()[0]
    for key, value in figures.items():
        print(f"{key:32} {value}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "workflow_chain.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
