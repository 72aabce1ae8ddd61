"""Benchmark: how late an idle daemon fires cron ticks (target: every tick within 1 s),
and what an idle cron rule costs in CPU.

Runs `trigger run` as a subprocess with one `* * * * * *` rule (a tick every second) and
the local sink, for DURATION seconds. For each Workflow file it reads the tick's
scheduledTime and the event's fireTime (both rendered into parameters) and the file's
modification time, and reports, over all ticks after the first: fire lag (fireTime -
scheduledTime), write lag (file written - scheduledTime), and whether every second got
exactly one Workflow. Then it runs a daemon whose one rule fires once a year for
IDLE_DURATION seconds and reports the CPU time its threads used meanwhile (from /proc,
Linux only). Writes tests/bench/results/cron.json.

Run: .venv/bin/python -m tests.bench.cron
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.daemon import DaemonProcess

RESULTS = Path(__file__).parent / "results"
DURATION = 30.0  # seconds of ticks measured
TARGET = 1.0  # seconds: every tick should fire within this
IDLE_DURATION = 20.0  # seconds of an idle daemon measured for CPU
IDLE_SCHEDULE = "0 3 1 1 *"  # once a year: the rule only waits
RULE = {
    "apiVersion": "trigger/v1",
    "kind": "Rule",
    "metadata": {"name": "every-second"},
    "spec": {
        "source": {"cron": {"schedules": ["* * * * * *"]}},
        "workflow": {
            "template": "tick",
            "namespace": "bench",
            "generateName": "tick-",
            "parameters": {
                "scheduled": "{{ event.scheduledTime }}",
                "fired": "{{ event.fireTime }}",
            },
        },
    },
}


def parse(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def measure(files: list[Path]) -> list[dict[str, float]]:
    rows = []
    for path in files:
        workflow = yaml.safe_load(path.read_text())
        parameters = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
        scheduled = parse(parameters["scheduled"])
        rows.append(
            {
                "scheduled": scheduled,
                "fire_lag": parse(parameters["fired"]) - scheduled,
                "write_lag": path.stat().st_mtime - scheduled,
            }
        )
    return sorted(rows, key=lambda row: row["scheduled"])


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def cpu_seconds(pid: int) -> float:
    """CPU time of a process's live threads so far, in nanoseconds' resolution (Linux
    /proc/PID/task/*/schedstat; /proc/PID/stat counts only in 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def idle_cpu() -> dict[str, float]:
    """CPU used by a daemon with one cron rule that only waits, over IDLE_DURATION."""
    rule = {**RULE, "metadata": {"name": "yearly"}}
    rule["spec"] = {**RULE["spec"], "source": {"cron": {"schedules": [IDLE_SCHEDULE]}}}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rules = workdir / "rules"
        rules.mkdir()
        (rules / "cron.yaml").write_text(yaml.safe_dump(rule))
        daemon = DaemonProcess(workdir, rules).start()
        try:
            assert daemon.process is not None
            time.sleep(2.0)  # let start-up work finish before measuring
            before = cpu_seconds(daemon.process.pid)
            time.sleep(IDLE_DURATION)  # the measuring window, not synchronization
            used = cpu_seconds(daemon.process.pid) - before
        finally:
            daemon.stop()
    return {
        "seconds": IDLE_DURATION,
        "cpu_ms": round(used * 1000, 2),
        "cpu_percent": round(used / IDLE_DURATION * 100, 4),
    }


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rules = workdir / "rules"
        rules.mkdir()
        (rules / "cron.yaml").write_text(yaml.safe_dump(RULE))
        daemon = DaemonProcess(workdir, rules).start()
        try:
            time.sleep(DURATION + 1.5)  # the benchmark's measuring window, not synchronization
        finally:
            daemon.stop()
        rows = measure(daemon.workflow_files())[1:]  # the first tick can meet start-up work
    seconds = [round(row["scheduled"]) for row in rows]
    result = {
        "ticks": len(rows),
        "one_per_second": seconds == list(range(seconds[0], seconds[0] + len(seconds))),
        "fire_lag": summary([row["fire_lag"] for row in rows]),
        "write_lag": summary([row["write_lag"] for row in rows]),
        "target_ms": TARGET * 1000,
        "within_target": max(row["write_lag"] for row in rows) < TARGET,
        "idle_cpu": idle_cpu(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cron.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
