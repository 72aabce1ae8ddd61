"""Leadership: which replica runs the singleton sources (cron, OSS polling).

`LeaderElector` holds a `coordination.k8s.io/v1` Lease by client-go's leaderelection rules,
which need no agreement between the replicas' wall clocks:

- A follower never compares the holder's renewTime with its own clock. It notes on its
  own monotonic clock when it last saw the Lease record change, and takes the Lease only
  after seeing no change for the record's leaseDurationSeconds, or when nobody holds it.
  A replica that has just started has seen no change yet: it waits a whole lease
  duration before it takes a held Lease, however old that Lease's renewTime.
- The leader renews every `retry_period`. Its renewTime is stamped when the write is
  sent. Each attempt (a read, then a write carrying the resourceVersion it read, so of two
  replicas racing for the Lease exactly one wins and the other gets 409) is cut off at the
  renew deadline: `renew_deadline` after the last successful write was *sent*. When that
  passes without a renewal the leader steps down at once, a request still in flight or not.

A successful write sent at time S is applied after S, so a follower sees the change after
S and waits until S + lease_duration at least (one that read the Lease before the write
loses its own write with 409), while the leader stops leading at S + renew_deadline at
the latest: one replica stops `lease_duration − renew_deadline` before another can start
(monotonic clocks are assumed to run at the same rate, as client-go does). Losing
leadership does not end the process: the elector goes back to waiting;
`trigger.daemon.sources.SourceManager.follow` cancels the singleton work the moment
leadership is lost. On cancellation the elector releases the Lease (no holder, 1 s
duration) so a successor takes over at its next retry instead of after a whole lease
duration.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final, Protocol

import aiohttp
import structlog

from trigger.clock import Clock, SystemClock
from trigger.errors import ConfigError, DecodeError
from trigger.events import parse_time

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
    """How long a follower must see the Lease unchanged (on its own clock) to take it."""
    renew_deadline: float = 10.0
    """The leader steps down this long after its last successful renewal was sent."""
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
        """Wait until cancelled, then stop leading (so singleton work stops)."""
        try:
            await asyncio.Event().wait()
        finally:
            self._set(False)


class _Outcome(Enum):
    HELD = "held"  # we hold the Lease now
    TAKEN = "taken"  # another holder's Lease is valid
    RETRY = "retry"  # a write race, an API failure or the deadline: try again later


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
        self.attempting = False
        """True while an acquire or renew attempt is in flight."""
        self._api_client = api_client
        self._leases = client.CoordinationV1Api(api_client)
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)
        self._observed: tuple[Any, dict[str, Any]] | None = None  # the record last seen
        self._observed_at = 0.0  # monotonic: when that record was first seen
        self._renewed = -math.inf  # monotonic: when our last successful write was sent
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
        settings = self.settings
        while True:
            # An acquisition must come back within renew_deadline too: leading starts only
            # while the write that won it is young enough.
            outcome = await self._attempt(self._now() + settings.renew_deadline)
            if outcome is _Outcome.HELD and self._now() < self._deadline():
                break
            jitter = 1 + self._rng.random() * _ACQUIRE_JITTER
            await self._clock.sleep(settings.retry_period * jitter)
        self._log.info("leadership acquired")
        self._set(True)

    async def _renew(self) -> None:
        """Renew every retry_period; step down at the deadline or when another holds it."""
        while True:
            deadline = self._deadline()
            await self._clock.sleep(min(self.settings.retry_period, deadline - self._now()))
            outcome = await self._attempt(deadline)
            if outcome is _Outcome.TAKEN:
                self._log.warning("leadership lost: another replica holds the lease")
                break
            if outcome is not _Outcome.HELD and self._now() >= deadline:
                self._log.warning(
                    "leadership lost: could not renew within the deadline",
                    renew_deadline=self.settings.renew_deadline,
                )
                break
        self._set(False)

    def _now(self) -> float:
        return self._clock.monotonic()

    def _deadline(self) -> float:
        """Until when we may lead: renew_deadline after our last successful write was sent.

        A follower sees that write only after it was sent and then waits lease_duration,
        so we stop lease_duration − renew_deadline before anyone else can start.
        """
        return self._renewed + self.settings.renew_deadline

    async def _attempt(self, deadline: float) -> _Outcome:
        """One try to acquire or renew (client-go's tryAcquireOrRenew), cut off at `deadline`
        on the clock, however slow the API server is."""
        from kubernetes_asyncio.client.exceptions import ApiException

        remaining = deadline - self._now()
        if remaining <= 0:
            return _Outcome.RETRY
        self.attempting = True
        attempt = asyncio.ensure_future(self._try_acquire_or_renew())
        timer = asyncio.ensure_future(self._clock.sleep(remaining))
        try:
            await asyncio.wait({attempt, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            attempt.cancel()
            await asyncio.wait({attempt})
            self.attempting = False
        if attempt.cancelled():
            self._log.warning("lease request cut off at the renew deadline")
            return _Outcome.RETRY
        try:
            return attempt.result()
        except ApiException as err:
            if err.status == _CONFLICT:  # someone else wrote first; re-read next time
                return _Outcome.RETRY
            self._log.warning("lease request failed", status=err.status, reason=err.reason)
        except (aiohttp.ClientError, TimeoutError, OSError, DecodeError) as err:
            self._log.warning("lease request failed", error=f"{type(err).__name__}: {err}")
        return _Outcome.RETRY

    async def _try_acquire_or_renew(self) -> _Outcome:
        lease = await self._read()
        if lease is not None:
            self._observe(lease)
            spec: dict[str, Any] = lease.get("spec") or {}
            holder = spec.get("holderIdentity")
            if holder and holder != self.settings.identity and not self._expired(spec):
                return _Outcome.TAKEN
        sent = self._now()
        written = await self._write(lease, self._spec(self._clock.now(), lease))
        self._renewed = sent
        self._observe(written)
        return _Outcome.HELD

    def _observe(self, lease: dict[str, Any]) -> None:
        """Note when the Lease record changed, on our own monotonic clock."""
        record = ((lease.get("metadata") or {}).get("resourceVersion"), lease.get("spec") or {})
        if record != self._observed:
            self._observed, self._observed_at = record, self._now()

    def _expired(self, spec: dict[str, Any]) -> bool:
        """Whether the holder has let the Lease lapse: we have seen no change to it for its
        leaseDurationSeconds. Its renewTime is never compared with our clock."""
        seconds = spec.get("leaseDurationSeconds") or self.settings.lease_duration
        return self._now() >= self._observed_at + seconds

    def _spec(self, now: datetime, lease: dict[str, Any] | None) -> dict[str, Any]:
        """The spec we write: renewed if we held it, a new acquisition otherwise."""
        stamp = format_micro_time(now)
        if lease is None:
            return self._record(stamp, stamp, 0)
        old: dict[str, Any] = lease.get("spec") or {}
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

    async def _write(self, lease: dict[str, Any] | None, spec: dict[str, Any]) -> dict[str, Any]:
        """Create the Lease, or replace the one we read (its resourceVersion guards the race);
        returns what the server stored."""
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
            written = await self._leases.create_namespaced_lease(
                settings.namespace, body, _request_timeout=timeout
            )
        else:
            body = {**lease, "spec": spec}
            written = await self._leases.replace_namespaced_lease(
                settings.lease_name, settings.namespace, body, _request_timeout=timeout
            )
        stored: dict[str, Any] = self._api_client.sanitize_for_serialization(written)
        return stored

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
