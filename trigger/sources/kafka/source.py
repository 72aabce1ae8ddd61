"""The Kafka source: consumer groups whose records become events, committed at least once.

One aiokafka consumer runs per (cluster, group) that the loaded rules use, subscribed to
the union of those rules' topics (`RuleSet.kafka_topics()`; a rule without a group uses
its cluster's `group`); a reload re-subscribes, starts and stops consumers. Every record
is decoded once (`decode_kafka_record`; per-rule formats are the router's business) and
handed to the pipeline — a fetched chunk as one batch when the sink writes many Workflows
at once (`Pipeline.handle_batch`), otherwise record by record. Its offset is committed
only when it and every earlier record of its partition are done — created, duplicate or
dead-lettered — so a crash redelivers, and the deterministic Workflow names turn
redeliveries into duplicates. A temporary submit failure is retried here with capped,
jittered backoff on the clock; the record stays unfinished meanwhile, so commits stop
before it, and its partition fetches on up to `max_in_flight_per_partition` records and
then pauses; across every partition of every group, at most `kafka.max_in_flight`
unfinished records are held, then all partitions pause (see `kafka_offsets`), so memory
follows the settings and not the number of partitions assigned. Poison records
(undecodable for a rule, render errors, rejected Workflows) are dead-lettered by the
pipeline — to the cluster's `dead_letter_topic` when configured (`deadletter_kafka`) — and
committed like any other.

Starting position. A group with no committed offset starts at the cluster's
`auto_offset_reset`: `latest` (the default) skips everything published before the group
first joined — right for a new deployment on a topic with a long history, which would
otherwise create a Workflow per old record — at the price that records published
between creating the group's first rule and its consumer joining are never seen.
`earliest` sees all retained records, so nothing is missed even the first time, at the
price of (re)processing the whole retained history once. Once the group has committed,
both resume from the commit. (Tests use `earliest`: tansu's `latest` is wrong.)

`/metrics` shows each assigned partition's in-flight count, its peak, whether it is
paused and its committed offset (`trigger_kafka_partition_*`), and the records in flight
across the process with their high-water mark (`trigger_kafka_records_in_flight*`).

Broker outages and re-created topics are the consumer's business (`consumer`): nothing is
committed outside a group generation, a log that went back restarts its partition from
`auto_offset_reset` (said and counted), and whether each cluster answers is `health`'s,
which `/readyz` shows under `problems.kafka` (`problems()` here).
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, Final

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric

from trigger.decoders.kafka import decode_kafka_record
from trigger.errors import DecodeError, TemporarySubmitError
from trigger.events import Event
from trigger.rules.router import RuleSet
from trigger.rules.rule import Rule
from trigger.settings import KafkaCluster
from trigger.sources.base import SourceContext, SourceType
from trigger.sources.kafka.config import client_options, group_of
from trigger.sources.kafka.consumer import Finished, GroupConsumer, GroupSpec
from trigger.sources.kafka.health import BrokerHealth
from trigger.sources.kafka.offsets import InFlightBudget
from trigger.submit.deadletter import DeadLetter
from trigger.submit.deadletter_kafka import KafkaOrigin, origin_scope

log = structlog.get_logger("trigger.sources.kafka.source")

GroupKey = tuple[str, str]  # (cluster, consumer group)
RETRY_INITIAL: Final = 0.2  # seconds before the first retry of a record
RETRY_MAX: Final = 30.0  # seconds; the cap of the doubling backoff
RETRY_JITTER: Final = 0.2  # share of each wait taken off at random
REVOKE_DEADLINE_CAP: Final = 30.0  # seconds a rebalance waits for in-flight records


def plan(rules: RuleSet, clusters: Mapping[str, KafkaCluster]) -> dict[GroupKey, frozenset[str]]:
    """Topics per (cluster, group); rules naming an unknown cluster are left out, logged."""
    wanted: dict[GroupKey, set[str]] = {}
    for (cluster, group), topics in rules.kafka_topics().items():
        settings = clusters.get(cluster)
        if settings is None:
            # The daemon hands sources only active rules (trigger.daemon.verdicts), so such
            # a rule is idle and said so; this is the last line of defence.
            log.warning(
                "kafka cluster is not configured; its rules are not consumed",
                cluster=cluster,
                topics=sorted(topics),
            )
            continue
        wanted.setdefault((cluster, group_of(settings, group)), set()).update(topics)
    return {key: frozenset(topics) for key, topics in wanted.items()}


class KafkaSource:
    """The `kafka` source; see the module docstring."""

    name = "kafka"
    singleton = False

    def __init__(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        self._clusters: Mapping[str, KafkaCluster] = ctx.settings.kafka.clusters
        self._plan = plan(ctx.rules, self._clusters)
        self.groups: dict[GroupKey, GroupConsumer] = {}
        self._changed = asyncio.Event()
        self._finished = asyncio.Event()
        self._finished.set()  # nothing runs yet
        self._stopping = False
        self._deadline: float = ctx.settings.shutdown_deadline
        self._revoke_deadline = min(self._deadline, REVOKE_DEADLINE_CAP)
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._collector = PartitionCollector(self)
        self.budget = InFlightBudget(ctx.settings.kafka.max_in_flight)  # shared by all groups
        self.health = BrokerHealth(ctx.clock, ctx.metrics)

    def problems(self) -> list[str]:
        """Clusters whose brokers do not answer (for /readyz; see `health`)."""
        return self.health.problems()

    def routes(self) -> list[Any]:
        return []

    def rules_changed(self, rules: RuleSet) -> None:
        self._plan = plan(rules, self._clusters)
        self._changed.set()

    async def run(self) -> None:
        self._finished.clear()
        registry = self._ctx.metrics.registry
        registry.register(self._collector)
        metrics = self._ctx.metrics
        metrics.kafka_records_in_flight.set_function(lambda: self.budget.in_flight)
        metrics.kafka_records_in_flight_peak.set_function(lambda: self.budget.peak)
        failed = True
        try:
            while not self._stopping:
                self._changed.clear()
                await self._reconcile()
                await self._wait_for_change()
            failed = False
        finally:
            await self._close(failed)
            registry.unregister(self._collector)
            self._finished.set()
        # Stopped on purpose: wait to be cancelled rather than end, which the supervisor
        # would take for a crash and restart.
        await asyncio.Event().wait()

    async def stop(self, deadline: float) -> None:
        # Keep a margin: the caller cancels us when `deadline` passes, and the commit
        # after draining must still happen.
        self._deadline = deadline * 0.9
        self._stopping = True
        self._changed.set()
        await self._finished.wait()

    async def _reconcile(self) -> None:
        wanted = self._plan
        for key in [k for k in self.groups if k not in wanted]:
            await self.groups.pop(key).stop(self._revoke_deadline)
        for key, topics in wanted.items():
            group = self.groups.get(key)
            if group is None:
                group = self._group(key)
                await group.start(topics)
                self.groups[key] = group
            elif group.topics != topics:
                await group.resubscribe(topics)

    def _group(self, key: GroupKey) -> GroupConsumer:
        cluster, group = key
        settings = self._clusters[cluster]
        options = client_options(cluster, settings, self._ctx.environ)
        spec = GroupSpec(cluster, group, settings, options)
        return GroupConsumer(
            spec,
            self._handle_chunk,
            self._ctx.clock,
            self.budget,
            revoke_deadline=self._revoke_deadline,
            metrics=self._ctx.metrics,
            health=self.health,
        )

    async def _wait_for_change(self) -> None:
        changed = asyncio.ensure_future(self._changed.wait())
        fetchers = {group.fetcher for group in self.groups.values()}
        try:
            await asyncio.wait({changed, *fetchers}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
        for fetcher in fetchers:
            if fetcher.done() and not self._stopping:
                fetcher.result()  # re-raises the consumer's failure: the supervisor restarts us
                raise RuntimeError(f"kafka consumer {fetcher.get_name()} ended")

    async def _close(self, failed: bool) -> None:
        groups, self.groups = list(self.groups.values()), {}
        if failed:
            await asyncio.gather(*(g.abort() for g in groups), return_exceptions=True)
            return
        await asyncio.gather(*(g.stop(self._deadline) for g in groups))

    # --- records ---------------------------------------------------------------------

    async def _handle_chunk(self, cluster: str, records: list[Any], finished: Finished) -> None:
        """Returns once every record is done, calling `finished` for each as it is.

        With a sink that writes many Workflows in one call (local, stdout), the records go
        through `Pipeline.handle_batch` together; what it leaves — undecodable records,
        events that need dead letters or rate limits, Workflows the sink failed — goes the
        one-record way, concurrently. Otherwise every record goes the one-record way."""
        if self._ctx.pipeline.batches:
            jobs = await self._batch(cluster, records, finished)
        else:
            jobs = [self._handle(cluster, record, finished) for record in records]
        # From here each job alone holds its record, and lets go of it once done: a slow
        # record does not keep its finished neighbours in memory (kafka.max_in_flight
        # counts only unfinished ones).
        del records
        if jobs:
            await asyncio.gather(*jobs)

    async def _batch(
        self, cluster: str, records: list[Any], finished: Finished
    ) -> list[Coroutine[Any, Any, None]]:
        """Hands the records to the pipeline as one batch; the one-record jobs for what
        it left."""
        slow: list[Coroutine[Any, Any, None]] = []
        decoded: list[tuple[Any, Event]] = []
        for record in records:
            try:
                decoded.append((record, _decode(record)))
            except DecodeError:
                slow.append(self._handle(cluster, record, finished))
        if decoded:
            results = await self._ctx.pipeline.handle_batch(
                [e for _, e in decoded], cluster=cluster
            )
            for (record, event), result in zip(decoded, results, strict=True):
                if result.done:
                    finished(record.offset)
                elif result.slow:
                    slow.append(self._handle(cluster, record, finished))
                else:
                    slow.append(self._handle(cluster, record, finished, (event, result.failed)))
        return slow

    async def _handle(
        self,
        cluster: str,
        record: Any,
        finished: Finished,
        rest: tuple[Event, tuple[tuple[Rule, Event], ...]] | None = None,
    ) -> None:
        """Returns once the record is done — all its matches, or the `rest` a batch left —
        and calls `finished`; retries until then (see the module docstring)."""
        origin = KafkaOrigin(
            cluster,
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            tuple(record.headers),
            record.timestamp,
        )
        attempt = 0
        with origin_scope(origin):
            while True:
                try:
                    if rest is None:
                        await self._deliver(cluster, record, origin)
                    else:
                        await self._ctx.pipeline.submit_matches(rest[0], rest[1])
                    finished(record.offset)
                    return
                except TemporarySubmitError as exc:
                    delay = self._backoff(attempt, exc.retry_after)
                    log.warning(
                        "kafka record not done; retrying",
                        event_id=origin.event_id,
                        attempt=attempt + 1,
                        delay=round(delay, 3),
                        error=str(exc),
                    )
                except Exception:  # a failing dead-letter file, a bug: never skip the record
                    delay = self._backoff(attempt, None)
                    log.exception(
                        "kafka record failed; retrying",
                        event_id=origin.event_id,
                        attempt=attempt + 1,
                        delay=round(delay, 3),
                    )
                attempt += 1
                await self._ctx.clock.sleep(delay)

    async def _deliver(self, cluster: str, record: Any, origin: KafkaOrigin) -> None:
        try:
            event = _decode(record)
        except DecodeError as exc:
            await self._undecodable(origin, exc)
            return
        await self._ctx.pipeline.handle(event, cluster=cluster, on_exhausted="raise")

    async def _undecodable(self, origin: KafkaOrigin, exc: DecodeError) -> None:
        """A record no event can be made of (e.g. a timestamp out of range): poison."""
        value = origin.value or b""
        record = DeadLetter(
            rule=None,
            error=type(exc).__name__,
            message=str(exc),
            time=self._ctx.clock.now(),
            event_id=origin.event_id,
            event_source="kafka",
            event_type="kafka.message",
            event_subject=origin.event_id,
            payload=base64.b64encode(value).decode(),
        )
        await self._ctx.pipeline.dead_letters.write(record)
        self._ctx.metrics.dead_letters.labels("", record.error).inc()
        log.warning("kafka record cannot be decoded", event_id=origin.event_id, error=str(exc))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        step = min(RETRY_MAX, RETRY_INITIAL * 2.0 ** min(attempt, 32))
        step -= step * RETRY_JITTER * self._rng.random()
        return max(step, float(retry_after or 0.0))


def _decode(record: Any) -> Event:
    return decode_kafka_record(
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        record.headers,
    )


class PartitionCollector:
    """Prometheus view of the partitions this replica holds (read at scrape time)."""

    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []  # names are dynamic; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        labels = ["cluster", "group", "topic", "partition"]
        in_flight = GaugeMetricFamily(
            "trigger_kafka_partition_in_flight",
            "Records taken from the partition and not yet committable.",
            labels=labels,
        )
        peak = GaugeMetricFamily(
            "trigger_kafka_partition_in_flight_peak",
            "The largest in-flight count the partition has reached.",
            labels=labels,
        )
        paused = GaugeMetricFamily(
            "trigger_kafka_partition_paused",
            "1 while fetching from the partition is paused (its window or the process bound).",
            labels=labels,
        )
        committed = GaugeMetricFamily(
            "trigger_kafka_partition_committed_offset",
            "The last offset this replica committed for the partition.",
            labels=labels,
        )
        for (cluster, group), consumer in list(self._source.groups.items()):
            for tp, window in list(consumer.windows.items()):
                values = [cluster, group, tp.topic, str(tp.partition)]
                in_flight.add_metric(values, window.in_flight)
                peak.add_metric(values, consumer.peaks.get(tp, window.peak))
                paused.add_metric(values, int(window.paused))
                if window.committed is not None:
                    committed.add_metric(values, window.committed)
        yield from (in_flight, peak, paused, committed)


KIND: Final = SourceType(
    wanted=lambda rules: bool(rules.kafka_topics()), build=KafkaSource, singleton=False
)
