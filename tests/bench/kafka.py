"""Benchmark: Kafka → `trigger run` (a subprocess) → sinks, on one tansu broker.

(a) Workflows/s from Kafka through the daemon into the Kubernetes API emulator (a
    subprocess), against a bare kubernetes_asyncio create loop into the same emulator at
    the same concurrency (the daemon's `submit.max_in_flight`), and their ratio (target
    ≥ 0.7). The daemon's client-side limiter is set out of reach, as in sink_kubernetes.
(b) Workflows/s from Kafka to the local sink (target ≥ 5,000/s), with 4,096 records in
    flight per partition (`max_in_flight_per_partition`; the default, 100, is sized for
    the kubernetes sink — see the README's Kafka section).
(c) The daemon's RSS when ready, after a warm-up, and after N messages (target: flat
    within 10 % after the warm-up), with the stdout sink sent to /dev/null so the figure
    is the daemon's and not the disk's.
(d) The same stream on 6 and on 64 partitions, Kafka → daemon → Kubernetes API emulator
    with default windows (100 per partition): the daemon's peak RSS over its RSS when
    ready, and the most records it held in flight. With the default `kafka.max_in_flight`
    (8,192) the 64 partitions hold 6,400 and need more memory; with
    `--set TRIGGER_KAFKA__MAX_IN_FLIGHT=600` (what 6 partitions hold) both peak alike.

Rates are measured inside the daemon's steady state: messages are produced before it
starts, and the clock runs from its first created Workflow to its last (read from its
/metrics), so start-up and the group join are not counted.

For `python -m tests.bench` (which runs them): `end_to_end` times Kafka → one or two
daemons in one group → the emulator from the first message produced to the last Workflow
created, against the bare loop before and after it; `local_vs_raw` sets (b) against raw
file creation of the same bytes with one sync per batch, run after run; (c) also reports
the growth from ready.

Run: .venv/bin/python -m tests.bench.kafka [--local N] [--kube N] [--rss N] [--spread N]
         [--parts abcd] [--set TRIGGER_X=VALUE ...]
On a shared machine (b) follows other processes' disk writes (its sink syncs per batch):
with TMPDIR=/dev/shm the sink is on a RAM-backed file system and (b) times the daemon's own
work. (b) also reports the CPU seconds the daemon used, which varies less than its rate.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from trigger.submit.filewriter import sync_filesystem
from trigger.testing.kafka import KafkaBroker, free_port

RESULTS = Path(__file__).parent / "results"
IN_FLIGHT = 16
LOCAL_WINDOW = 4096  # (b): records in flight per partition
PARTITIONS = 3
SPREAD = (6, 64)  # (d): partition counts compared
TEMPLATE = {
    "apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTemplate",
    "metadata": {"name": "process", "namespace": "default"},
    "spec": {"entrypoint": "main", "arguments": {"parameters": [{"name": "n"}, {"name": "key"}]},
             "templates": [{"name": "main", "container": {"image": "busybox"}}]},
}  # fmt: skip


def rule(topic: str) -> dict[str, Any]:
    return {
        "apiVersion": "trigger/v1", "kind": "Rule", "metadata": {"name": f"bench-{topic}"},
        "spec": {"source": {"kafka": {"topics": [topic]}},
                 "workflow": {"template": "process", "namespace": "default",
                              "generateName": f"{topic}-",
                              "parameters": {"n": "{{ event.value.n }}", "key": "{{ event.key }}"}}},
    }  # fmt: skip


async def produce(
    bootstrap: str, topic: str, count: int, start: int = 0, partitions: int = PARTITIONS
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        for chunk in _chunks(range(start, start + count), 5000):
            sent = [
                await producer.send(topic, json.dumps({"n": i, "kind": "order"}).encode(),
                                    key=f"k{i}".encode(), partition=i % partitions)
                for i in chunk
            ]  # fmt: skip
            await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _chunks(items: range, size: int) -> Iterator[range]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Daemon:
    """`trigger run` with its own config and directory: on one topic with its own group, or
    on the `rules` given (then with Kafka only when `bootstrap` is given)."""

    def __init__(self, work: Path, bootstrap: str | None, topic: str, sink: str,
                 env: dict[str, str] | None = None, *,
                 rules: list[dict[str, Any]] | None = None) -> None:  # fmt: skip
        self.work, self.port = work, free_port()
        work.mkdir(parents=True, exist_ok=True)
        (work / "rules.yaml").write_text(yaml.safe_dump_all(rules or [rule(topic)]))
        config: dict[str, Any] = {
            "submit": {"max_in_flight": IN_FLIGHT},
            "log": {"level": "warning"},
        }
        if bootstrap:
            cluster = {"bootstrap_servers": bootstrap, "group": f"bench-{topic}",
                       "auto_offset_reset": "earliest", "session_timeout": "2s",
                       "heartbeat_interval": "300ms"}  # fmt: skip
            config["kafka"] = {"clusters": {"default": cluster}}
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "trigger.cli", "run", "--config", str(work / "config.yaml"),
                   "--rules", str(work / "rules.yaml"), "--sink", sink,
                   "--listen", f"127.0.0.1:{self.port}", "--state", f"file:{work / 'state.json'}",
                   "--dead-letter", f"file:{work / 'dead.jsonl'}"]  # fmt: skip
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGER_")}
        environ.update({"TRIGGER_LOG__FORMAT": "json", **(env or {})})
        self.log = (work / "daemon.log").open("wb")
        self.process = subprocess.Popen(
            command, cwd=work, env=environ, stdout=subprocess.DEVNULL, stderr=self.log
        )

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def created(self) -> float:
        try:
            return self.metric("trigger_workflows_total", outcome="created")
        except OSError:
            return -1.0

    def partitions(self) -> int:
        """How many partitions this daemon holds now (0 before it joined its group)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return 0
        return sum(
            1
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "trigger_kafka_partition_in_flight"
        )

    def rss_mb(self, field: str = "VmRSS") -> float:
        """Resident memory now, or its peak so far with `field="VmHWM"`."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith(f"{field}:"))
        return int(line.split()[1]) / 1024

    def cpu_s(self) -> float:
        """CPU seconds the daemon process itself has used (user + system)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def wait_up(self, within: float = 60.0) -> None:
        """Until the HTTP server answers (the group join comes after)."""
        end = time.monotonic() + within
        while self.created() < 0:
            if time.monotonic() > end:
                raise TimeoutError("daemon did not start")
            await asyncio.sleep(0.05)

    async def wait_created(self, count: int, within: float = 900.0) -> tuple[float, float]:
        """Times of the first created Workflow and of the `count`-th (monotonic seconds)."""
        first = None
        end = time.monotonic() + within
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited: see {self.work / 'daemon.log'}")
            done = await asyncio.to_thread(self.created)
            now = time.monotonic()
            if first is None and done > 0:
                first = now
            if done >= count:
                assert first is not None
                return first, now
            await asyncio.sleep(0.1)  # polling /metrics costs the daemon CPU: not too often
        raise TimeoutError(f"{count} workflows not created in {within}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


async def rate_through(daemon: Daemon, count: int) -> float:
    first, last = await daemon.wait_created(count)
    # Both ends are seen by polling, so each may be up to one interval late; over thousands
    # of messages that error is small and falls on both ends alike.
    return (count - 1) / max(last - first, 1e-6)


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "trigger.testing.kubeapi", "--port", "0", "--namespaces", "default"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("READY "):
        process.kill()
        raise RuntimeError(f"emulator did not start: {line!r}")
    return process, line.split()[1]


async def bare_rate(url: str, count: int, *, trust_env: bool = True, prefix: str = "bare") -> float:
    """A bare kubernetes_asyncio create loop, IN_FLIGHT workers. `trust_env=False` gives it
    the session setting the kubernetes sink uses, for a like-for-like comparison."""
    from kubernetes_asyncio import client

    config = client.Configuration(host=url)
    config.connection_pool_maxsize = 64
    api = client.ApiClient(config)
    api.rest_client.pool_manager._trust_env = trust_env
    custom = client.CustomObjectsApi(api)
    names = (f"{prefix}-{i:07d}" for i in itertools.count())

    async def worker() -> None:
        for name in names:
            if int(name.rsplit("-", 1)[1]) >= count:
                return
            body = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                    "metadata": {"name": name, "namespace": "default",
                                 "labels": {"trigger.dev/rule": "bench"}},
                    "spec": {"workflowTemplateRef": {"name": "process"},
                             "arguments": {"parameters": [{"name": "n", "value": name}]}}}  # fmt: skip
            await custom.create_namespaced_custom_object(
                "argoproj.io", "v1alpha1", "default", "workflows", body, _request_timeout=10
            )

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return count / (time.perf_counter() - started)
    finally:
        await api.close()


async def kube_env(url: str, work: Path) -> dict[str, str]:
    """Seed the emulator with the template; the daemon's environment to use it, unthrottled."""
    from kubernetes_asyncio import client

    api = client.ApiClient(client.Configuration(host=url))
    await client.CustomObjectsApi(api).create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "default", "workflowtemplates", TEMPLATE
    )
    await api.close()
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "e",
        "clusters": [{"name": "e", "cluster": {"server": url}}],
        "users": [{"name": "e", "user": {}}],
        "contexts": [{"name": "e", "context": {"cluster": "e", "user": "e"}}]}))  # fmt: skip
    return {"TRIGGER_KUBERNETES__KUBECONFIG": str(kubeconfig),
            "TRIGGER_KUBERNETES__QPS": "1000000", "TRIGGER_KUBERNETES__BURST": "100000"}  # fmt: skip


async def kube_side(
    broker: KafkaBroker, work: Path, count: int, extra: dict[str, str]
) -> dict[str, Any]:
    process, url = start_emulator()
    try:
        env = await kube_env(url, work)
        await broker.create_topics({"kube": PARTITIONS})
        await produce(broker.bootstrap, "kube", count)
        daemon = Daemon(work / "kube", broker.bootstrap, "kube", "kubernetes", env | extra)
        try:
            daemon_rate = await rate_through(daemon, count)
        finally:
            daemon.stop()
        bare = await bare_rate(url, count)
        bare_tuned = await bare_rate(url, count, trust_env=False, prefix="tuned")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    return {"messages": count, "in_flight": IN_FLIGHT,
            "daemon_workflows_per_s": round(daemon_rate, 1),
            "bare_creates_per_s": round(bare, 1), "ratio": round(daemon_rate / bare, 3),
            "bare_trust_env_off_creates_per_s": round(bare_tuned, 1),
            "ratio_vs_trust_env_off": round(daemon_rate / bare_tuned, 3),
            "target_ratio": 0.7}  # fmt: skip


async def local_side(
    broker: KafkaBroker, work: Path, count: int, extra: dict[str, str]
) -> dict[str, Any]:
    await broker.create_topics({"local": PARTITIONS})
    await produce(broker.bootstrap, "local", count)
    # The local sink writes a batch per request to its writer process, with one sync per
    # batch: a window of one full batch (4,096) per partition keeps the writer fed.
    tuning = {"TRIGGER_KAFKA__CLUSTERS__DEFAULT__MAX_IN_FLIGHT_PER_PARTITION": str(LOCAL_WINDOW)}
    daemon = Daemon(work / "local", broker.bootstrap, "local", f"local:{work / 'local' / 'wf'}",
                    env=tuning | extra)  # fmt: skip
    try:
        rate = await rate_through(daemon, count)
        cpu = daemon.cpu_s()
    finally:
        daemon.stop()
    return {"messages": count, "max_in_flight_per_partition": LOCAL_WINDOW,
            "workflows_per_s": round(rate, 1), "target_per_s": 5000,
            "daemon_cpu_s": round(cpu, 2)}  # fmt: skip


async def rss_side(
    broker: KafkaBroker, work: Path, count: int, extra: dict[str, str]
) -> dict[str, Any]:
    warm = max(1, min(20_000, count // 10))
    await broker.create_topics({"rss": PARTITIONS})
    daemon = Daemon(work / "rss", broker.bootstrap, "rss", "stdout", extra)
    try:
        ready_at = time.monotonic()
        while daemon.created() < 0:  # the HTTP server is up
            await asyncio.sleep(0.05)
            if time.monotonic() - ready_at > 60:
                raise TimeoutError("daemon did not start")
        await joined([daemon])
        start_rss = daemon.rss_mb()
        await produce(broker.bootstrap, "rss", warm)
        await daemon.wait_created(warm)
        warm_rss = daemon.rss_mb()
        samples = []
        for done in range(warm, count, 50_000):
            step = min(50_000, count - done)
            await produce(broker.bootstrap, "rss", step, start=done)
            await daemon.wait_created(done + step)
            samples.append((done + step, round(daemon.rss_mb(), 1)))
        end_rss = daemon.rss_mb()
    finally:
        daemon.stop()
    growth = (end_rss - warm_rss) / warm_rss
    return {"messages": count, "warm_up_messages": warm, "rss_mb_ready": round(start_rss, 1),
            "growth_from_ready": round((end_rss - start_rss) / start_rss, 3),
            "rss_mb_after_warm_up": round(warm_rss, 1), "rss_mb_end": round(end_rss, 1),
            "samples": samples, "growth_after_warm_up": round(growth, 3),
            "target_growth": 0.10}  # fmt: skip


async def spread_side(
    broker: KafkaBroker, work: Path, count: int, extra: dict[str, str]
) -> dict[str, Any]:
    """(d): one stream, spread over 6 and then 64 partitions, default Kafka settings."""
    process, url = start_emulator()
    try:
        env = await kube_env(url, work)
        runs = {}
        for partitions in SPREAD:
            topic = f"spread{partitions}"
            await broker.create_topics({topic: partitions})
            await produce(broker.bootstrap, topic, count, partitions=partitions)
            daemon = Daemon(work / topic, broker.bootstrap, topic, "kubernetes", env | extra)
            try:
                runs[str(partitions)] = await spread_run(daemon, count)
            finally:
                daemon.stop()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    few, many = (runs[str(p)] for p in SPREAD)
    return {"messages": count, "runs": runs,
            "growth_ratio": round(many["rss_mb_growth"] / max(few["rss_mb_growth"], 0.1), 2)}  # fmt: skip


async def spread_run(daemon: Daemon, count: int) -> dict[str, Any]:
    """RSS when ready, its peak (VmHWM) while `count` messages become Workflows, and the
    most records in flight at once (the sum over partitions, sampled; and the daemon's own
    high-water mark where it has one)."""
    await daemon.wait_up()
    ready = daemon.rss_mb()
    sampled = 0.0
    started = time.monotonic()
    while daemon.created() < count:
        if time.monotonic() - started > 900:
            raise TimeoutError(f"{count} workflows not created")
        held = await asyncio.to_thread(daemon.metric, "trigger_kafka_partition_in_flight")
        sampled = max(sampled, held)
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started
    hwm = daemon.rss_mb("VmHWM")
    return {"rss_mb_ready": round(ready, 1), "rss_mb_peak": round(hwm, 1),
            "rss_mb_growth": round(hwm - ready, 1), "seconds": round(elapsed, 1),
            "in_flight_sampled_max": int(sampled),
            "in_flight_peak": int(daemon.metric("trigger_kafka_records_in_flight_peak"))}  # fmt: skip


async def joined(daemons: list[Daemon], partitions: int = PARTITIONS, within: float = 60.0) -> None:
    """Until the daemons hold every partition between them, each at least one."""
    end = time.monotonic() + within
    while True:
        held = [await asyncio.to_thread(d.partitions) for d in daemons]
        if sum(held) == partitions and min(held) > 0:
            return
        if time.monotonic() > end:
            raise TimeoutError(f"the group did not settle: partitions held {held}")
        await asyncio.sleep(0.1)


async def end_to_end(
    broker: KafkaBroker, work: Path, count: int, daemons: int, extra: dict[str, str]
) -> dict[str, Any]:
    """Kafka → `daemons` daemons (one group) → emulator, from the first message produced to
    the last Workflow created, against the bare create loop (trust_env off) into the same
    emulator before and after it; the daemons have joined their group before the clock."""
    process, url = start_emulator()
    topic = f"e2e{daemons}"
    running: list[Daemon] = []
    try:
        env = await kube_env(url, work)
        await broker.create_topics({topic: PARTITIONS})
        bare_before = await bare_rate(url, count, trust_env=False, prefix=f"{topic}-before")
        for n in range(daemons):
            running.append(Daemon(work / f"{topic}-{n}", broker.bootstrap, topic, "kubernetes",
                                  env | extra))  # fmt: skip
        await joined(running)
        started = time.monotonic()
        await produce(broker.bootstrap, topic, count)
        while sum(await asyncio.gather(*(asyncio.to_thread(d.created) for d in running))) < count:
            if any(d.process.poll() is not None for d in running):
                raise RuntimeError(f"a daemon exited: see {work}/{topic}-*/daemon.log")
            if time.monotonic() - started > 900:
                raise TimeoutError(f"{count} workflows not created")
            await asyncio.sleep(0.1)  # each poll renders /metrics in every daemon
        seconds = time.monotonic() - started
        for daemon in running:
            daemon.stop()
        bare_after = await bare_rate(url, count, trust_env=False, prefix=f"{topic}-after")
    finally:
        for daemon in running:
            daemon.stop()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    bare = 2 / (1 / bare_before + 1 / bare_after)  # the mean time per create, as a rate
    rate = count / seconds
    return {"messages": count, "daemons": daemons, "in_flight": IN_FLIGHT,
            "daemon_workflows_per_s": round(rate, 1), "seconds": round(seconds, 2),
            "bare_creates_per_s": round(bare, 1),
            "bare_before_after": [round(bare_before, 1), round(bare_after, 1)],
            "ratio": round(rate / bare, 3), "target_ratio": 0.7}  # fmt: skip


def written_rate(folder: Path) -> tuple[float, list[bytes]]:
    """Files/s from the first file written under `folder` to the last (their mtimes, so no
    polling error), and the files' bytes."""
    files = sorted(folder.rglob("*.yaml"))
    times = [p.stat().st_mtime_ns for p in files]
    seconds = max((max(times) - min(times)) / 1e9, 1e-3)
    return (len(files) - 1) / seconds, [p.read_bytes() for p in files]


def raw_files(folder: Path, texts: list[bytes], batch: int = LOCAL_WINDOW) -> None:
    """Files created as a careful user would with the local sink's durability: each file
    created exclusively and written, one file-system sync per batch."""
    folder.mkdir(parents=True)
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for first in range(0, len(texts), batch):
            for n in range(first, min(first + batch, len(texts))):
                fd = os.open(f"wf-{n:07d}.yaml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644,
                             dir_fd=directory)  # fmt: skip
                try:
                    os.write(fd, texts[n])
                finally:
                    os.close(fd)
            sync_filesystem(directory)
    finally:
        os.close(directory)


async def local_vs_raw(
    broker: KafkaBroker, work: Path, count: int, runs: int, extra: dict[str, str]
) -> dict[str, Any]:
    """(b) against raw file creation of the same files (the bytes the daemon wrote) on the
    same file system, run after run; both timed by the files' mtimes, first to last."""
    pairs = []
    for run in range(runs):
        topic = f"local{run}"
        await broker.create_topics({topic: PARTITIONS})
        await produce(broker.bootstrap, topic, count)
        tuning = {
            "TRIGGER_KAFKA__CLUSTERS__DEFAULT__MAX_IN_FLIGHT_PER_PARTITION": str(LOCAL_WINDOW)
        }
        daemon = Daemon(work / topic, broker.bootstrap, topic, f"local:{work / topic / 'wf'}",
                        env=tuning | extra)  # fmt: skip
        try:
            await daemon.wait_created(count)
        finally:
            daemon.stop()
        rate, texts = written_rate(work / topic / "wf")
        await asyncio.to_thread(raw_files, work / topic / "raw", texts)
        raw, _ = written_rate(work / topic / "raw")
        # Gone before the next run: 120,000 files are slow to remove on a busy disk.
        await asyncio.to_thread(shutil.rmtree, work / topic, ignore_errors=True)
        pairs.append({"daemon_workflows_per_s": round(rate, 1), "raw_files_per_s": round(raw, 1),
                      "share": round(rate / raw, 3)})  # fmt: skip
    shares = sorted(p["share"] for p in pairs)
    return {"messages": count, "runs": pairs, "share_median": statistics.median(shares),
            "share_min": shares[0], "share_max": shares[-1], "target_share": 0.8}  # fmt: skip


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    parts = {
        "a": ("kubernetes", kube_side, args.kube),
        "b": ("local", local_side, args.local),
        "c": ("rss", rss_side, args.rss),
        "d": ("spread", spread_side, args.spread),
    }
    extra = dict(item.split("=", 1) for item in args.set)
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp:
        work = Path(tmp)
        async with KafkaBroker() as broker:
            return {
                name: await side(broker, work, count, extra)
                for part, (name, side, count) in parts.items()
                if part in args.parts
            }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.kafka")
    parser.add_argument("--kube", type=int, default=3000, help="messages for (a)")
    parser.add_argument("--local", type=int, default=60000, help="messages for (b)")
    parser.add_argument("--rss", type=int, default=200_000, help="messages for (c)")
    parser.add_argument("--spread", type=int, default=20_000, help="messages for (d)")
    parser.add_argument("--parts", default="abcd", help="which parts to run, e.g. bd")
    parser.add_argument("--set", action="append", default=[], metavar="TRIGGER_X=V",
                        help="a setting for every daemon, e.g. TRIGGER_KAFKA__MAX_IN_FLIGHT=8192")  # fmt: skip
    figures: dict[str, Any] = asyncio.run(measure(parser.parse_args()))
    figures["python"] = sys.version.split()[0]
    if k := figures.get("kubernetes"):
        print(
            f"(a) Kafka -> daemon -> kube emulator: {k['daemon_workflows_per_s']:8.1f} workflows/s"
        )
        print(f"    bare kubernetes_asyncio loop:     {k['bare_creates_per_s']:8.1f} creates/s")
        print(f"    ratio daemon / bare:              {k['ratio']:8.3f}  (target >= 0.7)")
        print(f"    bare loop, trust_env off:         {k['bare_trust_env_off_creates_per_s']:8.1f} creates/s"
              f"  (ratio {k['ratio_vs_trust_env_off']:.3f})")  # fmt: skip
    if local := figures.get("local"):
        print(f"(b) Kafka -> daemon -> local sink:    {local['workflows_per_s']:8.1f} workflows/s"
              f"  (target >= 5000; {LOCAL_WINDOW} in flight per partition;"
              f" daemon CPU {local['daemon_cpu_s']} s)")  # fmt: skip
    if rss := figures.get("rss"):
        print(f"(c) RSS ready {rss['rss_mb_ready']} MB, after {rss['warm_up_messages']} messages "
              f"{rss['rss_mb_after_warm_up']} MB, after {rss['messages']} {rss['rss_mb_end']} MB "
              f"(growth {rss['growth_after_warm_up']:+.1%}, target within 10%)")  # fmt: skip
    if spread := figures.get("spread"):
        for partitions, run in spread["runs"].items():
            print(f"(d) {partitions:>2} partitions: RSS ready {run['rss_mb_ready']} MB, peak "
                  f"{run['rss_mb_peak']} MB (+{run['rss_mb_growth']} MB); in flight at most "
                  f"{run['in_flight_sampled_max']} sampled, {run['in_flight_peak']} recorded; "
                  f"{run['seconds']} s")  # fmt: skip
        print(f"    growth 64 / 6: {spread['growth_ratio']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kafka.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
