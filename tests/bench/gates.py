"""Benchmark: gate members' events/s into 1,000 and 100,000 open gates, and the state
store's bytes per open gate (issue 15).

Each run builds the daemon's parts in this process — Pipeline, GateKeeper, Submitter into
the local sink, the file state store — over the nightly-load gate (24 hourly files and a
`_SUCCESS` marker per day folder). N gates are opened first, each with one file (written
into the state file at once, so that filling 100,000 gates is not itself the benchmark),
then M more files go through `Pipeline.handle` to random open gates, one at a time as a
source delivers them: each is recorded (and fsynced) before `handle` returns. Reported:
events/s over the M, and the state's bytes per open gate (the state file and journal
after the run, and one gate key's JSON), and how long a snapshot (the journal folded
into the file, at close) takes — the pause in state writes it makes. The yardstick beside it: the same M events into
10 open gates, so the ratio says what the number of open gates costs.

The ConfigMap store is measured the same way (`--configmap-gates`, default 1,000): the
Kubernetes API emulator runs as a subprocess on loopback, gates are opened through the
store (one ConfigMap per gate key), then the events go in; bytes per open gate are the
ConfigMaps' `data.value` sizes.

Run: .venv/bin/python -m tests.bench.gates [--gates 1000,100000] [--events N]
     [--configmap-gates N (0: skip)]
Writes tests/bench/results/gates.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from trigger.clock import VirtualClock
from trigger.core.gatekeeper import GateKeeper
from trigger.core.metrics import Metrics
from trigger.core.pipeline import Pipeline
from trigger.core.state import ConfigMapStateStore, FileStateStore
from trigger.decoders.oss import decode_eventbridge
from trigger.events import Event, default_idempotency_key
from trigger.rules.gates import record
from trigger.rules.loader import load_rules
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.local import LocalSink
from trigger.submit.submitter import Submitter

RESULTS = Path(__file__).parent / "results"
RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: nightly-load}
spec:
  gate:
    key: "{{ event.key | dirname }}"
    window: 6h
    members:
      hourly:
        source: {oss: {bucket: raw-data, key: {prefix: sales/, suffix: .csv}}}
        count: 24
      marker:
        source: {oss: {bucket: raw-data, key: {prefix: sales/, suffix: /_SUCCESS}}}
  workflow:
    template: nightly-load
    namespace: data
    parameters:
      day: "{{ gate.key | basename }}"
      files: "{{ gate.members.hourly | map(attribute='key') | sort | join(',') }}"
"""
BASELINE_GATES = 10
TOKEN = "bench-token"


def oss_event(folder: int, hour: int) -> Event:
    """A created hourly file in the gate's bucket, as EventBridge delivers it."""
    key = f"sales/{folder:06d}/{hour:02d}.csv"
    return decode_eventbridge(
        {
            "specversion": "1.0",
            "id": f"eb-{folder}-{hour}",
            "source": "acs.oss",
            "type": "oss:ObjectCreated:PutObject",
            "time": "2026-12-06T01:00:00Z",
            "aliyunaccountid": "1234567890123456",
            "aliyunregionid": "cn-hangzhou",
            "data": {
                "oss": {
                    "bucket": {"name": "raw-data"},
                    "object": {"key": key, "size": 1024, "eTag": f"{folder:016X}{hour:016X}"},
                }
            },
        }
    )[0]


def seed_state(path: Path, rules: Any, gates: int, now: float) -> int:
    """Write a state file holding `gates` open gates, one file each; its size in bytes."""
    member = next(r for r in rules.rules if r.name == "nightly-load.hourly")
    plan = member.gate
    data: dict[str, Any] = {}
    for folder in range(gates):
        event = oss_event(folder, 0)
        key = plan.key.render({"event": event.doc, "rule": plan.rule.context})
        state, _ = record(None, plan.shape, key=key, member="hourly",
                          event_id=default_idempotency_key(event), event=event.doc, now=now)  # fmt: skip
        data[plan.state_key(key)] = state
    text = json.dumps(data, sort_keys=True, indent=1) + "\n"
    path.write_text(text)
    return len(text.encode())


def state_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


async def measure(work: Path, gates: int, events: int, seed: int = 1) -> dict[str, Any]:
    """`events` files into random ones of `gates` open gates; events/s and state bytes."""
    clock = VirtualClock()
    rules_path = work / "rules.yaml"
    rules_path.write_text(RULE)
    rules = load_rules([rules_path])
    state_dir = work / "state"
    state_dir.mkdir()
    seeded = await asyncio.to_thread(
        seed_state, state_dir / "state.json", rules, gates, clock.now().timestamp()
    )
    opened = time.monotonic()
    store = await FileStateStore.open(state_dir / "state.json")
    open_seconds = time.monotonic() - opened
    sink, dead = LocalSink(work / "workflows"), FileDeadLetterSink(work / "dead.jsonl")
    metrics = Metrics()
    submitter = Submitter(sink, dead, clock)
    pipeline = Pipeline(rules, submitter, dead, metrics, clock)
    pipeline.gates = GateKeeper(store, submitter, dead, clock, metrics)
    rng = random.Random(seed)
    picks = [oss_event(rng.randrange(gates), 1 + i % 23) for i in range(events)]
    try:
        started = time.perf_counter()
        for event in picks:
            await pipeline.handle(event)
        seconds = time.perf_counter() - started
    finally:
        closing = time.perf_counter()
        await store.close()  # folds the journal in: the pause a snapshot makes
        snapshot_seconds = time.perf_counter() - closing
        await sink.close()
        await dead.close()
    one = await (await FileStateStore.open(state_dir / "state.json")).get(
        (await store.keys("gate/nightly-load/"))[0]
    )
    total = state_bytes(state_dir)
    return {
        "gates": gates,
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds, 1),
        "open_seconds": round(open_seconds, 2),
        "snapshot_seconds": round(snapshot_seconds, 2),
        "state_file_bytes_seeded": seeded,
        "state_bytes_after": total,
        "state_bytes_per_open_gate": round(total / gates),
        "one_gate_key_json_bytes": len(json.dumps(one, separators=(",", ":"))),
    }


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    """The Kubernetes API emulator as a subprocess (its CPU is not the client's); its URL."""
    command = [sys.executable, "-m", "trigger.testing.kubeapi", "--port", "0"]
    command += ["--namespaces", "trigger", "--token", TOKEN]
    emulator = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert emulator.stdout is not None
    line = emulator.stdout.readline().strip()
    if not line.startswith("READY "):
        emulator.kill()
        raise RuntimeError(f"emulator did not start: {line!r}")
    return emulator, line.split()[1]


def stop_emulator(emulator: subprocess.Popen[str]) -> None:
    emulator.send_signal(signal.SIGTERM)
    emulator.wait(30)


async def measure_configmap(work: Path, gates: int, events: int, seed: int = 1) -> dict[str, Any]:
    """`measure` on the ConfigMap store, into the API emulator run as a subprocess."""
    emulator, url = start_emulator()
    config = client.Configuration(host=url)
    config.api_key = {"BearerToken": TOKEN}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    api = client.ApiClient(config)
    clock = VirtualClock()
    rules_path = work / "rules.yaml"
    rules_path.write_text(RULE)
    rules = load_rules([rules_path])
    store = ConfigMapStateStore(api, "trigger", "trigger-state", clock=clock)
    sink, dead = LocalSink(work / "workflows"), FileDeadLetterSink(work / "dead.jsonl")
    submitter = Submitter(sink, dead, clock)
    pipeline = Pipeline(rules, submitter, dead, Metrics(), clock)
    pipeline.gates = GateKeeper(store, submitter, dead, clock)
    try:
        opening = iter(range(gates))

        async def opener() -> None:
            for folder in opening:
                await pipeline.handle(oss_event(folder, 0))

        started = time.perf_counter()
        await asyncio.gather(*(opener() for _ in range(16)))
        open_seconds = time.perf_counter() - started
        rng = random.Random(seed)
        picks = [oss_event(rng.randrange(gates), 1 + i % 23) for i in range(events)]
        started = time.perf_counter()
        for event in picks:
            await pipeline.handle(event)
        seconds = time.perf_counter() - started
        listed = await client.CoreV1Api(api).list_namespaced_config_map("trigger")
        sizes = [len(item.data["value"].encode()) for item in listed.items if item.data]
    finally:
        await api.close()
        await sink.close()
        await dead.close()
        await asyncio.to_thread(stop_emulator, emulator)
    return {
        "store": "configmap",
        "gates": gates,
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds, 1),
        "gates_opened_per_s_16_at_once": round(gates / open_seconds, 1),
        "state_bytes_per_open_gate": round(sum(sizes) / len(sizes)),
    }


async def run(sizes: list[int], events: int, configmap_gates: int = 0) -> dict[str, Any]:
    found: dict[str, Any] = {"runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-gates-") as tmp:
        warm = Path(tmp) / "warm-up"  # first renders, imports: not the baseline's cost
        warm.mkdir()
        await measure(warm, BASELINE_GATES, min(events, 50))
        base = Path(tmp) / "baseline"
        base.mkdir()
        found["baseline"] = await measure(base, BASELINE_GATES, events)
        for gates in sizes:
            work = Path(tmp) / f"g{gates}"
            work.mkdir()
            run_ = await measure(work, gates, events)
            run_["ratio_to_baseline"] = round(
                run_["events_per_s"] / found["baseline"]["events_per_s"], 3
            )
            found["runs"].append(run_)
        if configmap_gates:
            work = Path(tmp) / "configmap"
            work.mkdir()
            found["configmap"] = await measure_configmap(work, configmap_gates, events)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.gates")
    parser.add_argument("--gates", default="1000,100000", help="open gates, comma-separated")
    parser.add_argument("--events", type=int, default=500, help="events measured per size")
    parser.add_argument("--configmap-gates", type=int, default=1000, help="0: skip")
    parser.add_argument("--out", type=Path, default=RESULTS / "gates.json")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.gates.split(",") if n]
    found = asyncio.run(run(sizes, args.events, args.configmap_gates))
    base = found["baseline"]
    print(f"baseline: {base['events_per_s']:,.0f} events/s into {base['gates']} open gates")
    for r in found["runs"]:
        print(
            f"{r['gates']:>7,} open gates: {r['events_per_s']:>8,.1f} events/s "
            f"({r['ratio_to_baseline']:.2f} of baseline), {r['state_bytes_per_open_gate']:,} "
            f"state bytes per open gate, store opened in {r['open_seconds']} s, "
            f"a snapshot takes {r['snapshot_seconds']} s"
        )
    if "configmap" in found:
        cm = found["configmap"]
        print(
            f"ConfigMap store, {cm['gates']:,} open gates: {cm['events_per_s']:,.1f} events/s, "
            f"{cm['state_bytes_per_open_gate']:,} bytes per open gate, opened at "
            f"{cm['gates_opened_per_s_16_at_once']:,.0f} gates/s (16 at once)"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(found, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
