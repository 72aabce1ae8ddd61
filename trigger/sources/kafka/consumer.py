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

Broker outages. aiokafka reconnects by itself; what it does not do is keep a commit from
landing where it must not. When the coordinator no longer knows the member (a failed
heartbeat, a broker restart), aiokafka resets the member's generation to -1 and keeps its
fetch positions until it has joined again, and a broker takes a commit at generation -1 as
a "simple" commit: an old, high offset committed then into a topic that was re-created
meanwhile would skip everything the new topic holds below it. So a commit is one request,
sent only while the member is in a generation and under that generation (`_commit_once`;
aiokafka's own commit retries under whatever generation comes next), and otherwise the
offsets wait for the next commit. And every
fetch is checked against the log: a partition's end (high watermark) that moved back, an
end below the position this member reached, records below it, or — when the group gives
a partition back — a committed offset below the one this member last committed, mean the
log is not the one the position belongs to (a topic deleted and re-created, or
truncated). The partition then starts again from the cluster's `auto_offset_reset`, with
a fresh window (records of the old log still in flight finish but are never committed),
one warning (`kafka offsets went back`) and `trigger_kafka_offset_resets_total`. Whether
the cluster answers is reported to `BrokerHealth` after every fetch (see `health`).
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
from trigger.core.metrics import Metrics
from trigger.settings import KafkaCluster
from trigger.sources.kafka.health import BrokerHealth
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
PROBE_INTERVAL: Final = 1.0  # seconds between checks that the cluster answers
PROBE_TIMEOUT: Final = 2.0  # seconds a metadata request may take before the cluster is down
COMMIT_TIMEOUT: Final = 10.0  # seconds a commit may take; then its offsets wait for the next
COMMIT_RETRY: Final = 0.1  # seconds between the attempts of a commit that gives partitions up


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
        await self._group.check_committed(set(assigned))


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
        metrics: Metrics | None = None,
        health: BrokerHealth | None = None,
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
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_commit = 0.0
        self._metrics = metrics or Metrics()
        self._health = health or BrokerHealth(clock, self._metrics)
        self._last_probe = 0.0
        self.ends: dict[TopicPartition, int] = {}  # each partition's last high watermark seen
        self.last_committed: dict[TopicPartition, int] = {}  # what this member committed
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
        self._watcher = asyncio.create_task(
            self._watch(), name=f"kafka-watch:{self.spec.cluster}:{self.spec.group}"
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
            await self._check_ends()
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
        if window.next_offset is not None and records[0].offset < window.next_offset:
            # aiokafka reset the position itself (the broker said out of range): these
            # records are the new log's, from the policy's position.
            window = self._restart(tp, "offsets-went-back", position=window.next_offset)
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

    async def _check_ends(self) -> None:
        """Compare each fetching partition's end of log with where this member got to."""
        assert self._consumer is not None
        for tp, window in list(self.windows.items()):
            if window.paused:
                continue  # not fetched: its high watermark is as old as its last fetch
            with contextlib.suppress(IllegalStateError):  # no longer assigned
                end = self._consumer.highwater(tp)
                if end is None:
                    continue
                last, self.ends[tp] = self.ends.get(tp), end
                if last is not None and end < last:
                    await self._reset(tp, "end-moved-back", end=end, last_end=last)
                elif window.next_offset is not None and end < window.next_offset:
                    await self._reset(tp, "end-before-position", end=end)

    async def _reset(self, tp: TopicPartition, reason: str, **detail: int) -> None:
        """Start the partition again from the cluster's `auto_offset_reset`."""
        assert self._consumer is not None
        window = self.windows.get(tp)
        self._restart(tp, reason, position=window.next_offset if window else None, **detail)
        if self.spec.settings.auto_offset_reset == "earliest":
            await self._consumer.seek_to_beginning(tp)
        else:
            await self._consumer.seek_to_end(tp)

    def _restart(
        self, tp: TopicPartition, reason: str, *, position: int | None, **detail: int
    ) -> PartitionWindow:
        """Drop the partition's window — what is in flight finishes, but is never
        committed: its offsets belong to a log that is gone — log, count, a fresh window."""
        old = self.windows.pop(tp, None)
        if old is not None:
            old.retired = True
            old.release()
        self.ends.pop(tp, None)
        self.last_committed.pop(tp, None)
        policy = self.spec.settings.auto_offset_reset
        self._log.warning(
            "kafka offsets went back; starting the partition again",
            partition=f"{tp.topic}/{tp.partition}",
            reason=reason,
            position=position,
            auto_offset_reset=policy,
            **detail,
        )
        counter = self._metrics.kafka_offset_resets
        self._metrics.child(counter, self.spec.cluster, tp.topic, reason).inc()
        window = self._window(tp)
        self._settle(tp, window)
        return window

    async def check_committed(self, tps: set[TopicPartition]) -> None:
        """A partition given back whose group offset is below what this member committed
        (or gone): the log was re-created or the offsets were reset behind our back. The
        consumer starts from that offset (or, when it is gone, from the policy); it is said
        and counted here."""
        assert self._consumer is not None
        for tp in tps:
            mine = self.last_committed.get(tp)
            if mine is None:
                continue
            try:
                group = await self._consumer.committed(tp)
            except KafkaError:
                continue  # the broker went again; the next assignment checks once more
            if group is None or group < mine:
                where = -1 if group is None else group
                self._restart(tp, "committed-moved-back", position=mine, committed=where)

    async def _watch(self) -> None:
        """Probe the cluster every `PROBE_INTERVAL`, apart from the fetch loop (which waits
        in aiokafka while the coordinator is away)."""
        while not self._stopping:
            await self._probe()
            await self._clock.sleep(PROBE_INTERVAL)

    async def _probe(self) -> None:
        """Tell `BrokerHealth` whether the cluster answers: a fetch response for some
        partition since the last probe says so; without one, a metadata request decides."""
        assert self._consumer is not None
        since = self._last_probe or self._clock.monotonic()
        self._last_probe = self._clock.monotonic()
        wall_since = self._clock.now().timestamp() - (self._last_probe - since)
        answered = False
        for tp in self._consumer.assignment():
            with contextlib.suppress(IllegalStateError):
                stamp = self._consumer.last_poll_timestamp(tp)
                answered = answered or (stamp is not None and stamp / 1000 >= wall_since)
        if not answered:
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await self._consumer.topics()
                answered = True
            except (KafkaError, TimeoutError):
                answered = False
        spec = self.spec
        self._health.report(spec.cluster, spec.settings.bootstrap_servers, spec.group, answered)

    def _window(self, tp: TopicPartition) -> PartitionWindow:
        window = PartitionWindow(self.spec.settings.max_in_flight_per_partition, self._budget)
        self.windows[tp] = window
        return window

    def _settle(self, tp: TopicPartition, window: PartitionWindow) -> None:
        """Pause or resume the partition so that it fetches exactly when it may."""
        assert self._consumer is not None
        if self.windows.get(tp) is not window:
            return  # a window dropped by a reset: its records no longer steer the partition
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
        await self._commit(windows, settling=True)
        for tp, window in windows.items():
            window.release()
            if self.windows.get(tp) is window:  # a concurrent give_up may have dropped it
                del self.windows[tp]
                self.ends.pop(tp, None)  # another member may hold it meanwhile
        self._log.info(
            "kafka partitions given up", why=why, partitions=_names(tps), unfinished=unfinished
        )

    async def _commit(
        self, windows: dict[TopicPartition, PartitionWindow], *, settling: bool = False
    ) -> None:
        """Commit what the windows allow. `settling` (partitions being given up): wait for
        a coordinator and retry retriable errors, within `COMMIT_TIMEOUT`, as the last
        chance to spare the next owner redeliveries; a routine commit tries once."""
        assert self._consumer is not None
        self._last_commit = self._clock.monotonic()
        # Window objects are captured: a revocation may drop them from `windows` meanwhile.
        points = {tp: (w, p) for tp, w in windows.items() if (p := w.to_commit()) is not None}
        if not points:
            return
        offsets = {tp: point for tp, (_, point) in points.items()}
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT):
                while True:
                    try:
                        sent = await _commit_once(self._consumer, offsets, wait=settling)
                        break
                    except KafkaError as exc:
                        if not (settling and exc.retriable):
                            raise
                    await self._clock.sleep(COMMIT_RETRY)
        except (KafkaError, IllegalStateError, TimeoutError) as exc:
            # A rebalance took the partitions (their next owner re-handles from the last
            # commit) or the broker is away (the next commit carries these offsets too).
            self._log.warning("kafka commit failed", error=f"{type(exc).__name__}: {exc}")
            return
        if not sent:
            return  # not in a generation (see the module docstring): they go with a later one
        for tp, (window, point) in points.items():
            window.committed = point
            if self.windows.get(tp) is window:
                self.last_committed[tp] = point

    async def stop(self, deadline: float) -> None:
        """Stop fetching, finish in-flight records within `deadline`, commit, leave."""
        if self._stopping or self._consumer is None:
            return
        self._stopping = True
        started = self._clock.monotonic()
        await self._stop_watching()
        self._budget_changed()  # pauses every partition
        if self._fetcher is not None:
            await _wait({self._fetcher}, deadline, self._clock)
        left = max(deadline - (self._clock.monotonic() - started), 0.0)
        await self.give_up(set(self.windows), "stopping", left)
        self._budget.unwatch(self._budget_changed)
        await self._consumer.stop()  # sends LeaveGroup: the others take over at once
        self._health.forget(self.spec.cluster, self.spec.group)
        self._log.info("kafka consumer stopped")

    async def abort(self) -> None:
        """Tear down after a failure: nothing more is committed (records are redelivered)."""
        self._stopping = True
        await self._stop_watching()
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
        self._health.forget(self.spec.cluster, self.spec.group)
        if self._consumer is not None:
            await self._consumer.stop()

    async def _stop_watching(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


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


async def _commit_once(
    consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int], *, wait: bool
) -> bool:
    """One OffsetCommit request, sent only while the member is in a generation and knows
    its coordinator (`wait`: after waiting for one), and under that generation; False when
    it was not sent.

    `AIOKafkaConsumer.commit` cannot promise that: it waits for a coordinator however long
    an outage lasts and retries after retriable errors, building each request anew with
    the generation of that moment — which after a broker restart is -1, a commit the
    broker takes (see the module docstring). So this takes aiokafka's commit lock and sends
    its single request itself; the request is built before that coroutine first yields,
    with the generation checked here. Any error is the caller's: the offsets wait for the
    next commit. These are aiokafka internals (as of 0.14), kept to this one function."""
    from aiokafka.util import commit_structure_validate

    coordinator = consumer._coordinator
    async with coordinator._commit_lock:
        if wait and int(coordinator.generation) >= 0:
            await coordinator.ensure_coordinator_known()
        # Checked here, right before the request is built: nothing awaits in between.
        if int(coordinator.generation) < 0 or coordinator.coordinator_id is None:
            return False
        await coordinator._do_commit_offsets(None, commit_structure_validate(offsets))
    return True


def _names(tps: Iterable[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in tps)
