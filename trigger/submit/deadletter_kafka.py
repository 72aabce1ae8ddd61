"""Dead letters of Kafka events go back to Kafka: a dead-letter topic per cluster.

A poison Kafka record is re-produced to its cluster's `dead_letter_topic` with its original
key, value and headers, plus headers saying why (`trigger.rule`, `trigger.error.class`,
`trigger.error.message`, `trigger.event.id`, `trigger.time`) and where it came from
(`trigger.original.topic`, `.partition`, `.offset`, `.timestamp`) — the Kafka Connect
convention, so the record can be inspected and replayed (`trigger replay kafka:TOPIC`
decodes it again as the record it was: the original timestamp is part of a Kafka event's
idempotency key, so a replayed record gets the Workflow name the daemon gave it).
`trigger.replays` counts the replays that saw it fail again.

A `DeadLetter` keeps only the decoded event document, not the record's bytes, so the
Kafka source declares the record it is handling with `origin_scope(KafkaOrigin(...))`
around `pipeline.handle`. That is a context variable: it follows the handling of that
one record into every task it spawns (the submitter's per-rule tasks), and nothing else.
`KafkaDeadLetterSink` sends a record to Kafka when the current origin is the record's
event and its cluster has a topic; everything else — other sources, clusters without a
topic — goes to the fallback sink (the file). If the topic cannot be written, the record
goes to the fallback too: a dead letter must be durable before the offset is committed,
and a broken dead-letter topic must not block the partition.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

import structlog

from trigger.events import format_time, kafka_event_id
from trigger.submit.deadletter import DeadLetter, DeadLetterSink

log = structlog.get_logger("trigger.deadletter.kafka")

HEADER_PREFIX: Final = "trigger."
MAX_MESSAGE_BYTES: Final = 4096  # the error message header is cut to this size
MAX_REQUEST_BYTES: Final = 64 * 1024 * 1024  # a dead letter may be as large as its record
_REQUEST_TIMEOUT_MS: Final = 15_000


@dataclass(frozen=True)
class KafkaOrigin:
    """The consumed record, byte for byte, and the cluster it came from."""

    cluster: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()  # a header value may be null
    timestamp: int | None = None  # epoch milliseconds; None (or -1) when it has none

    @property
    def event_id(self) -> str:
        return kafka_event_id(self.topic, self.partition, self.offset)


_ORIGIN: ContextVar[KafkaOrigin | None] = ContextVar("trigger_kafka_origin", default=None)


@contextlib.contextmanager
def origin_scope(origin: KafkaOrigin) -> Iterator[None]:
    """Declare the record being handled, for dead letters written meanwhile."""
    token = _ORIGIN.set(origin)
    try:
        yield
    finally:
        _ORIGIN.reset(token)


def current_origin() -> KafkaOrigin | None:
    return _ORIGIN.get()


def dead_letter_headers(record: DeadLetter, origin: KafkaOrigin) -> list[tuple[str, bytes | None]]:
    """The original headers, then trigger's headers naming the failure and the origin."""
    message = record.message.encode()[:MAX_MESSAGE_BYTES]
    extra = {
        "rule": (record.rule or "").encode(),
        "error.class": record.error.encode(),
        "error.message": message,
        "event.id": origin.event_id.encode(),
        "time": format_time(record.time).encode(),
        "original.topic": origin.topic.encode(),
        "original.partition": str(origin.partition).encode(),
        "original.offset": str(origin.offset).encode(),
    }
    if origin.timestamp is not None:
        extra["original.timestamp"] = str(origin.timestamp).encode()
    if record.replays:
        extra["replays"] = str(record.replays).encode()
    return [*origin.headers, *((HEADER_PREFIX + k, v) for k, v in extra.items())]


class KafkaTopicWriter:
    """Produces dead letters to one topic; the producer starts on the first write."""

    def __init__(self, topic: str, options: Mapping[str, Any]) -> None:
        self.topic = topic
        self._options = dict(options)
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def write(self, record: DeadLetter, origin: KafkaOrigin) -> None:
        await self.send(origin.key, origin.value, dead_letter_headers(record, origin))

    async def send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]
    ) -> None:
        """Produce one record as given (a dead letter `trigger replay` leaves as it was)."""
        producer = await self._started()
        await producer.send_and_wait(self.topic, value=value, key=key, headers=headers)

    async def _started(self) -> Any:
        async with self._lock:
            if self._producer is None:
                from aiokafka import AIOKafkaProducer

                producer = AIOKafkaProducer(
                    acks="all",
                    max_request_size=MAX_REQUEST_BYTES,
                    request_timeout_ms=_REQUEST_TIMEOUT_MS,
                    **self._options,
                )
                await producer.start()
                self._producer = producer
            return self._producer

    async def close(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


class KafkaDeadLetterSink:
    """Routes Kafka events' dead letters to their cluster's topic, the rest to `fallback`."""

    def __init__(self, fallback: DeadLetterSink, topics: Mapping[str, KafkaTopicWriter]) -> None:
        self.fallback = fallback
        self.topics = dict(topics)

    async def write(self, record: DeadLetter) -> None:
        origin = current_origin()
        writer = None
        if origin is not None and record.event_id in {origin.event_id, None}:
            writer = self.topics.get(origin.cluster)
        if writer is None or origin is None:
            await self.fallback.write(record)
            return
        try:
            await writer.write(record, origin)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any producer failure: keep the dead letter, in the file
            log.error(
                "dead-letter topic write failed; writing to the fallback sink",
                topic=writer.topic,
                event_id=origin.event_id,
                error=f"{type(exc).__name__}: {exc}",
            )
            await self.fallback.write(record)

    async def close(self) -> None:
        for writer in self.topics.values():
            try:
                await writer.close()
            except Exception as exc:  # closing one producer must not leak the others
                log.warning("closing a dead-letter producer failed", error=str(exc))
        await self.fallback.close()
