"""The flow controller in virtual time, against a simulated server.

`Server` admits `admitted` creates a second (a token bucket of 100 ms) and answers the
rest 429 with Retry-After, or fails everything while `down`; each answer takes
`latency`. Workers loop: admit, wait the latency, report the answer. The properties hold
for any admitted rate, ceiling and outage (hypothesis): the controller never exceeds a
configured ceiling, never starves, finds most of what the server admits with few
refusals, and is healthy again within one probe interval of the server's recovery.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trigger.clock import VirtualClock
from trigger.submit.flow import (
    CUT_GRACE,
    DECREASE,
    MEASURE_WINDOW,
    FlowController,
    FlowSettings,
    Outcome,
    Ticket,
)


@dataclass
class Server:
    clock: VirtualClock
    admitted: float | None = None  # creates/s; None: everything
    latency: float = 0.002
    retry_after: float | None = 1.0
    down: bool = False
    tokens: float = 1e9  # full: a server idle before the burst
    refilled: float = 0.0
    ok: int = 0
    refused: int = 0
    failed: int = 0
    sent_at: list[float] = field(default_factory=list)

    def answer(self) -> Outcome:
        now = self.clock.monotonic()
        self.sent_at.append(now)
        if self.down:
            self.failed += 1
            return "error"
        if self.admitted is None:
            self.ok += 1
            return "ok"
        burst = max(1.0, self.admitted * 0.1)
        self.tokens = min(burst, self.tokens + (now - self.refilled) * self.admitted)
        self.refilled = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.ok += 1
            return "ok"
        self.refused += 1
        return "throttled"


async def worker(flow: FlowController, server: Server, clock: VirtualClock, until: float) -> None:
    while clock.monotonic() < until:
        ticket: Ticket = await flow.admit()
        outcome = server.answer()
        await clock.sleep(server.latency)
        flow.done(ticket, outcome, server.retry_after if outcome == "throttled" else None)
        if outcome != "ok":
            await flow.backoff(1.0)


async def run(
    server: Server, flow: FlowController, clock: VirtualClock, seconds: float, workers: int = 32
) -> None:
    until = clock.monotonic() + seconds
    tasks = [asyncio.create_task(worker(flow, server, clock, until)) for _ in range(workers)]
    await clock.advance(seconds + 5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await flow.close()


def controller(clock: VirtualClock, **overrides: float | None) -> FlowController:
    return FlowController("test", clock, FlowSettings(**overrides))  # type: ignore[arg-type]


@pytest.mark.parametrize("admitted", [100.0, 300.0, 1000.0])
async def test_finds_what_the_server_admits_with_few_refusals(admitted: float) -> None:
    """From a polite start, over 20 s the controller gets at least 90 % of what the server
    admits through, with at most 1 % of creates refused (virtual time: the figures are
    the algorithm's, not the machine's)."""
    clock = VirtualClock()
    server = Server(clock, admitted=admitted, latency=0.005)
    flow = controller(clock)
    await run(server, flow, clock, 20, workers=8)
    assert server.ok >= 0.9 * admitted * 20
    assert server.refused <= 0.01 * (server.ok + server.refused)


@settings(max_examples=12, deadline=None)
@given(ceiling=st.floats(2, 400), admitted=st.none() | st.floats(50, 2000))
async def test_never_exceeds_the_ceiling(ceiling: float, admitted: float | None) -> None:
    """A user's qps is a hard ceiling: no second ever sees more sends than it allows."""
    clock = VirtualClock()
    server = Server(clock, admitted=admitted)
    flow = controller(clock, max_rate=ceiling, initial_rate=min(50.0, ceiling), min_rate=1.0)
    await run(server, flow, clock, 10, workers=8)
    burst = max(1.0, ceiling * 0.05)
    for start in range(10):
        in_second = [t for t in server.sent_at if start <= t < start + 1]
        assert len(in_second) <= ceiling + burst + 1


@settings(max_examples=12, deadline=None)
@given(outage=st.floats(0.5, 30), latency=st.floats(0.01, 0.5))
@example(outage=0.5, latency=0.5)  # errors answered only as the outage ends
async def test_recovers_within_a_probe_interval(outage: float, latency: float) -> None:
    """After an outage of any length the controller is healthy again within one probe
    interval of the server's recovery (plus the round trips of the probe that was out and
    of the one that succeeds), and creates flow again."""
    clock = VirtualClock()
    server = Server(clock, latency=latency)
    flow = controller(clock)
    until = 3 + outage + 10
    tasks = [asyncio.create_task(worker(flow, server, clock, until)) for _ in range(8)]
    await clock.advance(3)
    server.down = True
    await clock.advance(outage)
    noticed = clock.monotonic() + 2 * latency + 1  # the answers of creates sent in it
    while flow.state != "failing" and clock.monotonic() < noticed:
        await clock.advance(0.05)
    assert flow.state == "failing"
    server.down = False
    back = clock.monotonic()
    while flow.state == "failing":
        await clock.advance(0.05)
    assert clock.monotonic() - back <= flow.settings.probe_max + 2 * latency + 0.1
    done_before = server.ok
    await clock.advance(2)
    assert server.ok > done_before
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await flow.close()


async def test_failing_sends_one_probe_at_a_time() -> None:
    """Once failing, every create sent is a probe, and never two are out at once."""
    clock = VirtualClock()
    server = Server(clock, latency=0.3, down=True)
    flow = controller(clock)
    out, peak, not_probes = 0, 0, 0
    admit = flow.admit

    async def counted() -> Ticket:
        nonlocal out, peak, not_probes
        failing = flow.state == "failing"
        ticket = await admit()
        if flow.state == "failing" and failing:
            not_probes += not ticket.probe
        if ticket.probe:
            out += 1
            peak = max(peak, out)
        return ticket

    done = flow.done

    def finished(ticket: Ticket, outcome: Outcome, retry_after: float | None = None) -> None:
        nonlocal out
        out -= ticket.probe
        done(ticket, outcome, retry_after)

    flow.admit = counted  # type: ignore[method-assign]
    flow.done = finished  # type: ignore[method-assign]
    await run(server, flow, clock, 15, workers=20)
    assert (peak, not_probes) == (1, 0)


async def test_a_retry_after_pauses_everyone_once() -> None:
    """A 429 episode cuts the limit once (the answers to the other creates sent before the
    cut are the same episode); refused again before the limit grew since — the cut was
    not enough — everyone pauses for the Retry-After, once."""
    clock = VirtualClock()
    flow = controller(clock, initial_rate=1000)
    tickets = [await flow.admit() for _ in range(8)]
    for ticket in tickets[:3]:
        flow.done(ticket, "ok")
    for ticket in tickets[3:]:
        flow.done(ticket, "throttled", 2.0)
    cut = flow.rate
    assert flow.state == "healthy" and cut == pytest.approx(3 / MEASURE_WINDOW * DECREASE)
    await clock.advance(CUT_GRACE * 2)
    flow.done(await flow.admit(), "throttled", 2.0)
    assert flow.state == "paused"
    assert flow.paused_seconds == pytest.approx(2.0)
    waiting = asyncio.create_task(flow.admit())
    await clock.advance(1.9)
    assert not waiting.done()
    await clock.advance(0.2)
    assert waiting.done()
    await flow.close()


async def test_a_failing_namespace_among_working_ones_is_not_failing() -> None:
    """Errors mixed with successes never trip failing: the others keep flowing."""
    clock = VirtualClock(auto=True)
    flow = controller(clock)
    for n in range(200):
        ticket = await flow.admit()
        flow.done(ticket, "error" if n % 2 else "ok")
    assert flow.state == "healthy"
    await flow.close()


async def test_a_cancelled_probe_frees_its_place() -> None:
    """A probe cancelled mid-flight does not leave the backend without probes."""
    clock = VirtualClock(auto=True)
    flow = controller(clock)
    for _ in range(3):
        flow.done(await flow.admit(), "error")
    assert flow.state == "failing"
    await clock.advance(1)
    probe = await flow.admit()
    assert probe.probe
    flow.abandon(probe)
    await clock.advance(1)
    again = await asyncio.wait_for(flow.admit(), 5)
    assert again.probe
    await flow.close()


async def test_backoff_ends_when_the_backend_recovers() -> None:
    """A failed create sleeping out a long backoff is released by the recovery."""
    clock = VirtualClock(auto=True)
    flow = controller(clock)
    for _ in range(3):
        flow.done(await flow.admit(), "error")
    sleeper = asyncio.create_task(flow.backoff(60))
    await clock.advance(1)
    probe = await flow.admit()
    flow.done(probe, "ok")
    await clock.advance(0)
    assert sleeper.done()
    assert flow.state == "healthy"
    await flow.close()


async def test_holds_one_window_of_send_and_answer_times() -> None:
    """However many creates go through, the controller keeps only the last window's times."""
    clock = VirtualClock()
    flow = controller(clock, initial_rate=1e6)  # never binds: admit() answers at once
    for _ in range(2000):
        ticket = await flow.admit()
        await clock.advance(0.01)
        flow.done(ticket, "ok")
    window = MEASURE_WINDOW / 0.01 + 1
    assert len(flow._sent) <= window
    assert len(flow._answered_ok) <= window
    await flow.close()
