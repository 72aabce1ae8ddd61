"""Benchmark: flow control toward a Kubernetes API server that admits only so much.

The API emulator runs as a subprocess (its own core) with `--admit N`: it serves at most N
Workflow creates a second and answers the rest 429 with `Retry-After: 1`, as API Priority
and Fairness does. The submitter (default flow settings, 64 creates in flight) sends a
burst of 20·N fresh Workflows through the real kubernetes sink. Reported per N (100, 300,
1,000): the rate reached as a share of N (target ≥ 0.9), the share of creates refused
(target ≤ 0.05), and that every Workflow exists once.

Then the storm: a stream of 200 creates/s into an unlimited emulator; for 30 s (10 s each)
every create gets 500, then 429 with Retry-After, then its answer is lost after the object
is stored (SIGUSR1 steps the emulator's storm); reported: the time from the storm's end to
the backlog cleared (target ≤ 5 s), and duplicates/missing (both 0).

Prints the figures and writes tests/bench/results/flow.json.

Run: .venv/bin/python -m tests.bench.flow [--rates 100,300,1000] [--storm SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from tests.bench.sink_kubernetes import TOKEN, workflow
from trigger.clock import SystemClock
from trigger.rules.loader import load_rules
from trigger.rules.render import build_workflow
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.flow import FlowController, FlowSettings
from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink
from trigger.submit.submitter import OutcomeKind, Submitter

RESULTS = Path(__file__).parent / "results"
BURST_SECONDS = 20  # a burst holds this many seconds' worth of what the server admits
RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: bench}
spec:
  source: {kafka: {topics: [bench]}}
  workflow: {template: ingest, namespace: data, parameters: {input: x}}
  retry: {limit: 1000, backoff: {initial: 1s, factor: 2, max: 2m}}
"""


def start_emulator(admit: float | None) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "trigger.testing.kubeapi", "--port", "0"]
    command += ["--namespaces", "data", "--token", TOKEN]
    if admit:
        command += ["--admit", str(admit)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("READY "):
        process.kill()
        raise RuntimeError(f"emulator did not start: {line!r}")
    return process, line.split()[1]


class Counting:
    """The flow observer: answers by outcome."""

    def __init__(self) -> None:
        self.answers: Counter[str] = Counter()

    def answered(self, controller: FlowController, outcome: str) -> None:
        self.answers[outcome] += 1

    def changed(self, controller: FlowController, why: str) -> None:
        return


async def submitter(url: str, tmp: Path) -> tuple[Submitter, Counting, KubernetesSink]:
    sink = await KubernetesSink.connect(KubernetesOptions(server=url, token=TOKEN))
    counting = Counting()
    clock = SystemClock()
    flow = FlowController("kubernetes", clock, FlowSettings(), observer=counting)
    dead = FileDeadLetterSink(tmp / "dead.jsonl")
    return Submitter(sink, dead, clock, flow=flow, max_in_flight=64), counting, sink


async def stored(url: str) -> Counter[str]:
    config = client.Configuration(host=url)
    config.api_key, config.api_key_prefix = {"BearerToken": TOKEN}, {"BearerToken": "Bearer"}
    async with client.ApiClient(config) as api:
        found = await client.CustomObjectsApi(api).list_namespaced_custom_object(
            "argoproj.io", "v1alpha1", "data", "workflows"
        )
    return Counter(w["metadata"]["name"] for w in found["items"])


async def burst(admitted: float, tmp: Path) -> dict[str, Any]:
    process, url = start_emulator(admitted)
    try:
        sub, counting, sink = await submitter(url, tmp)
        rule = load_rules([tmp / "rule.yaml"]).by_name["bench"]
        total = int(min(admitted, 1000) * BURST_SECONDS)
        done_at: list[float] = []

        async def one(n: int) -> Any:
            outcome = await sub._create(rule, None, workflow(f"b{int(admitted)}-{n:06d}"), "raise")
            done_at.append(time.perf_counter())
            return outcome

        started = time.perf_counter()
        outcomes = await asyncio.gather(*(one(n) for n in range(total)))
        elapsed = time.perf_counter() - started
        # The steady rate: the middle 90 % of completions, without the ramp-up and the tail
        # of creates refused last, which wait out their Retry-After after the rest are done.
        done_at.sort()
        low, high = done_at[total // 20], done_at[total - total // 20 - 1]
        steady = (total - 2 * (total // 20) - 1) / (high - low)
        assert sub.flow is not None
        await sub.flow.close()
        await sink.close()
        names = await stored(url)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    created = sum(o.kind == OutcomeKind.CREATED for o in outcomes)
    refused = counting.answers["throttled"]
    return {
        "admitted": admitted,
        "creates": total,
        "seconds": round(elapsed, 2),
        "rate": round(created / elapsed, 1),
        "share_of_admitted": round(created / elapsed / admitted, 3),
        "steady_share_of_admitted": round(steady / admitted, 3),
        "last_5_percent_seconds": round(done_at[-1] - high, 2),
        "refused": refused,
        "share_refused": round(refused / (refused + counting.answers["ok"]), 4),
        "exactly_once": len(names) == total and set(names.values()) == {1},
    }


async def storm(seconds: float, tmp: Path) -> dict[str, Any]:
    process, url = start_emulator(None)
    rule = load_rules([tmp / "rule.yaml"]).by_name["bench"]
    try:
        sub, counting, sink = await submitter(url, tmp)
        fresh = itertools.count()
        tasks: list[asyncio.Task[Any]] = []
        phase_seconds = seconds / 3

        async def stream(until: float) -> None:
            while time.perf_counter() < until:
                n = next(fresh)
                wf = build_workflow(rule, f"s-{n:06d}", {"input": str(n)}, event=None, key=str(n))
                tasks.append(asyncio.create_task(sub._create(rule, None, wf, "raise")))
                await asyncio.sleep(1 / 200)

        start = time.perf_counter()
        streamer = asyncio.create_task(stream(start + 5 + seconds + 5))
        await asyncio.sleep(5)
        for _ in range(3):  # 500, 429, lost
            process.send_signal(signal.SIGUSR1)
            await asyncio.sleep(phase_seconds)
        process.send_signal(signal.SIGUSR1)  # calm
        calm = time.perf_counter()
        backlog = sum(not t.done() for t in tasks)
        # Cleared: every create started before the storm ended has finished.
        await asyncio.wait(list(tasks))
        cleared = time.perf_counter() - calm
        await streamer
        results = await asyncio.gather(*tasks)
        assert sub.flow is not None
        await sub.flow.close()
        await sink.close()
        names = await stored(url)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
    duplicates = sum(r.kind == OutcomeKind.DUPLICATE for r in results)
    return {
        "storm_seconds": seconds,
        "creates": len(results),
        "backlog_at_end_of_storm": backlog,
        "seconds_to_clear_after_storm": round(cleared, 2),
        "answered_duplicate_after_lost_answers": duplicates,
        "exactly_once": len(names) == len(results) and set(names.values()) == {1},
        "answers": dict(counting.answers),
    }


async def main(rates: list[float], storm_seconds: float) -> dict[str, Any]:
    tmp = RESULTS / "flow-work"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "rule.yaml").write_text(RULE)
    found: dict[str, Any] = {"bursts": []}
    for rate in rates:
        result = await burst(rate, tmp)
        print(json.dumps(result), flush=True)
        found["bursts"].append(result)
    if storm_seconds > 0:
        found["storm"] = await storm(storm_seconds, tmp)
        print(json.dumps(found["storm"]), flush=True)
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.bench.flow")
    parser.add_argument("--rates", default="100,300,1000")
    parser.add_argument("--storm", type=float, default=30.0, help="seconds; 0 skips it")
    args = parser.parse_args()
    figures = asyncio.run(main([float(r) for r in args.rates.split(",") if r], args.storm))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flow.json").write_text(json.dumps(figures, indent=2) + "\n")
