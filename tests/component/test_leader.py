"""Leader election on a Lease in the API emulator, in virtual time, and LocalLeader.

The electors talk real HTTP to the emulator while their waits run on a shared
VirtualClock. A test moves time in steps no longer than half a retry period and, after
each step, waits (polling, with a real-time deadline) until every running elector is
asleep on the clock again with no attempt in flight, so each step's HTTP traffic has
finished before it looks. Tests of a slow API let the emulator's delays run on the clock
too, and let the clock move by itself (auto mode) whenever the loop is idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from trigger.clock import VIRTUAL_EPOCH, Clock, VirtualClock
from trigger.daemon.leader import (
    LeaderElector,
    LeaderSettings,
    LocalLeader,
    format_micro_time,
)
from trigger.errors import ConfigError
from trigger.events import parse_time
from trigger.testing.kubeapi import KubeEmulator

NS, LEASE = "default", "trigger"
DEADLINE = 10.0  # real seconds: a hang fails the test instead of stalling the suite
STEP = 1.0  # virtual seconds per step: half the retry period
DURATION, RENEW, RETRY = 15.0, 10.0, 2.0
MAX_ACQUIRE_WAIT = RETRY * 2.2  # the acquire loop's jittered retry period, at most
MICRO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


async def until(predicate: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    """Poll `predicate` until it holds; fail after `deadline` real seconds."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
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
    electors: list[LeaderElector] = field(default_factory=list)

    def elector(
        self, identity: str, *, clock: Clock | None = None, **settings: Any
    ) -> LeaderElector:
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
        elector = LeaderElector(api_client, options, clock=clock or self.clock)
        self.tasks[identity] = asyncio.create_task(elector.run(), name=identity)
        self.electors.append(elector)
        return elector

    @property
    def running(self) -> int:
        return sum(1 for task in self.tasks.values() if not task.done())

    async def idle(self) -> None:
        """Wait until every running elector sleeps on the clock (no request in flight)."""
        await until(
            lambda: (
                self.clock.sleeping == self.running
                and not any(elector.attempting for elector in self.electors)
            ),
            "electors to go idle",
        )

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
    clock = VirtualClock()
    async with KubeEmulator(namespaces=[NS], sleep=clock.sleep) as kube:
        state = Cluster(kube, clock)
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
    """A leader that stops without releasing is replaced only after lease_duration.

    The follower counts the lease duration from when it saw the last renewal, which is up
    to one acquire period after it was written, and then tries once per acquire period."""
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
        assert cluster.clock.now() <= expires + timedelta(seconds=2 * MAX_ACQUIRE_WAIT)
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
    # It saw the intruder's write within a retry period, and counts the lease from there.
    give_up = taken_at + timedelta(seconds=RETRY + DURATION + MAX_ACQUIRE_WAIT + STEP)
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


async def test_renew_deadline_counts_from_when_the_renewal_was_sent(cluster: Cluster) -> None:
    """A renewal answered late counts from when it was sent: with later renewals failing,
    the leader steps down renew_deadline after sending it, not after hearing back."""
    elector = cluster.elector("a")
    await elector.wait_leader()
    await cluster.idle()
    stopped: list[float] = []
    elector.on_change(lambda leader: stopped.append(cluster.clock.monotonic()))
    late = cluster.kube.delay(RENEW - 2 * RETRY, method="PUT", path_contains="leases")
    await cluster.clock.advance(RETRY)
    await until(lambda: late.held == 1, "the renewal's answer to be held")
    sent = (parse_time(cluster.spec()["renewTime"]) - VIRTUAL_EPOCH).total_seconds()
    cluster.kube.inject(500, count=10_000, path_contains="leases")
    while elector.is_leader:
        assert cluster.clock.monotonic() < sent + RENEW + STEP
        await cluster.clock.advance(STEP)
        await until(
            lambda: late.held == 1 or (cluster.clock.sleeping and not elector.attempting),
            "the elector to wait on the clock",
        )
    assert late.remaining == 0 and stopped == [sent + RENEW]


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
    else:  # "old" is long gone, but the elector waits a lease duration of its own first
        while not elector.leading.is_set():
            assert cluster.clock.monotonic() <= DURATION + 2 * MAX_ACQUIRE_WAIT
            await cluster.step(0.5)
        assert cluster.clock.monotonic() >= DURATION and conflict.remaining == 0
        assert cluster.spec()["holderIdentity"] == "a"
        assert cluster.spec()["leaseTransitions"] == 1
    assert elector.is_leader


@dataclass
class Terms:
    """Each elector's terms as leader: [start, end) on the shared monotonic clock."""

    clock: VirtualClock
    terms: list[tuple[str, float, float]] = field(default_factory=list)
    since: dict[str, float] = field(default_factory=dict)

    def follow(self, elector: LeaderElector) -> None:
        name = elector.settings.identity

        def changed(leader: bool) -> None:
            if leader:
                self.since[name] = self.clock.monotonic()
            else:
                self.terms.append((name, self.since.pop(name), self.clock.monotonic()))

        elector.on_change(changed)

    def until_now(self) -> list[tuple[str, float, float]]:
        """Every term so far, sorted by start; a running term ends now."""
        now = self.clock.monotonic()
        running = [(name, start, now) for name, start in self.since.items()]
        return sorted([*self.terms, *running], key=lambda term: term[1])

    def handovers(self) -> int:
        """How often leadership passed to another replica."""
        terms = self.until_now()
        return sum(1 for a, b in itertools.pairwise(terms) if a[0] != b[0])


@pytest.mark.parametrize("seed", range(4))
async def test_slow_api_never_gives_two_leaders(seed: int) -> None:
    """With Lease reads and writes slowed at random, two replicas never lead at once: one
    stops at least lease_duration − renew_deadline before the other starts.

    Time is virtual and moves whenever the loop is idle; the test runs until leadership
    has changed hands three times (how long that takes depends on the draws)."""
    rng = random.Random(seed)
    clock = VirtualClock(auto=True)
    async with KubeEmulator(namespaces=[NS], sleep=clock.sleep) as kube:
        kube.delay(lambda: rng.uniform(0, RENEW * 1.2), count=10**9, path_contains="/leases")
        cluster, terms = Cluster(kube, clock), Terms(clock)
        try:
            for identity in ("a", "b", "c"):
                terms.follow(cluster.elector(identity, release_on_cancel=False))
            await until(lambda: terms.handovers() >= 3, "three handovers", 60)
            seen = terms.until_now()
        finally:
            for identity in list(cluster.tasks):
                await cluster.stop(identity)
            for api_client in cluster.clients:
                await api_client.close()
    for (before, _, ended), (after, started, _) in itertools.pairwise(seen):
        assert started >= ended, f"{before} and {after} both led: {seen}"
        if after != before:  # a replica may take its own Lease back at once
            assert started - ended >= DURATION - RENEW, f"{before} → {after}: {seen}"


class SkewedClock:
    """A replica's clock: the shared monotonic time, but a wall clock that is off."""

    def __init__(self, base: VirtualClock, offset: timedelta) -> None:
        self._base, self._offset = base, offset

    def now(self) -> datetime:
        return self._base.now() + self._offset

    def monotonic(self) -> float:
        return self._base.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self._base.sleep(seconds)


@pytest.mark.parametrize("skew", [timedelta(hours=1), timedelta(seconds=DURATION)])
async def test_follower_with_a_fast_clock_leaves_a_renewed_lease_alone(
    cluster: Cluster, skew: timedelta
) -> None:
    """A follower whose wall clock runs ahead does not take a Lease that is being renewed."""
    leader = cluster.elector("a")
    await leader.wait_leader()
    await cluster.idle()
    follower = cluster.elector("b", clock=SkewedClock(cluster.clock, skew))
    follower_changes = transitions(follower)
    await cluster.idle()
    for _ in range(4 * int(DURATION / STEP)):
        await cluster.step()
        assert leader.is_leader and cluster.spec()["holderIdentity"] == "a"
    assert follower_changes == []


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


# --- LocalLeader ------------------------------------------------------------------------


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
