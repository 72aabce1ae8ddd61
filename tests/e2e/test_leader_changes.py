"""The singleton sources across leader changes: two daemons, one Lease in the Kubernetes API
emulator, the leader SIGKILLed again and again and restarted. OSS polling fires every
object under the rule's prefix exactly once; an every-second cron rule with `catchUp: all`
has exactly one Workflow for every tick between the first and the last observed, and with
`catchUp: latest` loses only ticks the next leader reached more than 10 s late (README,
Cron rules: Catch-up). Short form: 600 objects and 2 kills, cron 2 kills (1 for latest);
`pytest --long`: 6,000 objects and 5 kills each."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

import oss2

from tests.daemon import DaemonProcess, until
from tests.e2e.harness import Emulator, Harness, wait_for_workflows

AK, SK, BUCKET = "AKIDPOLL", "poll-secret", "landing"
# A short Lease, so a failover after a SIGKILL takes about 2 s instead of 15.
LEASE = {
    "enabled": True,
    "lease_duration": "2s",
    "renew_deadline": "1500ms",
    "retry_period": "250ms",
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
  workflow:
    template: ingest
    parameters: {at: "{{ event.scheduledTime }}", fired: "{{ event.fireTime }}"}
"""
LATE = timedelta(seconds=10)  # README: a tick reached more than 10 s late counts as missed


def pair(
    harness: Harness, emulator: Emulator, rule: str, env: dict[str, str] | None = None
) -> list[DaemonProcess]:
    """Two daemons with the kubernetes sink and state store, electing a leader."""
    emulator.add_template("ingest")
    return [
        harness.daemon(name, rule, emulator, env=env, state="kubernetes", leader=LEASE)
        for name in ("one", "two")
    ]


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
    await asyncio.to_thread(Harness.restart, current)  # SIGKILL by PID, start again
    return current.workdir.name


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
    harness: Harness, long_run: bool
) -> None:
    """Two daemons poll one bucket while objects land; the leader is SIGKILLed and restarted
    again and again: every object under the prefix has exactly one Workflow, none extra."""
    count, kills = (6000, 5) if long_run else (600, 2)
    batch = count // (kills + 1)
    oss = harness.oss([BUCKET], "--ak", AK, "--sk", SK)
    emulator = harness.emulator()
    rule = POLL_RULE.format(bucket=BUCKET, endpoint=oss.url)
    daemons = await asyncio.to_thread(pair, harness, emulator, rule, {"OSS_AK": AK, "OSS_SK": SK})
    uploads = Uploader(oss.url)
    # Each leader is killed once half a batch more has fired under it; the next batch starts
    # landing as it dies, so objects land during every failover.
    killed = []
    for _ in range(kills):
        uploads.release(batch)
        killed.append(await kill_leader(daemons, emulator.workflow_count, batch * 3 // 8))
    uploads.release(count - batch * kills)
    await asyncio.to_thread(uploads.finish)
    expected = {("polled", f"{BUCKET}/{k}@") for k in uploads.under_prefix}
    await asyncio.to_thread(wait_for_workflows, emulator, len(expected), timeout=120)
    # Two more full scans after the last upload, for anything fired twice to show.
    current: DaemonProcess = await until(lambda: leader(daemons), what="a leader")
    scans = scans_done(current)
    await until(lambda: scans_done(current) >= scans + 2, what="two more scans")
    found = await asyncio.to_thread(emulator.workflows)
    per_object = Counter(
        (rule, event.partition("@")[0] + "@") for (rule, event) in found.elements()
    )
    print(f"\n{len(expected)} objects under the prefix of {count}, killed {killed}")
    assert set(per_object) == expected, (set(per_object) - expected, expected - set(per_object))
    assert [n for n in per_object.values() if n != 1] == []


def scans_done(daemon: DaemonProcess) -> int:
    return sum(1 for e in daemon.log_events() if e.get("event") == "oss poll done")


# --- cron ----------------------------------------------------------------------------------


def ticks(emulator: Emulator) -> dict[datetime, list[datetime]]:
    """When each scheduled time of the cron rule was fired, one entry per Workflow."""
    found: dict[datetime, list[datetime]] = {}
    for workflow in emulator.list_workflows():
        values = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
        at, fired = datetime.fromisoformat(values["at"]), datetime.fromisoformat(values["fired"])
        found.setdefault(at, []).append(fired)
    return found


async def cron_failovers(
    harness: Harness, catch_up: str, kills: int
) -> tuple[dict[datetime, list[datetime]], list[datetime]]:
    """Run the every-second rule on two daemons and SIGKILL the leader `kills` times (each
    after it fired 2 ticks); return when each tick was fired and the window from the first
    tick fired to the last."""
    emulator = harness.emulator()
    rule = CRON_RULE.replace("catchUp: all", f"catchUp: {catch_up}")
    daemons = await asyncio.to_thread(pair, harness, emulator, rule)
    made = emulator.workflow_count
    killed = [await kill_leader(daemons, made, 2) for _ in range(kills)]
    # The last leader catches up and fires a few more on time.
    after = await asyncio.to_thread(made)
    await until(lambda: made() >= after + 2, what="ticks after the last kill")
    for d in daemons:
        d.stop()
    fired = await asyncio.to_thread(ticks, emulator)
    first, last = min(fired), max(fired)
    window = [first + timedelta(seconds=s) for s in range(int((last - first).total_seconds()) + 1)]
    latest = max(fire - at for at, fires in fired.items() for fire in fires)
    print(
        f"\n{catch_up}: {len(fired)} ticks over {len(window)} s, latest {latest}, killed {killed}"
    )
    return fired, window


async def test_cron_across_leader_changes_fires_every_tick_once(
    harness: Harness, long_run: bool
) -> None:
    """An every-second cron rule with `catchUp: all` on two daemons, the leader SIGKILLed and
    restarted again and again: every tick from the first to the last fired has exactly one
    Workflow (the missed ones caught up by the next leader)."""
    kills = 5 if long_run else 2
    fired, window = await cron_failovers(harness, "all", kills)
    assert {t: len(fired.get(t, [])) for t in window if len(fired.get(t, [])) != 1} == {}
    assert set(fired) == set(window)
    assert len(window) > 2 * kills  # the window spans every failover


async def test_cron_latest_across_leader_changes_misses_only_late_ticks(
    harness: Harness, long_run: bool
) -> None:
    """The same with `catchUp: latest` (the default): no tick has two Workflows, and a tick
    goes missing only when the next leader reached it more than 10 s late."""
    kills = 5 if long_run else 1
    fired, window = await cron_failovers(harness, "latest", kills)
    assert {t: n for t, n in fired.items() if len(n) != 1} == {}
    reached_late = []
    for tick in (t for t in window if t not in fired):
        # The leader that fired the next tick reached this one no later than that.
        reached = min(fire for at, (fire,) in fired.items() if at > tick)
        reached_late.append((tick, reached - tick))
    assert [(t, late) for t, late in reached_late if late <= LATE] == [], reached_late
