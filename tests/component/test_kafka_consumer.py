"""One consumer-group member (`GroupConsumer`) in-process against a real tansu broker.

The handler is the test's: each record waits until the test lets it finish, so the
scenarios can hold records in flight exactly as long as they need to and look at what
the member fetched, paused and committed meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition

from tests.component.test_kafka_source import committed, json_records, poll, produce, unique
from trigger.clock import SystemClock
from trigger.settings import KafkaCluster
from trigger.sources.kafka.config import client_options
from trigger.sources.kafka.consumer import Finished, GroupConsumer, GroupSpec
from trigger.sources.kafka.offsets import InFlightBudget
from trigger.testing.kafka import KafkaBroker

Key = tuple[str, int, int]  # topic, partition, offset


class Gates:
    """A record handler whose records finish only when the test releases them."""

    def __init__(self, budget: InFlightBudget) -> None:
        self.seen: list[Key] = []  # every record handed over, in order
        self.held: dict[Key, asyncio.Event] = {}  # handed over, not yet finished
        self.open: Callable[[Key], bool] = lambda key: False  # finish these at once
        self.most_held = 0
        self._budget = budget
        self.most_budgeted = 0

    async def __call__(self, cluster: str, records: list[Any], finished: Finished) -> None:
        await asyncio.gather(*(self._one(record, finished) for record in records))

    async def _one(self, record: Any, finished: Finished) -> None:
        key = (record.topic, record.partition, record.offset)
        self.seen.append(key)
        if not self.open(key):
            gate = self.held[key] = asyncio.Event()
            self.most_held = max(self.most_held, len(self.held))
            self.most_budgeted = max(self.most_budgeted, self._budget.in_flight)
            await gate.wait()
            del self.held[key]
        finished(record.offset)

    def release(self, keys: list[Key] | None = None) -> None:
        for key in list(self.held) if keys is None else keys:
            self.held[key].set()


def member(
    bootstrap: str, group: str, gates: Gates, budget: InFlightBudget, window: int
) -> GroupConsumer:
    settings = KafkaCluster(
        bootstrap_servers=bootstrap,
        group=group,
        auto_offset_reset="earliest",
        session_timeout=1.0,
        heartbeat_interval=0.2,
        max_in_flight_per_partition=window,
    )
    spec = GroupSpec("default", group, settings, client_options("default", settings, {}))
    return GroupConsumer(spec, gates, SystemClock(), budget, revoke_deadline=30.0)


async def until(condition: Callable[[], Any], what: str) -> None:
    async def check() -> Any:
        return condition()

    await poll(check, what)


# --- a topic change -----------------------------------------------------------------------


async def test_a_partition_being_given_up_for_a_topic_change_stays_paused(
    broker: KafkaBroker,
) -> None:
    """While a topic change waits for in-flight records, a partition that drains is not
    resumed, so nothing is fetched that would be handled again after the switch."""
    topic, added, group = unique("change"), unique("added"), unique("g")
    await broker.create_topics({topic: 1, added: 1})
    await produce(broker.bootstrap, topic, json_records(2, partitions=1))
    budget = InFlightBudget(1000)
    gates = Gates(budget)
    consumer = member(broker.bootstrap, group, gates, budget, window=4)
    tp = TopicPartition(topic, 0)
    await consumer.start(frozenset({topic}))
    try:
        await until(lambda: len(gates.held) == 2, "offsets 0 and 1 in flight")
        change = asyncio.create_task(consumer.resubscribe(frozenset({topic, added})))
        await until(lambda: consumer.windows[tp].paused, "the partition paused for the change")
        await produce(broker.bootstrap, topic, json_records(8, partitions=1, start=2))
        gates.release([(topic, 0, 0)])
        await until(lambda: (topic, 0, 0) not in gates.held, "offset 0 finished")
        assert consumer.windows[tp].paused  # drained to half its window, and still paused
        gates.release([(topic, 0, 1)])
        await change
        before_switch = list(gates.seen)
        gates.open = lambda key: True
        gates.release()
        await until(lambda: len(set(gates.seen)) == 10, "every record handled")
        await until(lambda: consumer.windows.get(tp) and not consumer.windows[tp].in_flight, "idle")
    finally:
        await consumer.stop(10.0)
    assert before_switch == [(topic, 0, 0), (topic, 0, 1)]
    assert Counter(gates.seen) == {(topic, 0, offset): 1 for offset in range(10)}
    assert await committed(broker.bootstrap, group, topic, 1) == {0: 10}
    assert budget.in_flight == 0


# --- the process-wide bound ---------------------------------------------------------------


async def test_records_in_flight_never_exceed_the_process_bound(broker: KafkaBroker) -> None:
    """With 64 partitions and room for 100 records each, no more than the process's bound
    (50) are held at once; every record is handled once and committed."""
    topic, group, partitions, each = unique("wide"), unique("g"), 64, 10
    await broker.create_topics({topic: partitions})
    await produce(broker.bootstrap, topic, json_records(partitions * each, partitions=partitions))
    budget = InFlightBudget(50)
    gates = Gates(budget)
    consumer = member(broker.bootstrap, group, gates, budget, window=100)
    await consumer.start(frozenset({topic}))
    try:
        while len(gates.seen) < partitions * each:
            # Let the member fill the budget (or take the last records), then finish all.
            await until(
                lambda: budget.held or len(gates.seen) == partitions * each, "a full budget"
            )
            released = list(gates.held)
            gates.release(released)
            await until(lambda r=released: not set(r) & set(gates.held), "released ones done")
        gates.release()
        await until(lambda: budget.in_flight == 0, "nothing in flight")
    finally:
        await consumer.stop(10.0)
    assert (gates.most_held, gates.most_budgeted, budget.peak) == (50, 50, 50)
    assert Counter(gates.seen) == {(topic, p, o): 1 for p in range(partitions) for o in range(each)}
    assert await committed(broker.bootstrap, group, topic, partitions) == {
        p: each for p in range(partitions)
    }


async def test_a_blocked_record_does_not_stall_other_partitions(broker: KafkaBroker) -> None:
    """One record that cannot finish holds one unit of the process's bound, not its
    partition's whole window: with a bound (8) below the window (10), the other partitions
    still run to the end and commit, and the blocked partition commits once it finishes."""
    topic, group, partitions, each = unique("blocked"), unique("g"), 4, 30
    await broker.create_topics({topic: partitions})
    await produce(broker.bootstrap, topic, json_records(partitions * each, partitions=partitions))
    budget = InFlightBudget(8)
    gates = Gates(budget)
    stuck = (topic, 0, 0)
    gates.open = lambda key: key != stuck
    consumer = member(broker.bootstrap, group, gates, budget, window=10)
    await consumer.start(frozenset({topic}))
    try:
        others = {(topic, p, o) for p in range(1, partitions) for o in range(each)}
        await until(lambda: others <= set(gates.seen), "the other partitions handled")
        await poll(
            lambda: _committed_is(broker, group, topic, {0: -1, 1: each, 2: each, 3: each}),
            "the other partitions committed",
        )
        assert consumer.windows[TopicPartition(topic, 0)].in_flight == 10  # its window: full
        gates.release([stuck])
        await poll(
            lambda: _committed_is(broker, group, topic, dict.fromkeys(range(partitions), each)),
            "every partition committed",
        )
    finally:
        await consumer.stop(10.0)
    assert Counter(gates.seen) == {(topic, p, o): 1 for p in range(partitions) for o in range(each)}
    assert budget.in_flight == 0


async def _committed_is(broker: KafkaBroker, group: str, topic: str, want: dict[int, int]) -> bool:
    return await committed(broker.bootstrap, group, topic, len(want)) == want
