"""Benchmark: `trigger backfill` of 10,000 cron ticks, into the emulator and the local sink.

(a) kube: `trigger backfill` (the CLI's `main`, in a thread of this process, so the
    interpreter's start-up is not counted) of a `* * * * *` rule over 10,000 minutes into
    the Kubernetes API emulator, `--parallel 16`, against the bare kubernetes_asyncio
    create loop (16 in flight, trust_env off) run before and after it into the same
    emulator; target: backfill / bare ≥ 0.7. The default `--parallel 4` is measured too.
(b) local: the same backfill into the local sink against raw file creation of the same
    bytes with one sync per 4,096 files, both timed by the files' mtimes, first to last.

Run: .venv/bin/python -m tests.bench.backfill [--count N]
Writes tests/bench/results/backfill.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from tests.bench.kafka import (
    IN_FLIGHT,
    RESULTS,
    bare_rate,
    kube_env,
    raw_files,
    start_emulator,
    written_rate,
)
from trigger.cli import main as cli

START = datetime(2025, 1, 1, tzinfo=UTC)


def write_rule(work: Path) -> Path:
    rule = {
        "apiVersion": "trigger/v1",
        "kind": "Rule",
        "metadata": {"name": "minutely"},
        "spec": {
            "source": {"cron": {"schedules": ["* * * * *"]}},
            "workflow": {
                "template": "process",
                "namespace": "default",
                "parameters": {"n": "{{ event.scheduledTime }}", "key": "{{ event.rule }}"},
            },
        },
    }
    path = work / "rules.yaml"
    path.write_text(yaml.safe_dump(rule))
    return path


async def backfill(rules: Path, sink: str, count: int, parallel: int, name: str = "minutely") -> float:
    """Runs the CLI over `count` ticks; returns the wall seconds it took."""
    end = START + timedelta(minutes=count - 1)
    argv = ["backfill", name, "--rules", str(rules), "--sink", sink,
            "--from", START.isoformat(), "--to", end.isoformat(), "--parallel", str(parallel),
            "--dead-letter", f"file:{rules.parent / 'dead.jsonl'}"]  # fmt: skip
    started = time.perf_counter()
    code = await asyncio.to_thread(cli, argv)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"backfill exited {code}")
    return seconds


async def kube_side(work: Path, count: int) -> dict[str, Any]:
    process, url = start_emulator()
    try:
        os.environ.update(await kube_env(url, work))
        rules = write_rule(work)
        before = await bare_rate(url, count, trust_env=False, prefix="before")
        seconds = await backfill(rules, "kubernetes", count, IN_FLIGHT)
        after = await bare_rate(url, count, trust_env=False, prefix="after")
        # The default --parallel, on fresh names: a second rule file under another name.
        text = rules.read_text().replace("minutely", "minutely4")
        other = work / "four"
        other.mkdir()
        (other / "rules.yaml").write_text(text)
        seconds4 = await backfill(other / "rules.yaml", "kubernetes", count, 4, "minutely4")
        # Without the flow controller: how much of the gap is its slow start from 50/s.
        os.environ["TRIGGER_FLOW__ENABLED"] = "false"
        try:
            (other / "rules.yaml").write_text(text.replace("minutely4", "noflow"))
            seconds_free = await backfill(other / "rules.yaml", "kubernetes", count, IN_FLIGHT,
                                          "noflow")  # fmt: skip
        finally:
            del os.environ["TRIGGER_FLOW__ENABLED"]
    finally:
        process.kill()
        process.wait()
    bare = 2 / (1 / before + 1 / after)
    rate = count / seconds
    return {"count": count, "parallel": IN_FLIGHT, "backfill_creates_per_s": round(rate, 1),
            "bare_creates_per_s": round(bare, 1),
            "bare_before_after": [round(before, 1), round(after, 1)],
            "ratio": round(rate / bare, 3), "target_ratio": 0.7,
            "parallel_4_creates_per_s": round(count / seconds4, 1),
            "ratio_parallel_4": round(count / seconds4 / bare, 3),
            "flow_off_creates_per_s": round(count / seconds_free, 1),
            "ratio_flow_off": round(count / seconds_free / bare, 3)}  # fmt: skip


async def local_side(work: Path, count: int) -> dict[str, Any]:
    rules = write_rule(work)
    seconds = await backfill(rules, f"local:{work / 'wf'}", count, IN_FLIGHT)
    rate, texts = written_rate(work / "wf")
    await asyncio.to_thread(raw_files, work / "raw", texts)
    raw, _ = written_rate(work / "raw")
    return {"count": count, "backfill_files_per_s": round(rate, 1),
            "backfill_wall_per_s": round(count / seconds, 1),
            "raw_files_per_s": round(raw, 1), "share_of_raw": round(rate / raw, 3)}  # fmt: skip


async def measure(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as kube_dir, tempfile.TemporaryDirectory() as local_dir:
        kube = await kube_side(Path(kube_dir), count)
        local = await local_side(Path(local_dir), count)
    return {"kube": kube, "local": local, "load_average": os.getloadavg()}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.backfill")
    parser.add_argument("--count", type=int, default=10_000, help="cron ticks (default 10,000)")
    figures = asyncio.run(measure(parser.parse_args().count))
    kube, local = figures["kube"], figures["local"]
    print(f"backfill -> emulator:  {kube['backfill_creates_per_s']:8.1f} creates/s "
          f"(--parallel {kube['parallel']}); --parallel 4: {kube['parallel_4_creates_per_s']}")
    print(f"bare create loop:      {kube['bare_creates_per_s']:8.1f} creates/s")
    print(f"ratio:                 {kube['ratio']:8.3f}  (target >= 0.7); flow control off: "
          f"{kube['ratio_flow_off']}")  # fmt: skip
    print(f"backfill -> local:     {local['backfill_files_per_s']:8.1f} files/s; raw "
          f"{local['raw_files_per_s']} files/s; share {local['share_of_raw']}")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "backfill.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if kube["ratio"] >= kube["target_ratio"] else 1


if __name__ == "__main__":
    sys.exit(main())
