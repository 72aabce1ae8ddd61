"""Benchmark: route + render throughput against 10, 1,000 and 10,000 rules, and load time.

A realistic mix: half the rules watch OSS buckets (a prefix and suffix each, some with a
numeric pattern, some with CEL), half watch Kafka topics (pattern on the value, some CEL).
Events are OSS puts and Kafka orders; most rules cannot match a given event. Prints
events/s per rule count, the cost ratio 10,000 / 10 rules (target ≤ 1.5), and the time to
load and compile 10,000 rules (target ≤ 2 s). Writes tests/bench/results/routing.json.

Run: .venv/bin/python -m tests.bench.routing
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trigger.decoders.kafka import decode_kafka_record
from trigger.decoders.oss import decode_eventbridge
from trigger.events import Event
from trigger.rules.loader import load_rules
from trigger.rules.render import render
from trigger.rules.router import RuleSet

RESULTS = Path(__file__).parent / "results"
RULES_PER_KEY = 10  # each bucket and topic has ~5 rules on it, whatever the total


def rule_yaml(i: int, spread: int) -> str:
    """Rule i; `spread` buckets/topics share the rules, so each has ~10 rules on it."""
    name = f"rule-{i}"
    if i % 2 == 0:
        bucket = f"bucket-{(i // 2) % spread}"
        filt = ""
        if i % 4 == 0:
            filt = f"  filter: {{pattern: {{size: [{{numeric: ['>', {i % 1000}]}}]}}}}\n"
        elif i % 6 == 0:
            filt = f"  filter: {{expr: 'event.size > {i % 500}'}}\n"
        return (
            f"apiVersion: trigger/v1\nkind: Rule\nmetadata: {{name: {name}}}\nspec:\n"
            f"  source: {{oss: {{bucket: {bucket}, events: ['ObjectCreated:*'], "
            f"key: {{prefix: 'in/p{i % 7}/', suffix: .csv}}}}}}\n{filt}"
            f"  workflow:\n    template: ingest\n    namespace: data\n    parameters:\n"
            f"      input: 'oss://{{{{ event.bucket }}}}/{{{{ event.key }}}}'\n"
            f"      table: t{i}\n"
        )
    topic = f"topic-{(i // 2) % spread}"
    filt = f"  filter:\n    pattern: {{value: {{type: [order.created], amount: [{{numeric: ['>=', {i % 300}]}}]}}}}\n"
    if i % 6 == 1:
        filt += f"    expr: 'event.value.currency == \"CNY\" && event.value.amount < {1000 + i}'\n"
    return (
        f"apiVersion: trigger/v1\nkind: Rule\nmetadata: {{name: {name}}}\nspec:\n"
        f"  source: {{kafka: {{topics: [{topic}]}}}}\n{filt}"
        f"  workflow:\n    template: fraud-check\n    namespace: risk\n    parameters:\n"
        f"      orderId: '{{{{ event.value.orderId }}}}'\n      amount: '{{{{ event.value.amount }}}}'\n"
    )


def write_rules(count: int, folder: Path) -> None:
    spread = max(1, count // RULES_PER_KEY)
    per_file = 500
    for start in range(0, count, per_file):
        docs = [rule_yaml(i, spread) for i in range(start, min(count, start + per_file))]
        (folder / f"rules-{start:05}.yaml").write_text("---\n".join(docs))


def events(count: int, spread: int, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    out: list[Event] = []
    for n in range(count):
        if n % 2 == 0:
            bucket = f"bucket-{rng.randrange(spread)}"
            key = f"in/p{rng.randrange(10)}/file-{n}.{rng.choice(['csv', 'json'])}"
            out.extend(
                decode_eventbridge(
                    {
                        "specversion": "1.0",
                        "id": f"ev-{n}",
                        "source": "acs.oss",
                        "type": "oss:ObjectCreated:PutObject",
                        "time": "2025-01-01T08:00:00Z",
                        "data": {
                            "eventName": "ObjectCreated:PutObject",
                            "region": "cn-hangzhou",
                            "eventTime": "2025-01-01T08:00:00Z",
                            "oss": {
                                "bucket": {"name": bucket, "ownerIdentity": "1"},
                                "object": {"key": key, "size": rng.randrange(2000), "eTag": "AB"},
                            },
                        },
                    }
                )
            )
        else:
            value = json.dumps(
                {
                    "type": rng.choice(["order.created", "order.paid"]),
                    "orderId": f"A-{n}",
                    "amount": rng.randrange(500),
                    "currency": rng.choice(["CNY", "USD"]),
                }
            )
            out.append(
                decode_kafka_record(
                    f"topic-{rng.randrange(spread)}",
                    n % 3,
                    n,
                    1735718400123,
                    b"k",
                    value.encode(),
                    [],
                )
            )
    return out


def measure(rules: RuleSet, sample: list[Event], rounds: int = 3) -> tuple[float, int]:
    best = float("inf")
    created = 0
    for _ in range(rounds):
        fresh = [
            Event(e.id, e.source, e.type, e.subject, e.time, e.data, e.fields, e.raw)
            for e in sample
        ]
        start = time.perf_counter()
        created = 0
        for event in fresh:
            for match in rules.route(event).matches:
                render(match.rule, match.event)
                created += 1
        best = min(best, time.perf_counter() - start)
    return best / len(sample), created


def run(
    counts: tuple[int, ...] = (10, 1_000, 10_000), sample_size: int = 20_000, rounds: int = 3
) -> dict[str, Any]:
    """Load each rule count, route + render `sample_size` events; the figures, printed."""
    figures: dict[str, Any] = {"rules": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            folder = Path(tmp) / str(count)
            folder.mkdir()
            write_rules(count, folder)
            start, cpu = time.perf_counter(), time.process_time()
            rules = load_rules([folder])
            load_s = time.perf_counter() - start
            load_cpu = time.process_time() - cpu
            spread = max(1, count // RULES_PER_KEY)
            sample = events(sample_size, spread)
            per_event, created = measure(rules, sample, rounds)
            if count == max(counts):
                figures["fresh_load"] = fresh_load(folder)
            figures["rules"][count] = {
                "load_seconds": round(load_s, 3),
                "load_cpu_seconds": round(load_cpu, 3),
                "events_per_second": round(1 / per_event),
                "microseconds_per_event": round(per_event * 1e6, 2),
                "workflows_per_sample": created,
            }
            print(
                f"{count:>6} rules: load {load_s:6.3f} s   route+render {1 / per_event:>9,.0f} events/s"
                f"   ({per_event * 1e6:6.2f} µs/event, {created} workflows per {len(sample)} events)"
            )
    most, fewest = max(counts), min(counts)
    ratio = (
        figures["rules"][most]["microseconds_per_event"]
        / figures["rules"][fewest]["microseconds_per_event"]
    )
    figures["cost_ratio"] = {"rules": [fewest, most], "ratio": round(ratio, 3), "target": 1.5}
    fresh = figures.pop("fresh_load")
    figures["load"] = {"rules": most, "seconds": fresh["seconds"], "cpu_seconds": fresh["cpu"],
                       "reload_seconds": figures["rules"][most]["load_seconds"],
                       "reload_cpu_seconds": figures["rules"][most]["load_cpu_seconds"],
                       "target_seconds": 2.0}  # fmt: skip
    print(f"cost({most:,} rules) / cost({fewest:,} rules) = {ratio:.2f}   (target ≤ 1.5)")
    load = figures["load"]
    print(f"load + compile {most:,} rules = {load['seconds']:.2f} s, {load['cpu_seconds']:.2f} s CPU"
          f" in a fresh process (target ≤ 2 s); {load['reload_cpu_seconds']:.2f} s CPU as a"
          " reload beside other rule sets")  # fmt: skip
    return figures


_FRESH = """
import json, sys, time
import trigger.daemon.assembly  # what `trigger run` has imported before it loads rules
from trigger.rules.loader import load_rules
start, cpu = time.perf_counter(), time.process_time()
load_rules([sys.argv[1]])
print(json.dumps({"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu}))
"""


def fresh_load(folder: Path) -> dict[str, float]:
    """Load `folder` in a new process, as `trigger run` does at start: its modules imported,
    no rules loaded before (the in-process figure follows other rule sets: a reload's)."""
    out = subprocess.run([sys.executable, "-c", _FRESH, str(folder)], check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    found = json.loads(out)
    return {"seconds": round(found["seconds"], 3), "cpu": round(found["cpu"], 3)}


def main() -> int:
    figures = run()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "routing.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
