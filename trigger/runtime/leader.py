"""Leadership: which replica runs the singleton sources (cron, OSS polling).

`LeaderElector` holds a `coordination.k8s.io/v1` Lease the way client-go's leaderelection
does: it takes the Lease when it is free or expired (the holder's renewTime plus
leaseDurationSeconds is in the past on our clock, so node clocks are assumed in sync, as
with every Lease user), renews it every `retry_period`, and steps down when it cannot renew
within `renew_deadline` or sees another holder. Every write carries the resourceVersion it
read, so of two replicas racing for a free Lease exactly one wins (the other gets 409).
Losing leadership does not end the process: the elector goes back to waiting, and
`while_leading` stops the singleton work and restarts it when leadership returns. On
cancellation the elector releases the Lease (no holder, 1 s duration) so a successor takes
over at its next retry instead of after a whole lease duration.

`LocalLeader` is the single-process default: always the leader, same interface.

Lease times are MicroTime (`2025-01-01T00:00:00.000000Z`). They are sent as strings in a
dict body, not as datetimes in a V1Lease: kubernetes_asyncio serialises datetimes with
`isoformat()`, which drops the fraction when it is zero and writes `+00:00`, and the API
server's MicroTime parser refuses a time without exactly six fractional digits.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, Final, Protocol

import aiohttp
import structlog

from trigger.errors import ConfigError, DecodeError
from trigger.events import parse_time
from trigger.submit.clock import Clock, SystemClock

log = structlog.get_logger("trigger.leader")

Callback = Callable[[bool], None]
_CONFLICT: Final = 409
_NOT_FOUND: Final = 404
_ACQUIRE_JITTER: Final = 1.2  # client-go's JitterFactor for the acquire loop


def default_identity() -> str:
    """`hostname_pid`: unique per replica (pod names are unique) and per restart."""
    return f"{socket.gethostname()}_{os.getpid()}"


def format_micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaderSettings:
    """Where the Lease lives, who we are, and the election's timing (seconds)."""

    lease_name: str = "trigger"
    """Name of the Lease object."""
    namespace: str = "default"
    """Namespace of the Lease."""
    identity: str = field(default_factory=default_identity)
    """This replica's holderIdentity; default hostname_pid."""
    lease_duration: float = 15.0
    """How long a Lease stays valid after its last renewal; followers wait this long."""
    renew_deadline: float = 10.0
    """How long the leader keeps trying to renew before it steps down."""
    retry_period: float = 2.0
    """Time between attempts to acquire or renew."""
    release_on_cancel: bool = True
    """Release the Lease when `run()` is cancelled, so a successor takes over at once."""

    def __post_init__(self) -> None:
        if not (
            0 < self.retry_period * _ACQUIRE_JITTER < self.renew_deadline < self.lease_duration
        ):
            raise ConfigError(
                "leader election needs lease_duration > renew_deadline > 1.2 × retry_period "
                f"> 0, got {self.lease_duration}, {self.renew_deadline}, {self.retry_period}"
            )
        if not self.identity:
            raise ConfigError("leader election needs a non-empty identity")


class Leadership(Protocol):
    """Who leads, observable as a flag, two events and change callbacks."""

    leading: asyncio.Event
    not_leading: asyncio.Event

    @property
    def is_leader(self) -> bool: ...

    async def wait_leader(self) -> None: ...

    async def wait_not_leader(self) -> None: ...

    def on_change(self, callback: Callback) -> Callable[[], None]: ...

    async def run(self) -> None: ...


class _Flag:
    """The observable part: exactly one of `leading` / `not_leading` is set at any time."""

    def __init__(self, leader: bool) -> None:
        self.leading = asyncio.Event()
        self.not_leading = asyncio.Event()
        self._callbacks: list[Callback] = []
        (self.leading if leader else self.not_leading).set()

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    async def wait_leader(self) -> None:
        """Return once this replica leads (at once if it does)."""
        await self.leading.wait()

    async def wait_not_leader(self) -> None:
        """Return once this replica does not lead (at once if it does not)."""
        await self.not_leading.wait()

    def on_change(self, callback: Callback) -> Callable[[], None]:
        """Call `callback(is_leader)` on every change; returns a function that unsubscribes."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    def _set(self, leader: bool) -> None:
        if leader == self.is_leader:
            return
        (self.leading if leader else self.not_leading).set()
        (self.not_leading if leader else self.leading).clear()
        for callback in list(self._callbacks):
            try:
                callback(leader)
            except Exception:  # one broken observer must not stop the others hearing
                log.exception("leadership callback failed", leader=leader)


class LocalLeader(_Flag):
    """Always the leader: the default when one process runs alone."""

    def __init__(self) -> None:
        super().__init__(leader=True)

    async def run(self) -> None:
        """Wait until cancelled, then stop leading (so `while_leading` work stops)."""
        try:
            await asyncio.Event().wait()
        finally:
            self._set(False)


class _Outcome(Enum):
    HELD = "held"  # we hold the Lease now
    TAKEN = "taken"  # another holder's Lease is valid
    RETRY = "retry"  # a write race or an API failure: try again later


class LeaderElector(_Flag):
    """Leader election on a Lease; `run()` is the long-lived loop, owned by the caller."""

    def __init__(
        self,
        api_client: Any,
        settings: LeaderSettings,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        from kubernetes_asyncio import client

        super().__init__(leader=False)
        self.settings = settings
        self._api_client = api_client
        self._leases = client.CoordinationV1Api(api_client)
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)
        self._log = log.bind(
            lease=f"{settings.namespace}/{settings.lease_name}", identity=settings.identity
        )

    async def run(self) -> None:
        """Acquire, renew, step down, repeat; release the Lease when cancelled."""
        try:
            while True:
                await self._acquire()
                await self._renew()
        finally:
            leading = self.is_leader
            self._set(False)  # singleton work stops before a successor can start
            if leading and self.settings.release_on_cancel:
                await self._release()

    async def _acquire(self) -> None:
        period = self.settings.retry_period
        while await self._attempt() is not _Outcome.HELD:
            await self._clock.sleep(period * (1 + self._rng.random() * _ACQUIRE_JITTER))
        self._log.info("leadership acquired")
        self._set(True)

    async def _renew(self) -> None:
        settings = self.settings
        renewed = self._clock.monotonic()
        while True:
            await self._clock.sleep(settings.retry_period)
            outcome = await self._attempt()
            if outcome is _Outcome.HELD:
                renewed = self._clock.monotonic()
            elif outcome is _Outcome.TAKEN:
                self._log.warning("leadership lost: another replica holds the lease")
                break
            elif self._clock.monotonic() - renewed >= settings.renew_deadline:
                self._log.warning(
                    "leadership lost: could not renew within the deadline",
                    renew_deadline=settings.renew_deadline,
                )
                break
        self._set(False)

    async def _attempt(self) -> _Outcome:
        """One try to acquire or renew, as client-go's tryAcquireOrRenew."""
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            return await self._try_acquire_or_renew()
        except ApiException as err:
            if err.status == _CONFLICT:  # someone else wrote first; re-read next time
                return _Outcome.RETRY
            self._log.warning("lease request failed", status=err.status, reason=err.reason)
        except (aiohttp.ClientError, TimeoutError, OSError, DecodeError) as err:
            self._log.warning("lease request failed", error=f"{type(err).__name__}: {err}")
        return _Outcome.RETRY

    async def _try_acquire_or_renew(self) -> _Outcome:
        now = self._clock.now()
        lease = await self._read()
        if lease is None:
            await self._write(None, self._spec(now, None))
            return _Outcome.HELD
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        if holder and holder != self.settings.identity and not self._expired(spec, now):
            return _Outcome.TAKEN
        await self._write(lease, self._spec(now, spec))
        return _Outcome.HELD

    def _expired(self, spec: dict[str, Any], now: datetime) -> bool:
        renewed = spec.get("renewTime")
        if not renewed:
            return True
        seconds = spec.get("leaseDurationSeconds") or self.settings.lease_duration
        return parse_time(renewed, where="lease renewTime") + timedelta(seconds=seconds) < now

    def _spec(self, now: datetime, old: dict[str, Any] | None) -> dict[str, Any]:
        """The spec we write: renewed if we held it, a new acquisition otherwise."""
        stamp = format_micro_time(now)
        if old is None:
            return self._record(stamp, stamp, 0)
        transitions = int(old.get("leaseTransitions") or 0)
        if old.get("holderIdentity") != self.settings.identity:
            return self._record(stamp, stamp, transitions + 1)
        acquired = old.get("acquireTime")
        since = format_micro_time(parse_time(acquired)) if acquired else stamp
        return self._record(since, stamp, transitions)

    def _record(self, acquired: str, renewed: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.settings.identity,
            "leaseDurationSeconds": math.ceil(self.settings.lease_duration),
            "acquireTime": acquired,
            "renewTime": renewed,
            "leaseTransitions": transitions,
        }

    async def _read(self) -> dict[str, Any] | None:
        from kubernetes_asyncio.client.exceptions import ApiException

        settings = self.settings
        try:
            lease = await self._leases.read_namespaced_lease(
                settings.lease_name, settings.namespace, _request_timeout=settings.renew_deadline
            )
        except ApiException as err:
            if err.status == _NOT_FOUND:
                return None
            raise
        found: dict[str, Any] = self._api_client.sanitize_for_serialization(lease)
        return found

    async def _write(self, lease: dict[str, Any] | None, spec: dict[str, Any]) -> None:
        """Create the Lease, or replace the one we read (its resourceVersion guards the race)."""
        settings = self.settings
        timeout = settings.renew_deadline
        if lease is None:
            meta = {"name": settings.lease_name, "namespace": settings.namespace}
            body: Any = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": meta,
                "spec": spec,
            }
            await self._leases.create_namespaced_lease(
                settings.namespace, body, _request_timeout=timeout
            )
            return
        body = {**lease, "spec": spec}
        await self._leases.replace_namespaced_lease(
            settings.lease_name, settings.namespace, body, _request_timeout=timeout
        )

    async def _release(self) -> None:
        """Hand the Lease back (best effort: if it fails, the Lease simply expires)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            lease = await self._read()
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.settings.identity:
                return
            stamp = format_micro_time(self._clock.now())
            released = {
                "leaseDurationSeconds": 1,
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": int(spec.get("leaseTransitions") or 0),
            }
            await self._write(lease, released)
            self._log.info("leadership released")
        except (ApiException, aiohttp.ClientError, TimeoutError, OSError, DecodeError) as err:
            self._log.warning(
                "could not release the lease; it will expire", error=f"{type(err).__name__}: {err}"
            )


async def while_leading(
    leadership: Leadership, work: Callable[[], Awaitable[None]], *, name: str = "singleton"
) -> None:
    """Run `work()` whenever this replica leads; cancel it promptly when leadership is lost.

    Returns when `work()` returns on its own; re-raises its exception. Cancelling this
    coroutine cancels the work and waits for it to end.
    """
    while True:
        await leadership.wait_leader()
        if await _lead_once(leadership, work, name):
            return


async def _lead_once(
    leadership: Leadership, work: Callable[[], Awaitable[None]], name: str
) -> bool:
    """Run the work for one term; True when it ended by itself."""

    async def run_work() -> None:
        await work()

    task = asyncio.create_task(run_work(), name=name)
    lost = asyncio.create_task(leadership.wait_not_leader(), name=f"{name}: leadership lost")
    try:
        await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        lost.cancel()
        task.cancel()
        await asyncio.wait({task, lost})
    if task.cancelled():
        log.info("singleton stopped: leadership lost", task=name)
        return False
    error = task.exception()
    if error is not None:
        raise error
    return True
