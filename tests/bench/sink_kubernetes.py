"""Benchmark: creates/s through `KubernetesSink.create` vs a bare kubernetes_asyncio loop.

Both run in the same process against the same API emulator (a subprocess on loopback,
so its CPU is not the client's), 16 creates in flight, 3,000 fresh Workflows each. The
rounds are interleaved (bare, sink, sink, bare; 1,500 each) so drift in the emulator
(a growing store, a warming CPU) falls on both sides alike. The sink runs with its
client-side limiter off (qps=0), as the comparison is about per-call overhead; a third,
informational figure has the limiter on at a rate it never reaches.
Prints both rates and the ratio sink / bare (target ≥ 0.7) and writes
tests/bench/results/sink_kubernetes.json.

Run: .venv/bin/python -m tests.bench.sink_kubernetes
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink

RESULTS = Path(__file__).parent / "results"
TOKEN = "bench-token"
IN_FLIGHT = 16
PER_SIDE = 3000
ROUND = PER_SIDE // 2
WARM_UP = 200

Create = Callable[[dict[str, Any]], Awaitable[Any]]


def workflow(name: str) -> dict[str, Any]:
    """A Workflow shaped like the renderer's output."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": name,
            "namespace": "data",
            "labels": {
                "team": "data",
                "trigger.dev/rule": "ingest-csv",
                "trigger.dev/source": "oss",
            },
            "annotations": {
                "trigger.dev/event-id": f"evt-{name}",
                "trigger.dev/event-source": "oss",
                "trigger.dev/event-type": "ObjectCreated:PutObject",
                "trigger.dev/idempotency-key": f"raw-data/incoming/{name}.csv",
            },
        },
        "spec": {
            "workflowTemplateRef": {"name": "ingest"},
            "arguments": {
                "parameters": [
                    {"name": "input", "value": f"oss://raw-data/incoming/{name}.csv"},
                    {"name": "day", "value": "2025-01-01"},
                ]
            },
        },
    }


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trigger.testing.kubeapi",
            "--port",
            "0",
            "--namespaces",
            "data",
            "--token",
            TOKEN,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("READY "):
        process.kill()
        raise RuntimeError(f"emulator did not start: {line!r}")
    return process, line.split()[1]


async def run(create: Create, names: list[str]) -> float:
    """Create every name with IN_FLIGHT workers; return creates per second."""
    queue = iter(names)

    async def worker() -> None:
        for name in queue:
            await create(workflow(name))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return len(names) / (time.perf_counter() - started)


async def measure(url: str) -> dict[str, Any]:
    fresh = (f"wf-{i:07d}" for i in itertools.count())
    config = client.Configuration(host=url)
    config.api_key = {"BearerToken": TOKEN}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    config.connection_pool_maxsize = 64
    bare_client = client.ApiClient(config)
    # Like for like: the sink's session does not re-read proxies and ~/.netrc per request.
    bare_client.rest_client.pool_manager._trust_env = False
    custom = client.CustomObjectsApi(bare_client)
    default_client = client.ApiClient(config)  # kubernetes_asyncio as it comes (trust_env on)
    default_custom = client.CustomObjectsApi(default_client)

    async def bare(body: dict[str, Any]) -> Any:
        return await custom.create_namespaced_custom_object(
            "argoproj.io", "v1alpha1", "data", "workflows", body, _request_timeout=10
        )

    async def bare_default(body: dict[str, Any]) -> Any:
        return await default_custom.create_namespaced_custom_object(
            "argoproj.io", "v1alpha1", "data", "workflows", body, _request_timeout=10
        )

    sink = await KubernetesSink.connect(KubernetesOptions(server=url, token=TOKEN, qps=0))
    limited = await KubernetesSink.connect(
        KubernetesOptions(server=url, token=TOKEN, qps=1e6, burst=100)
    )
    sides: dict[str, Create] = {
        "bare": bare,
        "sink": sink.create,
        "limited": limited.create,
        "default": bare_default,
    }
    try:
        for create in sides.values():
            await run(create, [next(fresh) for _ in range(WARM_UP)])
        seconds: dict[str, float] = dict.fromkeys(sides, 0.0)
        for side in ("bare", "sink", "limited", "default", "default", "limited", "sink", "bare"):
            rate = await run(sides[side], [next(fresh) for _ in range(ROUND)])
            seconds[side] += ROUND / rate
    finally:
        await bare_client.close()
        await default_client.close()
        await sink.close()
        await limited.close()
    rates = {side: 2 * ROUND / s for side, s in seconds.items()}
    return {
        "in_flight": IN_FLIGHT,
        "workflows_per_side": PER_SIDE,
        "bare_creates_per_s": round(rates["bare"], 1),
        "bare_trust_env_on_creates_per_s": round(rates["default"], 1),
        "sink_creates_per_s": round(rates["sink"], 1),
        "sink_with_limiter_creates_per_s": round(rates["limited"], 1),
        "ratio": round(rates["sink"] / rates["bare"], 3),
        "ratio_with_limiter": round(rates["limited"] / rates["bare"], 3),
        "target_ratio": 0.7,
    }


def main() -> int:
    process, url = start_emulator()
    try:
        figures = asyncio.run(measure(url))
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    figures["python"] = sys.version.split()[0]
    print(
        f"bare kubernetes_asyncio: {figures['bare_creates_per_s']:8.1f} creates/s (trust_env off)"
    )
    print(f"  as it comes:           {figures['bare_trust_env_on_creates_per_s']:8.1f} creates/s")
    print(f"KubernetesSink.create:   {figures['sink_creates_per_s']:8.1f} creates/s")
    print(f"  with qps limiter on:   {figures['sink_with_limiter_creates_per_s']:8.1f} creates/s")
    print(f"ratio sink / bare:       {figures['ratio']:8.3f}  (target >= 0.7)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sink_kubernetes.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["ratio"] >= figures["target_ratio"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
