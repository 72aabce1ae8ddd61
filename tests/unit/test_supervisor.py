"""The supervisor: failing sources restart with backoff; failing core tasks end the daemon."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from trigger.clock import VirtualClock
from trigger.core.metrics import Metrics
from trigger.daemon.supervisor import Supervisor


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Let the loop run until `predicate` holds (bounded: no real time involved)."""
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_failing_source_is_restarted_with_growing_backoff() -> None:
    """A source that fails is restarted after 1 s, then 2 s; restarts are counted."""
    clock = VirtualClock()
    metrics = Metrics()
    supervisor = Supervisor(clock, metrics)
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(clock.monotonic())
        if len(runs) < 3:
            raise RuntimeError("transport down")
        await asyncio.Event().wait()

    supervisor.start("source:x", flaky, "source")
    await wait_until(lambda: clock.sleeping == 1)
    await clock.advance(1)
    await wait_until(lambda: clock.sleeping == 1 and len(runs) == 2)
    await clock.advance(2)
    await wait_until(lambda: len(runs) == 3)
    assert [round(b - a, 3) for a, b in itertools.pairwise(runs)] == [1.0, 2.0]
    assert metrics.source_restarts.labels("x")._value.get() == 2
    assert supervisor.running("source:") == {"source:x": True}
    await supervisor.stop()
    assert supervisor.running() == {}
    assert not supervisor.failed.done()


async def test_failing_core_task_ends_the_daemon() -> None:
    """A core task that raises resolves `failed` and is not restarted."""
    supervisor = Supervisor(VirtualClock(), Metrics())
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    supervisor.start("reloader", broken, "core")
    error = await asyncio.wait_for(supervisor.failed, 5)
    assert isinstance(error, RuntimeError) and calls == 1
    await supervisor.stop()


async def test_core_task_that_returns_ends_the_daemon() -> None:
    """A core task that ends on its own is reported as a failure too."""
    supervisor = Supervisor(VirtualClock(), Metrics())

    async def quits() -> None:
        return None

    supervisor.start("leader", quits, "core")
    error = await asyncio.wait_for(supervisor.failed, 5)
    assert "ended" in str(error)
    await supervisor.stop()


async def test_cancel_ends_a_source_without_restarting_it() -> None:
    """cancel() cancels a source task at once (no restart); stop_task then reaps it."""
    supervisor = Supervisor(VirtualClock(), Metrics())
    ended: list[str] = []

    async def source() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    supervisor.start("source:x", source, "source")
    await asyncio.sleep(0)
    supervisor.cancel("source:x")
    supervisor.cancel("source:unknown")  # nothing to cancel: no error
    await wait_until(lambda: supervisor.running("source:") == {"source:x": False})
    assert ended == ["cancelled"]
    await supervisor.stop_task("source:x")
    assert supervisor.running() == {}


async def test_a_source_that_ends_when_asked_is_neither_restarted_nor_warned_about() -> None:
    """A source told it is ending (a graceful stop) may return: that is quiet, no restart."""
    from structlog.testing import capture_logs

    clock = VirtualClock()
    metrics = Metrics()
    supervisor = Supervisor(clock, metrics)
    stop = asyncio.Event()

    async def source() -> None:
        await stop.wait()

    supervisor.start("source:cron", source, "source")
    await asyncio.sleep(0)
    with capture_logs() as logs:
        supervisor.ending("source:cron")
        stop.set()
        await wait_until(lambda: supervisor.running("source:") == {"source:cron": False})
    assert logs == []
    assert clock.sleeping == 0
    assert metrics.source_restarts.labels("source:cron")._value.get() == 0
    await supervisor.stop_task("source:cron")
    assert supervisor.running() == {}


async def test_source_stopped_on_purpose_reads_down_under_its_own_label() -> None:
    """A source told it is ending and returning sets `source_up{source="x"}` to 0, and no
    stray series under the task's name appears."""
    metrics = Metrics()
    supervisor = Supervisor(VirtualClock(), metrics)
    release = asyncio.Event()

    async def source() -> None:
        await release.wait()

    supervisor.start("source:x", source, "source")
    await wait_until(lambda: metrics.source_up.labels("x")._value.get() == 1)
    supervisor.ending("source:x")
    release.set()
    await wait_until(lambda: supervisor.running("source:") == {"source:x": False})
    assert metrics.source_up.labels("x")._value.get() == 0
    labels = {s.labels["source"] for f in metrics.source_up.collect() for s in f.samples}
    assert labels == {"x"}
    await supervisor.stop()
