"""One benchmark command: every part of issue 14's table, printed and written as JSON.

Each figure is a ratio or a distribution measured in the same run, against a yardstick
run beside it (a bare client, raw file creation, the same code with fewer rules), so the
table means the same on a busy machine as on an idle one; the machine's load is recorded
with it. The parts reuse the bench modules beside this one:

  routing  route + render cost, 10,000 rules over 10 (routing)         target ≤ 1.5×
           decision records: what they add to route + render (routing)     target ≤ 10 %
  load     load + compile 10,000 rules (routing)                        target ≤ 2 s
  kube     Kafka → daemon → emulator over a bare create loop, end to end
           from the first message produced to the last Workflow (kafka)  target ≥ 0.7
  local    Kafka → daemon → local sink over raw file creation with a
           sync per batch, median of 5 (kafka)                          target ≥ 80 %
  push     webhook / EventBridge push → Workflow, p50 and p99 over the
           bare create call, 200 senders (push)                         p99 ≤ 1.5×, p50 ≤ 3×
  rss      daemon RSS from ready to 1M events (kafka)                   target within 10 %
  scale    `kube` with two daemons in one group: their ratio, and the
           scale-out factor over one daemon (kafka)                     (reported)
  gates    gate members' events/s into 1,000 and 100,000 open gates on
           the file store (and 1,000 on ConfigMaps), state bytes per
           open gate (gates)                                            (reported)

Run: .venv/bin/python -m tests.bench [--quick] [--parts routing,load,...] [--out FILE]
     [--kube N] [--local N] [--local-runs N] [--senders N] [--each N] [--rss N]
     [--gate-events N]
Writes tests/bench/results/summary.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.bench import gates, kafka, push, routing
from trigger.testing.kafka import KafkaBroker

RESULTS = Path(__file__).parent / "results"
PARTS = ("routing", "load", "kube", "local", "push", "rss", "scale", "gates")
KAFKA_PARTS = {"kube", "local", "rss", "scale"}


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    part: str
    figure: str
    measured: str
    target: str
    met: bool | None  # None: reported, no target


@dataclass(frozen=True)
class Sizes:
    rules: tuple[int, ...]
    route_sample: int
    route_rounds: int
    kube: int
    local: int
    local_runs: int
    senders: int
    each: int
    rss: int
    open_gates: tuple[int, ...]
    gate_events: int
    configmap_gates: int


FULL = Sizes((10, 1_000, 10_000), 20_000, 3, 20_000, 60_000, 5, 200, 20, 1_000_000, (1_000, 100_000), 500, 1_000)  # fmt: skip
QUICK = Sizes((10, 100, 1_000), 2_000, 1, 300, 2_000, 1, 20, 3, 3_000, (1_000,), 100, 100)


def routing_rows(figures: dict[str, Any], parts: set[str]) -> list[Row]:
    rows = []
    if "routing" in parts:
        cost = figures["cost_ratio"]
        few, many = cost["rules"]
        rows.append(Row("routing", f"route+render cost, {many:,} rules / {few:,}",
                        f"{cost['ratio']:.2f}×", "≤ 1.5×", cost["ratio"] <= 1.5))  # fmt: skip
        # Judged on route+render with and without the records (interleaved rounds: noisy
        # on a shared machine); the records' own cost, measured alone, is shown beside it.
        over = figures["record_overhead"]
        rows.append(Row("routing", "decision records: route+render slower by (worst)",
                        f"{over['worst'] * 100:+.1f} % (alone {over['alone'] * 100:+.1f} %)",
                        "≤ 10 %", over["worst"] <= 0.10))  # fmt: skip
    if "load" in parts:
        load = figures["load"]
        # Wall time on a shared machine is the scheduler's as much as ours: met? is judged
        # on the CPU seconds the load used, and both are shown.
        rows.append(Row("load", f"load + compile {load['rules']:,} rules",
                        f"{load['cpu_seconds']:.2f} s CPU ({load['seconds']:.2f} s wall)",
                        "≤ 2 s", load["cpu_seconds"] <= 2.0))  # fmt: skip
    return rows


def kube_rows(part: str, found: dict[str, Any]) -> list[Row]:
    daemons = found["daemons"]
    label = "1 daemon" if daemons == 1 else f"{daemons} daemons"
    return [Row(part, f"Kafka → {label} → emulator / bare loop ({found['messages']:,} msgs)",
                f"{found['ratio']:.2f} ({found['daemon_workflows_per_s']:,.0f} vs "
                f"{found['bare_creates_per_s']:,.0f}/s)", "≥ 0.7", found["ratio"] >= 0.7)]  # fmt: skip


def local_rows(found: dict[str, Any]) -> list[Row]:
    rates = sorted(r["daemon_workflows_per_s"] for r in found["runs"])
    return [Row("local", f"Kafka → local sink / raw files, median of {len(found['runs'])}",
                f"{found['share_median']:.0%} ({found['share_min']:.0%}–{found['share_max']:.0%};"
                f" daemon {rates[len(rates) // 2]:,.0f}/s)", "≥ 80 %",
                found["share_median"] >= 0.8)]  # fmt: skip


def push_rows(found: dict[str, Any]) -> list[Row]:
    rows = []
    bare = found["bare"]
    for kind in ("webhook", "eventbridge"):
        got = found[kind]
        for cut, target in (("p50", 3.0), ("p99", 1.5)):
            ratio = got[f"{cut}_ratio"]
            rows.append(Row("push", f"{kind} → Workflow {cut}, {found['senders']} senders / bare",
                            f"{ratio:.2f}× ({got[f'{cut}_ms']:.0f} vs {bare[f'{cut}_ms']:.0f} ms)",
                            f"≤ {target}×", ratio <= target))  # fmt: skip
    return rows


def gates_rows(found: dict[str, Any]) -> list[Row]:
    base = found["baseline"]
    rows = []
    for run_ in found["runs"]:
        rows.append(Row("gates", f"gate events/s into {run_['gates']:,} open gates (file store)",
                        f"{run_['events_per_s']:,.0f}/s ({run_['ratio_to_baseline']:.2f}× of "
                        f"{base['gates']} gates: {base['events_per_s']:,.0f}/s)", "(reported)",
                        None))  # fmt: skip
        rows.append(Row("gates", f"state bytes per open gate, {run_['gates']:,} gates",
                        f"{run_['state_bytes_per_open_gate']:,} B (one key "
                        f"{run_['one_gate_key_json_bytes']:,} B JSON)", "(reported)", None))  # fmt: skip
    if "configmap" in found:
        cm = found["configmap"]
        rows.append(Row("gates", f"gate events/s into {cm['gates']:,} open gates (ConfigMaps)",
                        f"{cm['events_per_s']:,.0f}/s ({cm['state_bytes_per_open_gate']:,} B "
                        "per gate)", "(reported)", None))  # fmt: skip
    return rows


def rss_rows(found: dict[str, Any]) -> list[Row]:
    growth = found["growth_from_ready"]
    return [Row("rss", f"RSS, ready → {found['messages']:,} events",
                f"{growth:+.1%} ({found['rss_mb_ready']} → {found['rss_mb_end']} MB; "
                f"after warm-up {found['growth_after_warm_up']:+.1%})", "within 10 %",
                abs(growth) <= 0.10)]  # fmt: skip


async def kafka_parts(
    sizes: Sizes, parts: set[str], work: Path
) -> tuple[dict[str, Any], list[Row]]:
    found: dict[str, Any] = {}
    rows: list[Row] = []
    async with KafkaBroker() as broker:
        if "kube" in parts or "scale" in parts:
            found["kube"] = await kafka.end_to_end(broker, work, sizes.kube, 1, {})
            rows += kube_rows("kube", found["kube"])
        if "scale" in parts:
            found["scale"] = two = await kafka.end_to_end(broker, work, sizes.kube, 2, {})
            rows += kube_rows("scale", two)
            factor = two["daemon_workflows_per_s"] / found["kube"]["daemon_workflows_per_s"]
            two["scale_out_factor"] = round(factor, 2)
            rows.append(Row("scale", "scale-out: 2 daemons / 1 daemon (Workflows/s)",
                            f"{factor:.2f}×", "(reported)", None))  # fmt: skip
        if "local" in parts:
            found["local"] = await kafka.local_vs_raw(
                broker, work, sizes.local, sizes.local_runs, {}
            )
            rows += local_rows(found["local"])
        if "rss" in parts:
            found["rss"] = await kafka.rss_side(broker, work, sizes.rss, {})
            rows += rss_rows(found["rss"])
    return found, rows


def machine_load() -> dict[str, Any]:
    one, five, fifteen = os.getloadavg()
    return {
        "cores": os.cpu_count(),
        "load_average": [round(one, 2), round(five, 2), round(fifteen, 2)],
    }


def run(sizes: Sizes, parts: set[str], quick: bool) -> dict[str, Any]:
    started = time.monotonic()
    summary: dict[str, Any] = {"quick": quick, "sizes": asdict(sizes), "parts": sorted(parts),
                               "load_before": machine_load(), "python": sys.version.split()[0]}  # fmt: skip
    rows: list[Row] = []
    details: dict[str, Any] = {}
    if parts & {"routing", "load"}:
        details["routing"] = routing.run(sizes.rules, sizes.route_sample, sizes.route_rounds)
        rows += routing_rows(details["routing"], parts)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        if parts & KAFKA_PARTS:
            found, kafka_rows = asyncio.run(kafka_parts(sizes, parts, work))
            details.update(found)
            rows += kafka_rows
        if "push" in parts:
            details["push"] = asyncio.run(push.measure(work, sizes.senders, sizes.each))
            rows += push_rows(details["push"])
        if "gates" in parts:
            details["gates"] = asyncio.run(
                gates.run(list(sizes.open_gates), sizes.gate_events, sizes.configmap_gates)
            )
            rows += gates_rows(details["gates"])
    order: Callable[[Row], int] = lambda row: PARTS.index(row.part)  # noqa: E731
    summary["rows"] = [asdict(r) for r in sorted(rows, key=order)]
    summary["details"] = details
    summary["load_after"] = machine_load()
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def table(summary: dict[str, Any]) -> str:
    header = ("figure", "measured", "target", "met?")
    lines = [
        (r["figure"], r["measured"], r["target"],
         "—" if r["met"] is None else ("yes" if r["met"] else "NO"))
        for r in summary["rows"]
    ]  # fmt: skip
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(4)]
    out = [" | ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(c.ljust(w) for c, w in zip(x, widths, strict=True)) for x in lines]
    before, after = summary["load_before"], summary["load_after"]
    out.append(f"{before['cores']} cores; load average {before['load_average']} before, "
               f"{after['load_average']} after; {summary['seconds']} s")  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated of {PARTS}")
    parser.add_argument("--out", type=Path, default=RESULTS / "summary.json")
    for name in ("kube", "local", "local_runs", "senders", "each", "rss", "gate_events"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help="overrides the size")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if unknown := parts - set(PARTS):
        parser.error(f"unknown parts: {sorted(unknown)}")
    sizes = QUICK if args.quick else FULL
    overrides = {k: v for k in ("kube", "local", "local_runs", "senders", "each", "rss", "gate_events")
                 if (v := getattr(args, k)) is not None}  # fmt: skip
    sizes = Sizes(**(asdict(sizes) | overrides))
    summary = run(sizes, parts, args.quick)
    print(table(summary))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
