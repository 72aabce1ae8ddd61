"""The singleton sources across leader changes: two daemons, one Lease in the Kubernetes API
emulator, the leader SIGKILLed again and again and restarted. OSS polling fires every
object under the rule's prefix exactly once; an every-second cron rule with `catchUp: all`
has exactly one Workflow for every tick between the first and the last observed."""

from __future__ import annotations

import asyncio
import queue
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import oss2
import pytest

from tests.daemon import DaemonProcess, until
from tests.e2e.parts import Kube, kube_process, oss_process

AK, SK, BUCKET = "AKIDPOLL", "poll-secret", "landing"
LEASE = {
    "TRIGGER_LEADER__ENABLED": "true",
    "TRIGGER_LEADER__LEASE_DURATION": "2s",
    "TRIGGER_LEADER__RENEW_DEADLINE": "1500ms",
    "TRIGGER_LEADER__RETRY_PERIOD": "250ms",
    "TRIGGER_SUBMIT__CHECK_TEMPLATES": "false",
}
POLL_RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {{name: polled}}
spec:
  source:
    oss:
      bucket: {bucket}
      key: {{prefix: in/}}
      poll:
        endpoint: {endpoint}
        region: cn-hangzhou
        interval: 200ms
        existing: fire
        credentials: {{accessKeyIdEnv: OSS_AK, accessKeySecretEnv: OSS_SK}}
  workflow: {{template: ingest, parameters: {{key: "{{{{ event.key }}}}"}}}}
"""
CRON_RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: tick}
spec:
  source: {cron: {schedules: ["* * * * * *"], catchUp: all, maxCatchUp: 100000}}
  workflow: {template: ingest, parameters: {at: "{{ event.scheduledTime }}"}}
"""


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Kube]:
    with kube_process(tmp_path / "kubeapi.log") as emulator:
        yield emulator


def pair(tmp: Path, kube: Kube, rule: str, env: dict[str, str]) -> list[DaemonProcess]:
    """Two daemons with the kubernetes sink and state store, electing a leader."""
    kubeconfig = kube.kubeconfig(tmp / "kubeconfig")
    daemons = []
    for name in ("one", "two"):
        workdir = tmp / name
        (workdir / "rules").mkdir(parents=True)
        (workdir / "rules" / "rule.yaml").write_text(rule)
        full_env = {**LEASE, **env, "KUBECONFIG": str(kubeconfig), "HOSTNAME": name}
        args = ["--sink", "kubernetes", "--state", "kubernetes"]
        daemons.append(DaemonProcess(workdir, workdir / "rules", env=full_env, extra_args=args))
    return daemons


def leader(daemons: list[DaemonProcess]) -> DaemonProcess | None:
    """The daemon that says it leads, if exactly one does."""
    leading = []
    for d in daemons:
        reply = d.get("/status")
        if reply.status == 200 and reply.json()["leader"]:
            leading.append(d)
    return leading[0] if len(leading) == 1 else None


async def kill_leader(daemons: list[DaemonProcess], progress: Callable[[], int], step: int) -> str:
    """Wait for a leader and for `progress()` to grow by `step` under it, SIGKILL it and
    start it again; return its name."""
    current: DaemonProcess = await until(lambda: leader(daemons), what="a leader")
    start = await asyncio.to_thread(progress)
    await until(lambda: progress() >= start + step, what="progress under the leader")
    current.signal(signal.SIGKILL)
    await asyncio.to_thread(current.wait)
    await asyncio.to_thread(current.start)
    return current.workdir.name


def start_all(daemons: list[DaemonProcess]) -> None:
    for d in daemons:
        d.start(ready=False)
    for d in daemons:
        d.wait_ready()


# --- OSS polling ---------------------------------------------------------------------------


class Uploader:
    """Puts objects into the bucket from a thread, alternating keys under the rule's prefix
    and outside it, a batch each time `release` is called."""

    def __init__(self, endpoint: str) -> None:
        self.bucket = oss2.Bucket(oss2.AuthV4(AK, SK), endpoint, BUCKET, region="cn-hangzhou")
        self.keys: list[str] = []
        self.batches: queue.Queue[int | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (size := self.batches.get()) is not None:
            for _ in range(size):
                i = len(self.keys)
                key = f"{'in' if i % 4 else 'out'}/{i:06d}.csv"
                self.bucket.put_object(key, key.encode())
                self.keys.append(key)

    def release(self, size: int) -> None:
        self.batches.put(size)

    def finish(self) -> None:
        self.batches.put(None)
        self.thread.join()

    @property
    def under_prefix(self) -> list[str]:
        return [k for k in self.keys if k.startswith("in/")]


async def test_polling_across_leader_changes_fires_each_object_once(
    tmp_path: Path, kube: Kube, long_run: bool
) -> None:
    """Two daemons poll one bucket while objects land; the leader is SIGKILLed and restarted
    again and again: every object under the prefix has exactly one Workflow, none extra."""
    count, kills = (6000, 5) if long_run else (600, 2)
    batch = count // (kills + 1)
    with oss_process(tmp_path / "oss.log", BUCKET, AK, SK) as endpoint:
        rule = POLL_RULE.format(bucket=BUCKET, endpoint=endpoint)
        daemons = pair(tmp_path, kube, rule, {"OSS_AK": AK, "OSS_SK": SK})
        uploads = Uploader(endpoint)
        try:
            await asyncio.to_thread(start_all, daemons)

            def fired() -> int:
                return len(kube.workflows())

            # Each leader is killed once half a batch more has fired under it; the next batch
            # starts landing as it dies, so objects land during every failover.
            killed = []
            for _ in range(kills):
                uploads.release(batch)
                killed.append(await kill_leader(daemons, fired, batch * 3 // 8))
            uploads.release(count - batch * kills)
            await asyncio.to_thread(uploads.finish)
            expected = {("polled", f"{BUCKET}/{k}@") for k in uploads.under_prefix}
            await until(lambda: fired() >= len(expected), timeout=60, what="every object")
            # Two more full scans after the last upload, for anything fired twice to show.
            current: DaemonProcess = await until(lambda: leader(daemons), what="a leader")
            scans = scans_done(current)
            await until(lambda: scans_done(current) >= scans + 2, what="two more scans")
            found = await asyncio.to_thread(kube.workflows_per_event)
        finally:
            for d in daemons:
                d.stop()
    per_object = Counter(
        (rule, event.partition("@")[0] + "@") for (rule, event) in found.elements()
    )
    print(f"\n{len(expected)} objects under the prefix of {count}, killed {killed}")
    assert set(per_object) == expected, (set(per_object) - expected, expected - set(per_object))
    assert [n for n in per_object.values() if n != 1] == []


def scans_done(daemon: DaemonProcess) -> int:
    return sum(1 for e in daemon.log_events() if e.get("event") == "oss poll done")


# --- cron ----------------------------------------------------------------------------------


def ticks(kube: Kube) -> Counter[datetime]:
    """How many Workflows each scheduled time of the cron rule has."""
    return Counter(
        datetime.fromisoformat(event.partition("@")[2])
        for (rule, event), n in kube.workflows_per_event().items()
        for _ in range(n)
        if rule == "tick"
    )


async def test_cron_across_leader_changes_fires_every_tick_once(
    tmp_path: Path, kube: Kube, long_run: bool
) -> None:
    """An every-second cron rule with `catchUp: all` on two daemons, the leader SIGKILLed and
    restarted again and again: every tick from the first to the last fired has exactly one
    Workflow (the missed ones caught up by the next leader)."""
    kills = 5 if long_run else 2
    daemons = pair(tmp_path, kube, CRON_RULE, {})
    try:
        await asyncio.to_thread(start_all, daemons)
        made = lambda: len(kube.workflows())  # noqa: E731
        killed = [await kill_leader(daemons, made, 3) for _ in range(kills)]
        # The last leader catches up and fires a few more on time.
        after = await asyncio.to_thread(lambda: len(kube.workflows()))
        await until(lambda: len(kube.workflows()) >= after + 3, what="ticks after the last kill")
    finally:
        for d in daemons:
            d.stop()
    fired = await asyncio.to_thread(ticks, kube)
    first, last = min(fired), max(fired)
    seconds = int((last - first).total_seconds())
    window = [first + timedelta(seconds=s) for s in range(seconds + 1)]
    print(f"\n{len(fired)} ticks over {seconds + 1} s, killed {killed}")
    assert [t for t in window if fired[t] != 1] == [], {
        t: fired[t] for t in window if fired[t] != 1
    }
    assert set(fired) == set(window)
    assert len(window) > 3 * kills  # the window spans every failover
