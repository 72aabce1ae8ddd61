"""Leader election on a Lease in the API emulator, in virtual time, and LocalLeader.

The electors talk real HTTP to the emulator while their waits run on a shared
VirtualClock. A test moves time in steps no longer than half a retry period and, after
each step, waits (polling, with a real-time deadline) until every running elector is
asleep on the clock again, so each step's HTTP traffic has finished before it looks.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from trigger.errors import ConfigError
from trigger.events import parse_time
from trigger.runtime.leader import (
    LeaderElector,
    LeaderSettings,
    LocalLeader,
    format_micro_time,
    while_leading,
)
from trigger.submit.clock import VIRTUAL_EPOCH, VirtualClock
from trigger.testing.kubeapi import KubeEmulator

NS, LEASE = "default", "trigger"
DEADLINE = 10.0  # real seconds: a hang fails the test instead of stalling the suite
STEP = 1.0  # virtual seconds per step: half the retry period
DURATION, RENEW, RETRY = 15.0, 10.0, 2.0
MAX_ACQUIRE_WAIT = RETRY * 2.2  # the acquire loop's jittered retry period, at most
MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Poll `predicate` until it holds; fail after DEADLINE real seconds."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + DEADLINE
    while not predicate():
        assert loop.time() < give_up, f"timed out waiting for {what}"
        await asyncio.sleep(0.002)


@dataclass
class Cluster:
    """The emulator, the shared clock and the electors (replicas) a test started."""

    kube: KubeEmulator
    clock: VirtualClock
    clients: list[Any] = field(default_factory=list)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def elector(self, identity: str, **settings: Any) -> LeaderElector:
        """Start an elector (its own ApiClient, as another replica would have)."""
        api_client = client.ApiClient(configuration=self.kube.client_configuration())
        self.clients.append(api_client)
        options = LeaderSettings(
            lease_name=LEASE,
            namespace=NS,
            identity=identity,
            lease_duration=DURATION,
            renew_deadline=RENEW,
            retry_period=RETRY,
            **settings,
        )
        elector = LeaderElector(api_client, options, clock=self.clock)
        self.tasks[identity] = asyncio.create_task(elector.run(), name=identity)
        return elector

    @property
    def running(self) -> int:
        return sum(1 for task in self.tasks.values() if not task.done())

    async def idle(self) -> None:
        """Wait until every running elector sleeps on the clock (no request in flight)."""
        await until(lambda: self.clock.sleeping == self.running, "electors to go idle")

    async def step(self, seconds: float = STEP) -> None:
        await self.clock.advance(seconds)
        await self.idle()

    async def stop(self, identity: str) -> None:
        task = self.tasks[identity]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, DEADLINE)

    def lease(self) -> dict[str, Any]:
        found = self.kube.get_object("coordination.k8s.io", "v1", "leases", LEASE, NS)
        assert found is not None
        return found

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.lease()["spec"]
        return spec


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with KubeEmulator(namespaces=[NS]) as kube:
        state = Cluster(kube, VirtualClock())
        yield state
        for identity in list(state.tasks):
            await state.stop(identity)
        for api_client in state.clients:
            await api_client.close()


async def two_electors(cluster: Cluster) -> tuple[LeaderElector, LeaderElector]:
    """Start replicas a and b; return (leader, follower) once the race is decided."""
    a, b = cluster.elector("a"), cluster.elector("b")
    await until(lambda: a.is_leader or b.is_leader, "a leader")
    await cluster.idle()
    return (a, b) if a.is_leader else (b, a)


def transitions(elector: LeaderElector) -> list[bool]:
    seen: list[bool] = []
    elector.on_change(seen.append)
    return seen


# --- election ----------------------------------------------------------------------------


async def test_exactly_one_of_two_electors_leads(cluster: Cluster) -> None:
    """Of two replicas exactly one leads, holds the Lease, and keeps it for a minute."""
    leader, follower = await two_electors(cluster)
    follower_changes = transitions(follower)
    renewed = parse_time(cluster.spec()["renewTime"])
    for _ in range(60):
        await cluster.step()
        assert leader.is_leader and not follower.is_leader
        assert cluster.spec()["holderIdentity"] == leader.settings.identity
    assert follower_changes == []
    assert follower.not_leading.is_set() and not follower.leading.is_set()
    assert parse_time(cluster.spec()["renewTime"]) >= renewed + timedelta(seconds=50)


async def test_lease_times_are_micro_time(cluster: Cluster) -> None:
    """Lease times are RFC 3339 with six fractional digits and read back as datetimes."""
    elector = cluster.elector("a")
    await elector.wait_leader()
    spec = cluster.spec()
    assert spec["acquireTime"] == spec["renewTime"] == "2025-01-01T00:00:00.000000Z"
    assert spec["leaseDurationSeconds"] == 15
    api = client.CoordinationV1Api(cluster.clients[0])
    lease = await api.read_namespaced_lease(LEASE, NS)
    assert lease.spec.renew_time == VIRTUAL_EPOCH


@pytest.mark.parametrize("microseconds", [0, 1, 999_999])
def test_format_micro_time_always_has_six_digits(microseconds: int) -> None:
    """format_micro_time writes exactly six fractional digits and a Z."""
    text = format_micro_time(VIRTUAL_EPOCH + timedelta(microseconds=microseconds))
    assert MICRO_TIME.fullmatch(text)
    assert parse_time(text) == VIRTUAL_EPOCH + timedelta(microseconds=microseconds)


async def test_stopped_leader_releases_and_the_follower_takes_over(cluster: Cluster) -> None:
    """Cancelling the leader releases the Lease; the follower leads within one retry."""
    leader, follower = await two_electors(cluster)
    changes = transitions(leader)
    await cluster.stop(leader.settings.identity)
    assert changes == [False] and leader.not_leading.is_set()
    released = cluster.spec()
    assert "holderIdentity" not in released
    assert released["leaseDurationSeconds"] == 1
    stopped_at = cluster.clock.monotonic()
    while not follower.is_leader:
        assert cluster.clock.monotonic() - stopped_at <= MAX_ACQUIRE_WAIT
        await cluster.step(0.5)
    assert cluster.clock.monotonic() - stopped_at < DURATION
    assert cluster.spec()["holderIdentity"] == follower.settings.identity
    assert cluster.spec()["leaseTransitions"] == 1


async def test_crashed_leader_is_replaced_only_after_the_lease_expires(
    cluster: Cluster,
) -> None:
    """A leader that stops without releasing is replaced only after lease_duration."""
    a = cluster.elector("a", release_on_cancel=False)
    await a.wait_leader()
    await cluster.idle()
    b = cluster.elector("b", release_on_cancel=False)
    await cluster.idle()
    await cluster.step(3 * STEP)
    await cluster.stop("a")  # a crash: no release, the Lease keeps naming a
    assert cluster.spec()["holderIdentity"] == "a"
    expires = parse_time(cluster.spec()["renewTime"]) + timedelta(seconds=DURATION)
    while not b.is_leader:
        assert cluster.clock.now() <= expires + timedelta(seconds=MAX_ACQUIRE_WAIT)
        await cluster.step()
    assert cluster.clock.now() > expires
    assert cluster.spec()["holderIdentity"] == "b"


async def test_losing_the_lease_stops_leading_without_exiting(cluster: Cluster) -> None:
    """When another holder overwrites the Lease, not_leading fires and run() continues."""
    elector = cluster.elector("a")
    await elector.wait_leader()
    await cluster.idle()
    changes = transitions(elector)
    lease = cluster.lease()
    taken_at = cluster.clock.now()
    lease["spec"] = {
        **lease["spec"],
        "holderIdentity": "intruder",
        "renewTime": format_micro_time(taken_at),
    }
    cluster.kube.put_object("coordination.k8s.io", "v1", "leases", lease)
    await cluster.step(RETRY)
    assert changes == [False]
    assert not elector.is_leader and elector.not_leading.is_set()
    assert not cluster.tasks["a"].done()
    while cluster.clock.now() <= taken_at + timedelta(seconds=DURATION):
        assert not elector.is_leader
        await cluster.step()
    give_up = taken_at + timedelta(seconds=DURATION + MAX_ACQUIRE_WAIT + STEP)
    while not elector.leading.is_set():  # the intruder's Lease expired: it takes it back
        assert cluster.clock.now() <= give_up
        await cluster.step()
    assert changes == [False, True]


async def test_leader_steps_down_when_it_cannot_renew_in_time(cluster: Cluster) -> None:
    """With every renewal failing, the leader steps down once renew_deadline has passed."""
    elector = cluster.elector("a")
    await elector.wait_leader()
    await cluster.idle()
    last_renewal = parse_time(cluster.spec()["renewTime"])
    failing = cluster.kube.inject(500, count=10_000, path_contains="leases")
    while elector.is_leader:
        assert cluster.clock.now() < last_renewal + timedelta(seconds=RENEW + RETRY)
        await cluster.step()
    assert cluster.clock.now() >= last_renewal + timedelta(seconds=RENEW)
    assert cluster.spec()["holderIdentity"] == "a"  # not released: the API is down
    failing.remaining = 0
    while not elector.is_leader:
        assert cluster.clock.now() < last_renewal + timedelta(seconds=DURATION)
        await cluster.step()


@pytest.mark.parametrize("during", ["renewal", "acquisition"])
async def test_conflict_on_replace_is_retried(cluster: Cluster, during: str) -> None:
    """A 409 on replacing the Lease is a lost race: re-read and try again next period."""
    if during == "acquisition":
        stale = format_micro_time(VIRTUAL_EPOCH - timedelta(minutes=5))
        cluster.kube.put_object(
            "coordination.k8s.io",
            "v1",
            "leases",
            {
                "metadata": {"name": LEASE, "namespace": NS},
                "spec": {
                    "holderIdentity": "old",
                    "leaseDurationSeconds": 15,
                    "renewTime": stale,
                    "acquireTime": stale,
                },
            },
        )
    conflict = cluster.kube.inject(409, count=1, method="PUT", path_contains="leases")
    elector = cluster.elector("a")
    if during == "renewal":
        await elector.wait_leader()
        await cluster.idle()
        await cluster.step(RETRY)
        assert conflict.remaining == 0 and elector.is_leader
        renewed = cluster.spec()["renewTime"]
        await cluster.step(RETRY)
        assert cluster.spec()["renewTime"] > renewed
    else:
        await cluster.idle()
        assert conflict.remaining == 0 and not elector.is_leader
        while not elector.leading.is_set():
            assert cluster.clock.monotonic() <= MAX_ACQUIRE_WAIT
            await cluster.step(0.5)
        assert cluster.spec()["holderIdentity"] == "a"
        assert cluster.spec()["leaseTransitions"] == 1
    assert elector.is_leader


@pytest.mark.parametrize(
    ("duration", "renew", "retry"),
    [(10, 10, 2), (15, 10, 0), (15, 2, 2), (5, 10, 2)],
)
def test_inconsistent_timing_is_config_error(duration: float, renew: float, retry: float) -> None:
    """Settings need lease_duration > renew_deadline > 1.2 × retry_period > 0."""
    with pytest.raises(ConfigError, match="lease_duration"):
        LeaderSettings(lease_duration=duration, renew_deadline=renew, retry_period=retry)


def test_default_identity_names_host_and_process() -> None:
    """Without an identity the elector uses hostname_pid."""
    import os

    assert LeaderSettings().identity.endswith(f"_{os.getpid()}")


# --- LocalLeader and while_leading ------------------------------------------------------


async def test_local_leader_leads_until_cancelled() -> None:
    """LocalLeader leads from the start and stops leading when its run() is cancelled."""
    leader = LocalLeader()
    changes: list[bool] = []
    leader.on_change(changes.append)
    assert leader.is_leader
    await asyncio.wait_for(leader.wait_leader(), DEADLINE)
    task = asyncio.create_task(leader.run())
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not leader.leading.is_set() and changes == [False]


class Switch(LocalLeader):
    """A leadership the test turns on and off."""

    def turn(self, leader: bool) -> None:
        self._set(leader)


@dataclass
class Work:
    """Singleton work that counts its starts and stops."""

    started: int = 0
    stopped: int = 0
    fail: Exception | None = None

    async def __call__(self) -> None:
        self.started += 1
        try:
            if self.fail is not None:
                raise self.fail
            await asyncio.Event().wait()
        finally:
            self.stopped += 1


@contextlib.contextmanager
def supervised(task: asyncio.Task[None]) -> Iterator[asyncio.Task[None]]:
    try:
        yield task
    finally:
        task.cancel()


async def test_while_leading_stops_work_on_loss_and_restarts_it() -> None:
    """Work runs while leading, is cancelled when leadership is lost, and restarts after."""
    leadership, work = Switch(), Work()
    leadership.turn(False)
    with supervised(asyncio.create_task(while_leading(leadership, work))):
        await asyncio.sleep(0)
        assert work.started == 0
        leadership.turn(True)
        await until(lambda: work.started == 1, "work to start")
        leadership.turn(False)
        await until(lambda: work.stopped == 1, "work to stop")
        leadership.turn(True)
        await until(lambda: work.started == 2, "work to restart")
        assert work.stopped == 1


async def test_while_leading_cancellation_stops_the_work() -> None:
    """Cancelling while_leading cancels the running work and waits for it."""
    leadership, work = Switch(), Work()
    task = asyncio.create_task(while_leading(leadership, work))
    await until(lambda: work.started == 1, "work to start")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert work.stopped == 1


async def test_while_leading_reraises_the_works_error() -> None:
    """An exception in the work propagates out of while_leading."""
    leadership, work = Switch(), Work(fail=RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(while_leading(leadership, work), DEADLINE)


async def test_while_leading_follows_a_real_elector(cluster: Cluster) -> None:
    """Singleton work on an elector stops when another holder takes the Lease."""
    elector, work = cluster.elector("a"), Work()
    with supervised(asyncio.create_task(while_leading(elector, work))):
        await until(lambda: work.started == 1, "work to start")
        await cluster.idle()
        lease = cluster.lease()
        lease["spec"] = {
            **lease["spec"],
            "holderIdentity": "intruder",
            "renewTime": format_micro_time(cluster.clock.now()),
        }
        cluster.kube.put_object("coordination.k8s.io", "v1", "leases", lease)
        await cluster.step(RETRY)
        await until(lambda: work.stopped == 1, "work to stop")
        assert not elector.is_leader
