"""API faults in the middle of a Kafka stream: nothing lost, nothing doubled.

A producer sends a steady stream into one topic; once the daemon has made Workflows of a
part of it, the Kubernetes API emulator (a subprocess) answers every Workflow create with
500, then with 429 and `Retry-After: 1`, then stores the object and drops the answer —
each phase a third of the storm (30 s under `pytest --long`, 6 s by default) — and then
recovers. The stream stops at the recovery; every record then has exactly one Workflow
and no record is dead-lettered.

The time from the recovery to the last Workflow of the backlog is printed and written to
tests/bench/results/api_faults.json (a figure, never asserted: speed belongs in benches).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.e2e.harness import (
    Broker,
    Delivered,
    Emulator,
    Harness,
    cpu_seconds,
    wait_for_workflows,
)

RESULTS = Path(__file__).parent.parent / "bench" / "results"
TOPIC = "stream"
PARTITIONS = 6
RATE = 100.0  # records a second
RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: stream}
spec:
  source: {kafka: {topics: [stream], format: json}}
  workflow: {template: process, namespace: default, parameters: {n: "{{ event.value.n }}"}}
"""
PHASES = ("500", "429 with Retry-After", "answers lost after the object is stored")


def stream_through_storm(
    harness: Harness, emulator: Emulator, broker: Broker, phase_seconds: float
) -> tuple[list[Delivered], float]:
    """Produce RATE records a second; after the first Workflows, step the emulator through
    the storm's phases; stop at the recovery. The records and the recovery's time."""
    producer = harness.producer(broker)
    delivered: list[Delivered] = []
    started = time.monotonic()
    storm_at: float | None = None
    phase = 0
    while True:
        due = int((time.monotonic() - started) * RATE) - len(delivered)
        n = len(delivered)
        batch = [(i % PARTITIONS, None, json.dumps({"n": i}).encode()) for i in range(n, n + due)]
        delivered += producer.produce(TOPIC, batch)
        if storm_at is None and len(delivered) >= RATE:  # a second of stream made...
            wait_for_workflows(emulator, int(RATE / 2))  # ...and half of it is Workflows
            storm_at = time.monotonic()
        if storm_at is not None and time.monotonic() >= storm_at + phase * phase_seconds:
            emulator.storm()  # 500 → 429 → lost → calm
            phase += 1
            if phase == len(PHASES) + 1:
                return delivered, time.monotonic()
        time.sleep(1 / RATE)  # pacing the producer, not synchronization


def no_fault_seconds(
    harness: Harness, emulator: Emulator, broker: Broker, start: int, count: int
) -> float:
    """The time the daemon takes for `count` records produced at once with the API calm:
    what clearing the storm's backlog costs by throughput alone, in the same run."""
    batch = [
        (i % PARTITIONS, None, json.dumps({"n": i}).encode()) for i in range(start, start + count)
    ]
    harness.producer(broker).produce(TOPIC, batch)
    produced = time.monotonic()
    wait_for_workflows(emulator, start + count, timeout=300)
    return time.monotonic() - produced


def test_api_storm_loses_and_doubles_nothing(harness: Harness, long_run: bool) -> None:
    """500s, 429s and lost answers in the middle of a stream: every record has exactly
    one Workflow afterwards, none extra, none dead-lettered."""
    storm_seconds = 30.0 if long_run else 6.0
    broker = harness.broker({TOPIC: PARTITIONS})
    emulator = harness.emulator()
    emulator.add_template("process")
    daemon = harness.daemon("d1", RULE, emulator, broker)

    delivered, recovered = stream_through_storm(
        harness, emulator, broker, storm_seconds / len(PHASES)
    )
    # The timeline after the recovery: the first new Workflow (the flow controller's next
    # probe succeeds and wakes every waiting create), then the backlog worked off.
    backlog = len(delivered) - emulator.workflow_count()
    cpu = cpu_seconds(daemon.pid), cpu_seconds(emulator.pid)
    wait_for_workflows(emulator, len(delivered) - backlog + 1, timeout=300)
    first = time.monotonic() - recovered
    wait_for_workflows(emulator, len(delivered), timeout=300)
    cleared = time.monotonic() - recovered
    daemon_cpu, emulator_cpu = (
        cpu_seconds(p) - c for p, c in zip((daemon.pid, emulator.pid), cpu, strict=True)
    )

    found = emulator.workflows()
    wanted = {("stream", d.event_id): 1 for d in delivered}
    missing = [k for k in wanted if k not in found]
    assert found == wanted, f"missing {len(missing)} {missing[:5]}, found {len(found)}"
    assert not (daemon.dead_letters.exists() and daemon.dead_letters.read_text())
    phases = [line for line in emulator.log_path.read_text().splitlines() if "storm" in line]
    assert phases == [f"storm phase: {p}" for p in ("500", "429", "lost", "calm")]
    redone = sum(
        e.get("event") == "workflow already exists (redelivery)" for e in daemon.log_events()
    )
    assert redone > 0, "no lost answer was retried: the storm's last phase did not bite"
    calm = no_fault_seconds(harness, emulator, broker, len(delivered), backlog)
    figures = {
        # To read the daemon's log against: when the emulator was told to recover.
        "recovered_at": time.strftime(
            "%H:%M:%S", time.gmtime(time.time() - (time.monotonic() - recovered))
        ),
        "storm_seconds": storm_seconds,
        "records": len(delivered),
        "records_per_s": RATE,
        "lost_answers_found_on_retry": redone,
        "backlog_at_recovery": backlog,
        "seconds_from_recovery_to_first_workflow": round(first, 2),
        "seconds_from_recovery_to_backlog_cleared": round(cleared, 2),
        "backlog_workflows_per_s": round((backlog - 1) / max(cleared - first, 1e-6), 1),
        # On a shared machine the wall times follow the load; CPU seconds do not.
        "daemon_cpu_seconds_clearing": round(daemon_cpu, 2),
        "emulator_cpu_seconds_clearing": round(emulator_cpu, 2),
        "same_backlog_without_faults_seconds": round(calm, 2),
        "target_seconds": 5.0,
    }
    print(json.dumps(figures))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "api_faults_long.json" if long_run else "api_faults.json"
    (RESULTS / name).write_text(json.dumps(figures, indent=2) + "\n")
