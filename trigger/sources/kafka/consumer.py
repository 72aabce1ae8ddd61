"""One consumer group member: fetch, hand records out concurrently, commit in order.

`GroupConsumer` owns one aiokafka consumer for one (cluster, group) and the tasks
handling its records: each fetch hands a partition's records to the handler as one chunk
(one task), which finishes them one by one as they are done. Chunks run concurrently
across and within partitions; each partition's `PartitionWindow` decides what may be
committed (only a finished prefix) and when the partition pauses (its in-flight bound),
and the process's `InFlightBudget`, shared by every group, when all of them pause (see
`kafka_offsets`). A partition fetches while neither its window nor the budget is held and
it is not given up; `_settle` applies that rule whenever one of them changes.

Commits are batched on a short interval and forced when partitions are given up: on
revocation (the rebalance listener waits for their in-flight records, up to a deadline,
and commits before the partitions move), on a topic change and on stop. A partition being
given up is retired first: paused for good and taking nothing more, so the records that
are waited for are all there is, and nothing is fetched meanwhile that the next owner (or
this one, after a topic change) would handle again. Records cut short by the deadline are
not committed; the next owner gets them again, and the Workflow names make the
redelivery a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from trigger.clock import Clock
from trigger.settings import KafkaCluster
from trigger.sources.kafka.offsets import InFlightBudget, PartitionWindow

log = structlog.get_logger("trigger.sources.kafka.source")

Finished = Callable[[int], None]  # called with each record's offset once it is done
# (cluster, consecutive aiokafka ConsumerRecords of one partition, finished): returns when
# every record is done, calling `finished` for each as it is.
Handler = Callable[[str, list[Any], Finished], Coroutine[Any, Any, None]]
FETCH_TIMEOUT_MS: Final = 200  # a stop or a topic change is seen within this
MAX_RECORDS: Final = 2000  # per fetch call, across partitions
COMMIT_INTERVAL: Final = 0.2  # seconds between routine commits; a crash redelivers these
FETCH_MAX_WAIT_MS: Final = 100  # broker long-poll; bounds latency once a partition is idle


@dataclass(frozen=True)
class GroupSpec:
    """Which group of which cluster, with the connection options already resolved."""

    cluster: str
    group: str
    settings: KafkaCluster
    options: dict[str, Any]

    def consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            session_timeout_ms=int(s.session_timeout * 1000),
            heartbeat_interval_ms=int(s.heartbeat_interval * 1000),
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            **self.options,
        )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, group: GroupConsumer) -> None:
        self._group = group

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._group.give_up(set(revoked), "revoked", self._group.revoke_deadline)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._group.assigned(set(assigned))


class GroupConsumer:
    """One consumer-group member; see the module docstring."""

    def __init__(
        self,
        spec: GroupSpec,
        handler: Handler,
        clock: Clock,
        budget: InFlightBudget,
        *,
        revoke_deadline: float,
    ) -> None:
        self.spec = spec
        self.topics: frozenset[str] = frozenset()
        self.windows: dict[TopicPartition, PartitionWindow] = {}
        self.peaks: dict[TopicPartition, int] = {}
        self._handler = handler
        self._clock = clock
        self._budget = budget
        self.revoke_deadline = revoke_deadline
        self._consumer: AIOKafkaConsumer | None = None
        self._fetcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_commit = 0.0
        self._log = log.bind(cluster=spec.cluster, group=spec.group)

    @property
    def fetcher(self) -> asyncio.Task[None]:
        assert self._fetcher is not None, "start() first"
        return self._fetcher

    async def start(self, topics: frozenset[str]) -> None:
        consumer = self.spec.consumer()
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()  # release the half-opened client before the retry
            raise
        self._consumer = consumer
        self._budget.watch(self._budget_changed)
        self._subscribe(topics)
        self._fetcher = asyncio.create_task(
            self._fetch(), name=f"kafka:{self.spec.cluster}:{self.spec.group}"
        )
        self._log.info("kafka consumer started", topics=sorted(topics))

    def _subscribe(self, topics: frozenset[str]) -> None:
        assert self._consumer is not None
        self.topics = topics
        self._consumer.subscribe(topics=sorted(topics), listener=_Listener(self))

    async def resubscribe(self, topics: frozenset[str]) -> None:
        """Follow a rule reload; what is in flight is finished and committed first."""
        assert self._consumer is not None
        # aiokafka forgets the old assignment on subscribe(), and with it the right to
        # commit for it, so settle everything before switching.
        await self.give_up(set(self.windows), "topics changed", self.revoke_deadline)
        self._subscribe(topics)
        self._log.info("kafka subscription changed", topics=sorted(topics))

    async def _fetch(self) -> None:
        assert self._consumer is not None
        while not self._stopping:
            # No more than the budget has room for (what aiokafka holds back stays in its
            # buffer); at none, every partition is paused and this only keeps the member
            # polling, which the group requires (max_poll_interval).
            limit = min(MAX_RECORDS, max(self._budget.room, 1))
            self._dispatch_all(
                await self._consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=limit)
            )
            if self._clock.monotonic() - self._last_commit >= COMMIT_INTERVAL:
                await self._commit(self.windows)

    def _dispatch_all(self, batch: dict[TopicPartition, list[Any]]) -> None:
        # Not inline in `_fetch`, whose locals would keep every fetched record alive until
        # the next fetch returns: once dispatched, each record belongs to its task alone.
        for tp, records in batch.items():
            self._dispatch(tp, records)

    def _dispatch(self, tp: TopicPartition, records: list[Any]) -> None:
        """One task for the records the window and the budget have room for; the rest are
        handed back."""
        assert self._consumer is not None
        window = self.windows.get(tp)
        if window is None:  # records never come before their assignment; be safe anyway
            window = self._window(tp)
        taken = records[: window.room]
        if len(taken) < len(records):
            # The position rewinds to the first record not taken and the partition pauses,
            # so nothing beyond the bounds is held in memory.
            with contextlib.suppress(IllegalStateError):  # given up: no position to keep
                self._consumer.seek(tp, records[len(taken)].offset)
        if taken:
            for record in taken:
                window.take(record.offset)
            finished = functools.partial(self._finished, tp, window)
            task = asyncio.create_task(self._handler(self.spec.cluster, taken, finished))
            window.tasks.add(task)
            task.add_done_callback(functools.partial(self._done, window, taken[0].offset))
        self.peaks[tp] = max(self.peaks.get(tp, 0), window.peak)
        self._settle(tp, window)

    def _finished(self, tp: TopicPartition, window: PartitionWindow, offset: int) -> None:
        window.finish(offset)
        self._settle(tp, window)

    def _done(self, window: PartitionWindow, first: int, task: asyncio.Task[None]) -> None:
        window.tasks.discard(task)
        if task.cancelled():
            return  # cut short by a deadline: what is not finished is never committed
        error = task.exception()
        if error is not None:  # the handler retries everything it can; this is a bug
            self._log.error("record handler failed", first_offset=first, exc_info=error)

    def _window(self, tp: TopicPartition) -> PartitionWindow:
        window = PartitionWindow(self.spec.settings.max_in_flight_per_partition, self._budget)
        self.windows[tp] = window
        return window

    def _settle(self, tp: TopicPartition, window: PartitionWindow) -> None:
        """Pause or resume the partition so that it fetches exactly when it may."""
        assert self._consumer is not None
        paused = self._stopping or window.retired or window.held or self._budget.held
        if paused == window.paused:
            return
        window.paused = paused
        with contextlib.suppress(IllegalStateError):  # no longer assigned: nothing to do
            if paused:
                self._consumer.pause(tp)
            else:
                self._consumer.resume(tp)

    def _budget_changed(self) -> None:
        for tp, window in list(self.windows.items()):
            self._settle(tp, window)

    def assigned(self, tps: set[TopicPartition]) -> None:
        """New partitions start from the group's committed offset (aiokafka does that)."""
        for tp in tps:
            self._settle(tp, self._window(tp))
        self._log.info("kafka partitions assigned", partitions=_names(tps))

    async def give_up(self, tps: set[TopicPartition], why: str, deadline: float) -> None:
        """Finish (within `deadline` seconds) and commit the partitions' in-flight records."""
        windows = {tp: self.windows[tp] for tp in tps if tp in self.windows}
        for tp, window in windows.items():
            window.retired = True  # so the tasks below are all there is to wait for
            self._settle(tp, window)
        tasks = {task for window in windows.values() for task in window.tasks}
        unfinished = await _wait(tasks, deadline, self._clock)
        await self._commit(windows)
        for tp, window in windows.items():
            window.release()
            if self.windows.get(tp) is window:  # a concurrent give_up may have dropped it
                del self.windows[tp]
        self._log.info(
            "kafka partitions given up", why=why, partitions=_names(tps), unfinished=unfinished
        )

    async def _commit(self, windows: dict[TopicPartition, PartitionWindow]) -> None:
        assert self._consumer is not None
        self._last_commit = self._clock.monotonic()
        # Window objects are captured: a revocation may drop them from `windows` meanwhile.
        points = {tp: (w, p) for tp, w in windows.items() if (p := w.to_commit()) is not None}
        if not points:
            return
        try:
            await self._consumer.commit({tp: point for tp, (_, point) in points.items()})
        except (KafkaError, IllegalStateError) as exc:
            # A rebalance took the partitions (their next owner re-handles from the last
            # commit) or the broker is away (the next commit carries these offsets too).
            self._log.warning("kafka commit failed", error=f"{type(exc).__name__}: {exc}")
            return
        for window, point in points.values():
            window.committed = point

    async def stop(self, deadline: float) -> None:
        """Stop fetching, finish in-flight records within `deadline`, commit, leave."""
        if self._stopping or self._consumer is None:
            return
        self._stopping = True
        started = self._clock.monotonic()
        self._budget_changed()  # pauses every partition
        if self._fetcher is not None:
            await _wait({self._fetcher}, deadline, self._clock)
        left = max(deadline - (self._clock.monotonic() - started), 0.0)
        await self.give_up(set(self.windows), "stopping", left)
        self._budget.unwatch(self._budget_changed)
        await self._consumer.stop()  # sends LeaveGroup: the others take over at once
        self._log.info("kafka consumer stopped")

    async def abort(self) -> None:
        """Tear down after a failure: nothing more is committed (records are redelivered)."""
        self._stopping = True
        tasks = {t for w in self.windows.values() for t in w.tasks}
        if self._fetcher is not None:
            tasks.add(self._fetcher)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for window in self.windows.values():
            window.release()  # the budget outlives this consumer: the source restarts
        self.windows.clear()
        self._budget.unwatch(self._budget_changed)
        if self._consumer is not None:
            await self._consumer.stop()


async def _wait(tasks: set[asyncio.Task[None]], timeout: float, clock: Clock) -> int:  # noqa: ASYNC109
    """Wait up to `timeout` (clock) seconds for `tasks`; cancel the rest; how many were cut."""
    pending = {t for t in tasks if not t.done()}
    if not pending:
        return 0
    expiry = asyncio.ensure_future(clock.sleep(timeout))
    try:
        while pending and not expiry.done():
            await asyncio.wait({*pending, expiry}, return_when=asyncio.FIRST_COMPLETED)
            pending = {t for t in pending if not t.done()}
    finally:
        expiry.cancel()
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return len(pending)


def _names(tps: Iterable[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in tps)
