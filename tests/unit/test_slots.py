"""Slots: the submitter's FIFO concurrency limit."""

from __future__ import annotations

import asyncio

import pytest

from trigger.submit.slots import Slots


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_at_most_size_holders_and_fifo_order() -> None:
    slots = Slots(2)
    order: list[int] = []
    gates = [asyncio.Event() for _ in range(6)]

    async def worker(i: int) -> None:
        async with slots:
            order.append(i)
            await gates[i].wait()

    tasks = [asyncio.create_task(worker(i)) for i in range(6)]
    await settle()
    assert order == [0, 1]
    assert (slots.held, slots.waiting) == (2, 4)
    gates[1].set()
    await settle()
    assert order == [0, 1, 2]
    gates[0].set()
    gates[2].set()
    await settle()
    assert order == [0, 1, 2, 3, 4]
    for gate in gates:
        gate.set()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4, 5]
    assert (slots.held, slots.waiting) == (0, 0)


async def test_a_cancelled_waiter_is_skipped() -> None:
    slots = Slots(1)
    await slots.acquire()
    waiter = asyncio.create_task(slots.acquire())
    later = asyncio.create_task(slots.acquire())
    await settle()
    waiter.cancel()
    await settle()
    slots.release()
    await later
    assert waiter.cancelled()
    assert slots.held == 1
    slots.release()
    assert slots.held == 0


async def test_a_waiter_cancelled_after_the_handover_passes_the_slot_on() -> None:
    slots = Slots(1)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await settle()
    slots.release()  # hands the slot to `first`, which has not run yet
    first.cancel()
    await settle()
    assert first.cancelled()
    assert second.done() and second.exception() is None
    assert slots.held == 1
    slots.release()
    assert (slots.held, slots.waiting) == (0, 0)


async def test_the_fast_path_does_not_overtake_waiters() -> None:
    slots = Slots(1)
    await slots.acquire()
    queued = asyncio.create_task(slots.acquire())
    await settle()
    slots.release()  # handed to `queued`: no free slot appears for a newcomer
    newcomer = asyncio.create_task(slots.acquire())
    await settle()
    assert queued.done()
    assert not newcomer.done()
    slots.release()
    await newcomer


async def test_burst_release_with_many_waiters() -> None:
    slots = Slots(512)
    done = 0

    async def worker() -> None:
        nonlocal done
        async with slots:
            await asyncio.sleep(0)
            done += 1

    await asyncio.gather(*(worker() for _ in range(5000)))
    assert done == 5000
    assert (slots.held, slots.waiting) == (0, 0)


def test_release_more_than_acquired_is_a_bug() -> None:
    slots = Slots(1)
    with pytest.raises(RuntimeError, match="more often"):
        slots.release()


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0)
