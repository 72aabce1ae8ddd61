"""Flow control toward one backend: how many creates a second the API server gets, now.

Every create of every rule and source asks one `FlowController` per backend first
(`admit`) and tells it how the answer went (`done`). The controller keeps a rate limit
that follows what the server admits, the way TCP follows a network and the AWS SDKs'
"adaptive" retry mode follows a throttling service:

- **Slow start.** From a polite `initial_rate`, the limit doubles every `GROWTH_STEP / 2`
  while it is what holds creates back, until the first 429 — so a burst finds the
  server's admitted rate within a second or two.
- **Probing.** After a cut the limit grows `PROBE_STEP` (2 %) every `GROWTH_STEP` while it
  binds, the step doubling every second without a 429: small steps near where the server
  said no, bigger ones when a cut went too deep or the server now takes more. It never
  grows past twice the rate actually sent, so a quiet spell cannot wind it up.
- **429.** One cut per episode — answers to creates sent before the cut (or within
  `CUT_GRACE`, before the server could see it) do not cut again — to `DECREASE` (90 %) of
  the lower of the limit and the rate the server admitted lately (slow start and a
  server's burst both overshoot). A 429 again before the limit grew at all since the cut
  means the cut was not enough: then its `Retry-After` pauses the backend for everyone,
  once, instead of every refused create sleeping out its own backoff.
- **Failing.** After `TRIP` temporary failures (5xx, timeouts, lost connections) with no
  success between them, only one create at a time goes out — a probe, spaced by a doubling
  interval up to `probe_max` and bounded by `probe_timeout` — and the first success
  releases everyone: the creates waiting for admission, and the failed ones sleeping out
  their retry backoff (`backoff` wakes them). Recovery takes one probe interval, not the
  longest backoff. Failures mixed with successes (one failing namespace, one slow rule)
  never trip it: they back off alone.
- **Latency.** A smoothed latency over `SLOW` seconds and four times the fastest seen
  counts as overload too (a cut, no pause).
- A user's `qps` stays a hard ceiling (`max_rate`); per-rule rate limits apply before.

Why not CUBIC, as the AWS SDKs use: against a server that admits a fixed rate behind a
token bucket (API Priority and Fairness), CUBIC's plateau around the last cut and its
30 % cuts left 15–20 % of the admitted rate unused in the benchmark (`tests.bench.flow`);
small multiplicative steps and 10 % cuts from the measured admitted rate reach 92–95 %.

`done` takes an outcome word: "ok" (any answer that shows the backend working: created,
exists, refused as invalid), "throttled" (429), or "error" (5xx, timeouts, transport).
The controller never sleeps on the loop's own clock: time is the injected `Clock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from trigger.clock import Clock

Outcome = Literal["ok", "throttled", "error"]
State = Literal["healthy", "paused", "failing"]

DECREASE: Final = 0.9  # the limit after a cut, as a share of what it was
PROBE_STEP: Final = 0.02  # after slow start, the limit grows 2 % a step (10 %/s) to probe
GROWTH_STEP: Final = 0.2  # seconds between two growth steps
CUT_GRACE: Final = 0.1  # seconds after a cut (or two round trips) that belong to its episode
TRIP: Final = 3  # temporary failures in a row (no success between) that mean "failing"
SLOW: Final = 1.0  # seconds: a smoothed latency above this (and 4× the best) is overload
MEASURE_WINDOW: Final = 0.5  # seconds over which the sent rate is measured
_EPSILON: Final = 1e-6
TICK: Final = 0.005  # seconds: the dispatcher's shortest sleep (tokens accumulate meanwhile)


@dataclass(frozen=True)
class FlowSettings:
    """The controller's knobs (settings `flow.*`, `kubernetes.qps`, `argo_server.qps`)."""

    initial_rate: float = 50.0  # creates/s at start: polite, then slow start finds more
    min_rate: float = 1.0  # creates/s: the limit never goes below this
    max_rate: float | None = None  # creates/s: the user's hard ceiling (qps), if any
    probe_initial: float = 0.25  # seconds before the first probe of a failing backend
    probe_max: float = 1.0  # seconds: the longest interval between probes
    probe_timeout: float = 2.0  # seconds a probe may take before it counts as failed

    def __post_init__(self) -> None:
        if not 0 < self.min_rate <= self.initial_rate:
            raise ValueError(f"need 0 < min_rate <= initial_rate, got {self}")
        if self.max_rate is not None and self.max_rate < self.min_rate:
            raise ValueError(f"max_rate below min_rate: {self}")


@dataclass(frozen=True)
class Ticket:
    """One admitted create: when it was sent, its place in the order of sends, and
    whether it is a probe."""

    sent: float
    probe: bool = False
    number: int = 0


class FlowObserver(Protocol):
    """Told of every change worth a metric or a log line (the daemon's metrics)."""

    def changed(self, controller: FlowController, why: str) -> None:
        """The limit or the state changed; `why` is "cut", "paused", "failing",
        "recovered" or "grew"."""

    def answered(self, controller: FlowController, outcome: Outcome) -> None:
        """A create was answered (counted per outcome)."""


class FlowController:
    """An adaptive rate limit for one backend (see the module docstring)."""

    def __init__(
        self,
        backend: str,
        clock: Clock,
        settings: FlowSettings | None = None,
        *,
        observer: FlowObserver | None = None,
    ) -> None:
        self.backend = backend
        self.settings = s = settings or FlowSettings()
        self._clock = clock
        self._observer = observer
        now = clock.monotonic()
        self.rate = self._bounded(s.initial_rate)
        self.in_flight = 0
        self.paused_seconds = 0.0  # time everyone waited for a Retry-After, in total
        self._tokens = self._burst()
        self._refilled = now
        self._slow_start = True
        self._grown_since_cut = True  # no cut yet: a first 429 only cuts
        self._cut_at = -math.inf  # when the last cut happened
        self._sends = 0  # creates sent so far; a ticket carries its number (from 1)
        self._cut_after = 0  # sends numbered up to this one went before the last cut
        self._grown_at = now
        self._binding = False  # the limit held a create back since the last growth step
        self._paused_until = now
        self._failing = False
        self._failures = 0
        self._probe_out = False
        self._probe_delay = s.probe_initial
        self._next_probe = now
        self._before_failing = self.rate
        self._latency: float | None = None
        self._fastest: float | None = None
        self._sent: deque[float] = deque()  # send times within MEASURE_WINDOW
        self._answered_ok: deque[float] = deque()  # times of "ok" answers, likewise
        self._waiting: deque[asyncio.Future[Ticket]] = deque()
        self._dispatcher: asyncio.Task[None] | None = None
        self._change = asyncio.Event()  # set when the dispatcher should look again
        self._recovered = asyncio.Event()  # set (then replaced) when failing ends

    # --- what the submitter calls ------------------------------------------------------

    @property
    def state(self) -> State:
        if self._failing:
            return "failing"
        return "paused" if self._paused_until > self._clock.monotonic() else "healthy"

    async def admit(self) -> Ticket:
        """Wait until this backend may take one more create; returns its ticket."""
        if not self._waiting and self.state == "healthy" and self._take_token():
            return self._send(probe=False)
        future: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._wake()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._give_back(future.result())
            with contextlib.suppress(ValueError):
                self._waiting.remove(future)
            raise

    def done(self, ticket: Ticket, outcome: Outcome, retry_after: float | None = None) -> None:
        """How the create of `ticket` was answered."""
        now = self._clock.monotonic()
        self.in_flight -= 1
        if ticket.probe:
            self._probe_out = False
        if self._observer is not None:
            self._observer.answered(self, outcome)
        if outcome == "ok":
            self._ok(ticket, now)
        elif outcome == "throttled":
            self._failures = 0
            # One cut per episode: the answers to creates sent before the cut are the
            # same overload, already answered. Refused again before the limit grew at all
            # since the last cut: the cut was not enough — everyone pauses, once.
            not_enough = not self._grown_since_cut
            cut = self._cut(ticket, now, "cut")
            if cut and not_enough and retry_after and retry_after > 0:
                self._pause(now, retry_after)
        else:
            self._error(ticket, now)
        self._wake()

    def abandon(self, ticket: Ticket) -> None:
        """The create of `ticket` ended without an answer (cancelled): it says nothing of
        the backend, but its place (a probe's above all) is free again."""
        self.in_flight -= 1
        if ticket.probe:
            self._probe_out = False
        self._wake()

    async def backoff(self, seconds: float) -> None:
        """A failed create's wait before its retry: `seconds`, or less if the backend
        recovers from failing meanwhile (then the retry asks `admit` like everyone)."""
        recovered = self._recovered
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        waker = asyncio.ensure_future(recovered.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def close(self) -> None:
        """Stop the dispatcher; creates still waiting get CancelledError."""
        task, self._dispatcher = self._dispatcher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for future in self._waiting:
            future.cancel()
        self._waiting.clear()

    def describe(self) -> dict[str, object]:
        """What /status shows of this backend."""
        return {
            "backend": self.backend,
            "state": self.state,
            "rateLimit": round(self.rate, 1),
            "inFlight": self.in_flight,
            "waiting": len(self._waiting),
            "pausedSeconds": round(self.paused_seconds, 3),
        }

    # --- outcomes ---------------------------------------------------------------------

    def _ok(self, ticket: Ticket, now: float) -> None:
        self._failures = 0
        _keep(self._answered_ok, now)
        latency = max(0.0, now - ticket.sent)
        self._fastest = latency if self._fastest is None else min(self._fastest, latency)
        self._latency = latency if self._latency is None else 0.8 * self._latency + 0.2 * latency
        if self._failing:
            self._recover(now)
            return
        if self._latency > max(SLOW, 4 * (self._fastest or 0.0)):
            self._cut(ticket, now, "cut")
            return
        self._grow(now)

    def _error(self, ticket: Ticket, now: float) -> None:
        self._failures += 1
        if self._failing:
            if ticket.probe:
                self._next_probe = now + self._probe_delay
                self._probe_delay = min(self.settings.probe_max, self._probe_delay * 2)
            return
        if self._failures >= TRIP:
            self._failing = True
            self._before_failing = self.rate
            self._probe_delay = self.settings.probe_initial
            self._next_probe = now + self._probe_delay
            self._probe_delay = min(self.settings.probe_max, self._probe_delay * 2)
            self._notify("failing")

    def _recover(self, now: float) -> None:
        self._failing = False
        self._failures = 0
        self._probe_delay = self.settings.probe_initial
        # Back where it was (a little below) and finding more again: the backlog that
        # built up during the outage is worked off at the rate the server takes.
        self.rate = self._bounded(self._before_failing * DECREASE)
        self._slow_start = True
        self._grown_since_cut = True
        self._cut_at = self._grown_at = now
        self._cut_after = self._sends  # what failed before the recovery cuts nothing
        self._tokens = max(self._tokens, 1.0)
        recovered, self._recovered = self._recovered, asyncio.Event()
        recovered.set()
        self._notify("recovered")

    def _cut(self, ticket: Ticket, now: float, why: str) -> bool:
        if ticket.number <= self._cut_after:
            return False  # sent before the last cut: that cut already answered it
        if ticket.sent < self._cut_at + max(CUT_GRACE, 2 * (self._latency or 0.0)):
            return False  # sent before the server could see the cut: the same episode
        # The limit may be well above what the server takes — slow start doubles faster
        # than 429s come back, and a server's burst hides an overload for a while — so a
        # cut starts from what the server actually admitted lately, when that is lower.
        admitted = max(self._measured(self._answered_ok, now), self.settings.min_rate)
        self.rate = self._bounded(min(self.rate, admitted) * DECREASE)
        self._slow_start = False
        self._grown_since_cut = False
        self._cut_at = self._grown_at = now
        self._cut_after = self._sends
        self._tokens = min(self._tokens, 1.0)
        self._notify(why)
        return True

    def _pause(self, now: float, seconds: float) -> None:
        until = now + seconds
        if until > self._paused_until:
            self.paused_seconds += until - max(now, self._paused_until)
            self._paused_until = until
            self._notify("paused")

    def _grow(self, now: float) -> None:
        step = GROWTH_STEP / 2 if self._slow_start else GROWTH_STEP
        if not self._binding or now - self._grown_at < step:
            return
        self._binding = False
        self._grown_at = now
        if self._slow_start:  # binding already says the traffic is there: no cap
            target = self.rate * 2
        else:
            # Small steps near the rate of the last cut, bigger ones the longer no 429
            # comes (the step doubles every second: a cut that went too deep, or a server
            # that now takes more, is found again within seconds); capped by what is really
            # sent, so idling cannot wind it up.
            since = now - self._cut_at
            step = min(1.0, PROBE_STEP * 2 ** max(0.0, since - 1.0))
            target = min(self.rate * (1 + step), 2 * self._measured(self._sent, now))
        grown = self._bounded(target)
        if grown > self.rate:
            self.rate = grown
            self._grown_since_cut = True
            self._notify("grew")

    # --- admission ---------------------------------------------------------------------

    def _take_token(self) -> bool:
        now = self._clock.monotonic()
        self._tokens = min(self._burst(), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens >= 1 - _EPSILON:  # float sums of rate × time fall just short
            self._tokens -= 1
            return True
        self._binding = True
        return False

    def _send(self, *, probe: bool) -> Ticket:
        now = self._clock.monotonic()
        self.in_flight += 1
        self._sends += 1
        _keep(self._sent, now)
        if probe:
            self._probe_out = True
        return Ticket(now, probe, self._sends)

    def _give_back(self, ticket: Ticket) -> None:
        """An admitted create that was cancelled before it was sent."""
        self.in_flight -= 1
        if ticket.probe:
            self._probe_out = False
        else:
            self._tokens += 1
        self._wake()

    def _wake(self) -> None:
        self._change.set()
        if self._waiting and (self._dispatcher is None or self._dispatcher.done()):
            self._dispatcher = asyncio.create_task(self._dispatch(), name=f"flow-{self.backend}")

    async def _dispatch(self) -> None:
        """Hands out admissions to the creates waiting, in order, as the state allows."""
        while self._waiting:
            self._change.clear()
            if self._waiting[0].done():  # cancelled while waiting
                self._waiting.popleft()
                continue
            now = self._clock.monotonic()
            if self._paused_until > now:
                await self._sleep_or_change(self._paused_until - now)
            elif self._failing:
                if self._probe_out:
                    await self._sleep_or_change(None)
                elif now < self._next_probe:
                    await self._sleep_or_change(self._next_probe - now)
                else:
                    self._waiting.popleft().set_result(self._send(probe=True))
            elif self._take_token():
                self._waiting.popleft().set_result(self._send(probe=False))
            else:
                # Waking for every token would cost more than the creates it paces: wake
                # at most every TICK and hand out what has accumulated meanwhile.
                await self._sleep_or_change(max(TICK, (1 - self._tokens) / self.rate))

    async def _sleep_or_change(self, seconds: float | None) -> None:
        waits: list[asyncio.Future[object]] = [asyncio.ensure_future(self._change.wait())]
        if seconds is not None:
            waits.append(asyncio.ensure_future(self._clock.sleep(seconds)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    # --- helpers -----------------------------------------------------------------------

    @staticmethod
    def _measured(times: deque[float], now: float) -> float:
        """Events per second over the last MEASURE_WINDOW (sends, or answers "ok")."""
        while times and times[0] < now - MEASURE_WINDOW:
            times.popleft()
        return len(times) / MEASURE_WINDOW

    def _burst(self) -> float:
        """Creates that may go at once after a quiet spell: 50 ms worth of the limit."""
        return max(1.0, self.rate * 0.05)

    def _bounded(self, rate: float) -> float:
        top = self.settings.max_rate
        rate = max(self.settings.min_rate, rate)
        return rate if top is None else min(rate, top)

    def _notify(self, why: str) -> None:
        if self._observer is not None:
            self._observer.changed(self, why)


def _keep(times: deque[float], now: float) -> None:
    """Append `now`, dropping what fell out of MEASURE_WINDOW: the deque holds one window
    of times, not one per create since the last cut."""
    times.append(now)
    while times[0] < now - MEASURE_WINDOW:
        times.popleft()
