"""Benchmark: webhook and EventBridge push → Workflow created, latency under many senders.

`trigger run` (a subprocess) takes pushes on loopback and creates each Workflow in the
Kubernetes API emulator (a subprocess) before it answers, so a delivery's round trip is
the time from the push to its Workflow created. SENDERS concurrent senders each push one
delivery after another (a closed loop); the same number of bare kubernetes_asyncio create
calls (trust_env off, a connection each) into the same emulator is the yardstick. Reported:
p50 and p99 of each, and the ratios daemon / bare (targets: p99 ≤ 1.5×, p50 ≤ 3×).
The daemon's client-side limiter is set out of reach; it creates with its default
`submit.max_in_flight` (64) unless --in-flight says otherwise.

Run: .venv/bin/python -m tests.bench.push [--senders 200] [--each 20] [--in-flight 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from tests.bench.kafka import Daemon, kube_env, start_emulator

RESULTS = Path(__file__).parent / "results"
SENDERS = 200
WARM_UP = 2  # deliveries per sender before the clock

Send = Callable[[int], Awaitable[None]]


def rules() -> list[dict[str, Any]]:
    workflow = {"template": "process", "namespace": "default",
                "parameters": {"n": "{{ event.body.n }}", "key": "{{ event.body.key }}"}}  # fmt: skip
    oss_workflow = {"template": "process", "namespace": "default",
                    "parameters": {"n": "{{ event.size }}", "key": "{{ event.key }}"}}  # fmt: skip
    return [
        {"apiVersion": "trigger/v1", "kind": "Rule", "metadata": {"name": "bench-webhook"},
         "spec": {"source": {"webhook": {"path": "/hooks/bench"}}, "workflow": workflow}},
        {"apiVersion": "trigger/v1", "kind": "Rule", "metadata": {"name": "bench-eventbridge"},
         "spec": {"source": {"oss": {"bucket": "bench", "events": ["ObjectCreated:*"],
                                     "key": {"prefix": "in/"}}},
                  "workflow": oss_workflow}},
    ]  # fmt: skip


def eventbridge(n: int) -> bytes:
    """An OSS PutObject event as EventBridge pushes it (CloudEvents JSON), unique per n."""
    key = f"in/file-{n:07d}.csv"
    return json.dumps({
        "specversion": "1.0", "id": f"eb-{n:07d}", "source": "acs.oss",
        "type": "oss:ObjectCreated:PutObject", "subject": f"acs:oss:cn-hangzhou:1:bench/{key}",
        "time": "2025-01-01T08:00:00.000Z", "datacontenttype": "application/json",
        "data": {"eventName": "ObjectCreated:PutObject", "region": "cn-hangzhou",
                 "eventTime": "2025-01-01T08:00:00.000Z",
                 "oss": {"bucket": {"name": "bench", "ownerIdentity": "1"},
                         "object": {"key": key, "size": n, "eTag": f"E{n:07d}"}}},
    }).encode()  # fmt: skip


async def closed_loop(send: Send, senders: int, each: int, first: int) -> list[float]:
    """`senders` loops of `each` calls; every call's seconds, warm-up calls left out."""
    latencies: list[float] = []

    async def sender(s: int) -> None:
        for i in range(WARM_UP + each):
            started = time.perf_counter()
            await send(first + s * (WARM_UP + each) + i)
            if i >= WARM_UP:
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(sender(s) for s in range(senders)))
    return latencies


def percentiles(latencies: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49] * 1000, 2), "p99_ms": round(cuts[98] * 1000, 2),
            "count": len(latencies)}  # fmt: skip


async def daemon_side(port: int, senders: int, each: int) -> dict[str, dict[str, float]]:
    base = f"http://127.0.0.1:{port}"
    connector = aiohttp.TCPConnector(limit=senders)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def webhook(n: int) -> None:
            body = json.dumps({"n": n, "key": f"k{n}"}).encode()
            async with session.post(f"{base}/hooks/bench", data=body,
                                    headers={"Content-Type": "application/json",
                                             "X-Request-Id": f"wh-{n}"}) as reply:  # fmt: skip
                if reply.status != 200:
                    raise RuntimeError(f"webhook answered {reply.status}: {await reply.text()}")

        async def push(n: int) -> None:
            async with session.post(f"{base}/oss/eventbridge", data=eventbridge(n),
                                    headers={"Content-Type": "application/json"}) as reply:  # fmt: skip
                if reply.status != 200:
                    raise RuntimeError(f"eventbridge answered {reply.status}: {await reply.text()}")

        return {
            "webhook": percentiles(await closed_loop(webhook, senders, each, 0)),
            "eventbridge": percentiles(await closed_loop(push, senders, each, 0)),
        }


async def bare_side(url: str, senders: int, each: int, first: int) -> dict[str, float]:
    config = client.Configuration(host=url)
    config.connection_pool_maxsize = senders
    api = client.ApiClient(config)
    api.rest_client.pool_manager._trust_env = False
    custom = client.CustomObjectsApi(api)

    async def create(n: int) -> None:
        body = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"name": f"bare-{n:07d}", "namespace": "default",
                             "labels": {"trigger.dev/rule": "bench"}},
                "spec": {"workflowTemplateRef": {"name": "process"},
                         "arguments": {"parameters": [{"name": "n", "value": str(n)}]}}}  # fmt: skip
        await custom.create_namespaced_custom_object(
            "argoproj.io", "v1alpha1", "default", "workflows", body, _request_timeout=30
        )

    try:
        return percentiles(await closed_loop(create, senders, each, first))
    finally:
        await api.close()


async def ready(daemon: Daemon, within: float = 60.0) -> None:
    """Until /readyz answers 200."""
    end = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{daemon.port}/readyz") as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if daemon.process.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"daemon not ready: see {daemon.work / 'daemon.log'}")
            await asyncio.sleep(0.05)


async def measure(
    work: Path, senders: int = SENDERS, each: int = 20, in_flight: int = 64
) -> dict[str, Any]:
    """Bare, daemon (webhook, then EventBridge), bare again: one emulator throughout."""
    process, url = start_emulator()
    try:
        env = await kube_env(url, work)
        env["TRIGGER_SUBMIT__MAX_IN_FLIGHT"] = str(in_flight)
        before = await bare_side(url, senders, each, 0)
        daemon = Daemon(work / "push", None, "push", "kubernetes", env, rules=rules())
        try:
            await ready(daemon)
            pushed = await daemon_side(daemon.port, senders, each)
        finally:
            daemon.stop()
        after = await bare_side(url, senders, each, 10_000_000)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    bare = {key: round((before[key] + after[key]) / 2, 2) for key in ("p50_ms", "p99_ms")}
    found: dict[str, Any] = {"senders": senders, "each": each, "in_flight": in_flight, "bare": bare,
                             "bare_before_after": [before, after]}  # fmt: skip
    for kind, figures in pushed.items():
        found[kind] = figures | {
            "p50_ratio": round(figures["p50_ms"] / bare["p50_ms"], 2),
            "p99_ratio": round(figures["p99_ms"] / bare["p99_ms"], 2),
        }
    found["targets"] = {"p50_ratio": 3.0, "p99_ratio": 1.5}
    return found


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.push")
    parser.add_argument("--senders", type=int, default=SENDERS)
    parser.add_argument("--each", type=int, default=20, help="deliveries per sender")
    parser.add_argument(
        "--in-flight", type=int, default=64, help="the daemon's submit.max_in_flight"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        figures = asyncio.run(measure(Path(tmp), args.senders, args.each, args.in_flight))
    print(json.dumps(figures, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "push.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
