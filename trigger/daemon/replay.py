"""`trigger replay`: dead letters re-driven through the current rules and templates.

A dead letter holds its event: the event document (file records) or the consumed record's
bytes (the Kafka dead-letter topic). The event is built again as the daemon built it — a
Kafka event by the Kafka decoder, from the original record's coordinates, timestamp, key,
headers and value, so its id and idempotency key, hence its Workflow names, are the ones
the daemon gave it (a file holds the value decoded, not its bytes: it is given bytes that
decode to the same value); other events from their document — and goes through the rule
the record names (or, for a record naming none, every rule, as a new event would), that
rule's filter, rate limit and retries, and the sink. A record ends `created`, `duplicate`
(the Workflow exists: a replay run twice creates nothing twice), `filtered out` (the rule
no longer matches it: nothing is to be created), or `failed again` with the new reason.
Failures are not written to the dead-letter sink: `Caught` holds them for the record.

A dead-letter file is then rewritten (`rewrite`): the records that ended created,
duplicate or filtered out are dropped, those failing again are updated (reason, time,
`replays` + 1), every other line stays byte for byte, and lines appended since the replay
read the file (a running daemon's) are carried over — under the `flock` the file sink
takes for each append (trigger.submit.deadletter). The new file is written beside the old,
fsynced and renamed over it, and the directory fsynced: killed at any point, the file is
the old one or the new one, and a rerun finds what was created as duplicates.

A Kafka dead-letter topic is read by `TopicReplay` in its own consumer group; what is to
stay in the topic is produced to it again before the offsets are committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from prometheus_client import CollectorRegistry

from trigger.clock import Clock
from trigger.core.metrics import Metrics
from trigger.core.pipeline import Pipeline
from trigger.daemon.runs import Tally, drive
from trigger.decoders._common import compact_json, parse_json
from trigger.decoders.kafka import decode_kafka_record
from trigger.errors import ConfigError, DecodeError, RenderError, SubmitError
from trigger.events import Event, parse_time
from trigger.rules.render import render
from trigger.rules.router import RuleSet
from trigger.submit.deadletter import DeadLetter, encode, lock_current
from trigger.submit.deadletter_kafka import HEADER_PREFIX, KafkaOrigin, KafkaTopicWriter
from trigger.submit.submitter import Submitter

COMMON: Final = frozenset({"id", "source", "type", "subject", "time", "data"})
RULE_MISSING: Final = "RuleMissing"
GATE_NOT_REPLAYED: Final = "GateNotReplayed"
EXPRESSION_FAILED: Final = "ExpressionError"
Kind = Literal["created", "duplicate", "filtered", "failed"]


class Unreplayable(Exception):
    """A dead letter that holds no event to re-drive (or a broken one)."""


def rebuild(record: DeadLetter) -> Event:
    """The event of a file record, built as the daemon built it (see the module doc)."""
    doc = record.event
    if doc is None:
        why = "its payload could not be decoded: " if record.payload is not None else ""
        raise Unreplayable(f"the record holds no event ({why}{record.error}: {record.message})")
    try:
        if doc.get("source") == "kafka":
            return _kafka_event(doc)
        fields = {k: v for k, v in doc.items() if k not in COMMON}
        return Event(
            id=str(doc["id"]),
            source=doc["source"],
            type=str(doc["type"]),
            subject=str(doc.get("subject", "")),
            time=parse_time(doc["time"]),
            data=doc.get("data"),
            fields=fields,
        )
    except (KeyError, TypeError, AttributeError, DecodeError) as exc:
        raise Unreplayable(f"the record's event cannot be rebuilt: {exc!r}") from exc


def _kafka_event(doc: dict[str, Any]) -> Event:
    """A Kafka event from its document: the record's bytes are gone, so the value is given
    bytes whose "auto" decoding is the value recorded (what the daemon decoded)."""
    value, key = doc.get("value"), doc.get("key")
    headers = doc.get("headers") or {}
    return decode_kafka_record(
        str(doc["topic"]),
        int(doc["partition"]),
        int(doc["offset"]),
        doc.get("timestamp"),
        None if key is None else str(key).encode(),
        None if value is None else _value_bytes(value),
        [(str(name), str(text).encode()) for name, text in headers.items()],
    )


def _value_bytes(value: Any) -> bytes:
    """JSON as compact JSON; text as its UTF-8 bytes — unless that text would parse as JSON
    (the value was a JSON string, `"1234"`), then as the JSON string it was."""
    if not isinstance(value, str):
        return compact_json(value, where="value")
    try:
        parse_json(value, where="value")
    except DecodeError:
        return value.encode()
    return json.dumps(value, ensure_ascii=False).encode()


@dataclass
class Letter:
    """One dead letter read for a replay, and what became of it."""

    where: str  # "line 3", or "TOPIC/PARTITION/OFFSET"
    raw: bytes  # the line (or Kafka value) as read: what is kept when it is left alone
    record: DeadLetter | None = None  # None: not a record (see `problem`)
    event: Event | None = None
    problem: str | None = None  # why it cannot be replayed (a bad record): kept, reported
    result: Result | None = None  # None: not (yet) replayed

    def describe(self) -> str:
        record = self.record
        if record is None:
            return self.where
        return f"{self.where} (rule {record.rule or '*'}, event {record.event_id})"


@dataclass(frozen=True)
class Result:
    """How one replayed record ended; `updated` is the record kept when it failed again."""

    kind: Kind
    workflows: tuple[tuple[str, str], ...] = ()  # (created|duplicate, name) per Workflow
    reason: str = ""
    updated: DeadLetter | None = None

    def lines(self) -> list[str]:
        if self.kind == "failed":
            return [f"failed again: {self.reason}"]
        if self.kind == "filtered":
            return ["filtered out: no rule matches it now (nothing to create)"]
        return [f"{kind} {name}" for kind, name in self.workflows]


@dataclass
class ReplayTally(Tally):
    """A replay's tally: the records read, and those left alone."""

    bad: int = 0  # lines that are not records, or records holding no event
    skipped: int = 0  # records --rule / --since did not select

    @property
    def ok(self) -> bool:
        return not self.failed and not self.bad

    def summary(self) -> str:
        return (
            f"{self.created} created, {self.duplicate} duplicate, {self.failed} failed again"
            f" ({self.filtered} filtered out, {self.bad} bad, {self.skipped} not selected,"
            f" {self.total} read)"
        )


@dataclass(frozen=True)
class Selection:
    """Which records a replay takes: `--rule`, `--since` (the record's time, inclusive)."""

    rule: str | None = None
    since: datetime | None = None

    def __call__(self, record: DeadLetter) -> bool:
        if self.rule is not None and record.rule != self.rule:
            return False
        return self.since is None or record.time >= self.since


_CAUGHT: ContextVar[list[DeadLetter] | None] = ContextVar("trigger_replay_caught", default=None)


class Caught:
    """The dead-letter sink of a replay: the records go to the replay of the letter being
    handled (a context variable, followed into the tasks it spawns), not to a file."""

    async def write(self, record: DeadLetter) -> None:
        caught = _CAUGHT.get()
        if caught is None:
            raise RuntimeError("a dead letter written outside a replayed record")
        caught.append(record)

    async def close(self) -> None:
        pass


class Replay:
    """Re-drives letters through the current rules; each gets its `Result`."""

    def __init__(
        self,
        rules: RuleSet,
        submitter: Submitter,
        clock: Clock,
        *,
        cluster: str = "default",
        progress: Callable[[Tally], None] = lambda tally: None,
        report: Callable[[Letter], None] = lambda letter: None,
    ) -> None:
        self.rules = rules
        self.tally = ReplayTally()
        self._submitter = submitter
        self._clock = clock
        self._cluster = cluster
        self._progress = progress
        self._report = report
        self._metrics = Metrics(CollectorRegistry())
        self._pipelines: dict[str | None, Pipeline] = {}

    async def run(self, letters: Sequence[Letter], chosen: Sequence[Letter], parallel: int) -> None:
        """Count `letters` read, report the bad ones, replay those `chosen`."""
        taken = {id(letter) for letter in chosen}
        self.tally.total += len(letters)
        for letter in letters:
            if letter.problem is not None:
                self.count(letter)
            elif id(letter) not in taken:
                self.tally.skipped += 1
        await drive(iter(chosen), self.handle, parallel=parallel)

    async def handle(self, letters: Sequence[Letter]) -> None:
        """Replay each letter (a `drive` handler) and count how it ended."""
        for letter in letters:
            assert letter.record is not None and letter.event is not None
            letter.result = await self.one(letter.record, letter.event)
            self.count(letter)

    def count(self, letter: Letter) -> None:
        """Tally a letter that was replayed, or found bad, and report it."""
        tally, result = self.tally, letter.result
        if result is None:
            tally.bad += 1
        elif result.kind == "failed":
            tally.failed += 1  # its reason is on its own line: not again in the summary
        elif result.kind == "filtered":
            tally.filtered += 1
        else:
            tally.created += sum(kind == "created" for kind, _ in result.workflows)
            tally.duplicate += sum(kind == "duplicate" for kind, _ in result.workflows)
        self._report(letter)
        self._progress(tally)

    async def one(self, record: DeadLetter, event: Event) -> Result:
        """Re-drive one record; its Workflows, or why it failed again."""
        gate = gate_problem(self.rules, record.rule)
        if gate is not None:
            return self._failed(record, GATE_NOT_REPLAYED, gate, attempts=0)
        rule = self.rules.by_name.get(record.rule) if record.rule else None
        if record.rule and rule is None:
            message = f"no rule named {record.rule!r} in the current rules"
            return self._failed(record, RULE_MISSING, message, attempts=0)
        cluster = rule.kafka.cluster if rule is not None and rule.kind == "kafka" else None
        caught: list[DeadLetter] = []
        token = _CAUGHT.set(caught)
        try:
            outcomes = await self._pipeline(record.rule).handle(
                event, cluster=cluster or self._cluster, on_exhausted="dead-letter"
            )
        except (SubmitError, RenderError, DecodeError, OSError) as exc:
            return self._failed(record, type(exc).__name__, str(exc), attempts=0)
        finally:
            _CAUGHT.reset(token)
        if caught:
            first = caught[0]
            return self._failed(
                record, first.error, first.message, attempts=first.attempts, workflow=first.workflow
            )
        if not outcomes:
            return self._unmatched(record, event, cluster or self._cluster)
        workflows = tuple((str(o.kind), o.workflow or "") for o in outcomes)
        kind: Kind = "created" if any(k == "created" for k, _ in workflows) else "duplicate"
        return Result(kind, workflows)

    def _unmatched(self, record: DeadLetter, event: Event, cluster: str) -> Result:
        """Filtered out — unless the filter's expression failed on the event (the daemon
        only counts that): then it failed again, and stays."""
        routed = self._pipeline(record.rule).rules.route(event, cluster=cluster)
        for failure in routed.failures:
            if failure.kind == "expression":
                return self._failed(record, EXPRESSION_FAILED, failure.message, attempts=0)
        return Result("filtered")

    def _failed(
        self,
        record: DeadLetter,
        error: str,
        message: str,
        *,
        attempts: int,
        workflow: str | None = None,
    ) -> Result:
        updated = replace(
            record,
            error=error,
            message=message,
            time=self._clock.now(),
            attempts=attempts,
            workflow=workflow or record.workflow,
            replays=record.replays + 1,
        )
        return Result("failed", reason=f"{error}: {message}", updated=updated)

    def _pipeline(self, rule: str | None) -> Pipeline:
        """The pipeline of the record's rule alone (or of every rule: `rule` None)."""
        pipeline = self._pipelines.get(rule)
        if pipeline is None:
            rules = self.rules if rule is None else RuleSet((self.rules.by_name[rule],))
            sink = Caught()
            pipeline = Pipeline(rules, self._submitter, sink, self._metrics, self._clock)
            self._pipelines[rule] = pipeline
        return pipeline


def gate_problem(rules: RuleSet, name: str | None) -> str | None:
    """Why a record of a gate is not replayed, or None. A gate's letters — a gate that
    timed out, a member's event its full state refused — hold one event of a set whose
    state lives in the state store, which a replay does not open."""
    if name in rules.gates:
        return f"rule {name} is a gate: a gate that timed out is not replayed"
    rule = rules.by_name.get(name) if name else None
    if rule is not None and rule.gate is not None:
        return (
            f"rule {name} is member {rule.gate.member!r} of the gate {rule.gate.rule.name}: "
            "events of gates are not replayed"
        )
    return None


def chosen(letters: Sequence[Letter], select: Selection) -> list[Letter]:
    """The letters a replay takes: records holding an event, selected."""
    return [x for x in letters if x.record is not None and x.problem is None and select(x.record)]


def plan(rules: RuleSet, letter: Letter, cluster: str = "default") -> list[dict[str, Any]]:
    """The Workflows (dry run) a replay of `letter` would create. Raises RenderError, and
    Unreplayable when the record's rule is gone."""
    record, event = letter.record, letter.event
    assert record is not None and event is not None
    chosen = rules
    gate = gate_problem(rules, record.rule)
    if gate is not None:
        raise Unreplayable(gate)
    if record.rule:
        rule = rules.by_name.get(record.rule)
        if rule is None:
            raise Unreplayable(f"no rule named {record.rule!r} in the current rules")
        chosen = RuleSet((rule,))
        if rule.kind == "kafka":
            cluster = rule.kafka.cluster
    routed = chosen.route(event, cluster=cluster)
    return [render(m.rule, m.event) for m in routed.matches]


# --- dead-letter files --------------------------------------------------------------------


@dataclass
class Snapshot:
    """A dead-letter file as a replay read it: which file, how far, and its letters."""

    path: Path
    identity: tuple[int, int]  # (st_dev, st_ino) of the file read
    size: int  # bytes read: whole lines only; what follows is carried over as it is
    mode: int
    letters: list[Letter] = field(default_factory=list)


def read_file(path: Path) -> Snapshot:
    """Read the file's whole lines under its lock (no append can be half-seen)."""
    fd = lock_current(path, None, os.O_RDONLY)
    try:
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read()
        held = os.fstat(fd)
    finally:
        os.close(fd)
    end = data.rfind(b"\n") + 1  # a line without its newline is an append cut short
    snapshot = Snapshot(path, (held.st_dev, held.st_ino), end, held.st_mode & 0o7777)
    for number, line in enumerate(data[:end].split(b"\n")[:-1], start=1):
        if line.strip():
            snapshot.letters.append(letter_of(f"line {number}", line))
    return snapshot


def letter_of(where: str, line: bytes) -> Letter:
    """A letter from one JSON line: a record with its event, or a bad one saying why."""
    letter = Letter(where, line)
    try:
        document = json.loads(line)
        if not isinstance(document, dict):
            raise TypeError(f"a JSON {type(document).__name__}, not an object")
        letter.record = DeadLetter.from_json(document)
    except (ValueError, TypeError, KeyError, DecodeError) as exc:
        letter.problem = f"not a dead-letter record: {exc!r}"[:500]
        return letter
    try:
        letter.event = rebuild(letter.record)
    except Unreplayable as exc:
        letter.problem = str(exc)
    return letter


async def replay_file(path: Path, replay: Replay, select: Selection, parallel: int) -> None:
    """Replay a dead-letter file's selected records and rewrite it — also when stopped
    (Ctrl-C): what was replayed by then leaves the file, the rest stays."""
    snapshot = await asyncio.to_thread(read_file, path)
    try:
        await replay.run(snapshot.letters, chosen(snapshot.letters, select), parallel)
    finally:
        await asyncio.shield(asyncio.to_thread(rewrite, snapshot))


class FileChanged(Exception):
    """The file was replaced or truncated (rotated, another replay) while replaying."""


def rewrite(snapshot: Snapshot) -> bool:
    """Write the file again without the records that succeeded (module doc); False when
    no letter was replayed (nothing to change). Raises FileChanged."""
    if not any(letter.result is not None for letter in snapshot.letters):
        return False
    path = snapshot.path
    fd = lock_current(path, None, os.O_RDONLY)
    try:
        held = os.fstat(fd)
        if (held.st_dev, held.st_ino) != snapshot.identity or held.st_size < snapshot.size:
            raise FileChanged(
                f"{path} was replaced or truncated during the replay (rotated, or another "
                "replay): left as it is; run the replay again"
            )
        with os.fdopen(os.dup(fd), "rb") as handle:
            handle.seek(snapshot.size)
            tail = handle.read()
        _replace(path, b"".join(_kept(snapshot)) + tail, snapshot.mode)
    finally:
        os.close(fd)  # releases the lock, after the rename
    return True


def _kept(snapshot: Snapshot) -> Iterator[bytes]:
    """The lines of the new file up to where the replay read (the line order kept)."""
    for letter in snapshot.letters:
        result = letter.result
        if result is None:  # not selected, bad, or not reached: as it was
            yield letter.raw + b"\n"
        elif result.updated is not None:  # failed again
            yield encode(result.updated) + b"\n"


def _replace(path: Path, content: bytes, mode: int) -> None:
    """Atomically put `content` at `path`: a temporary file fsynced, renamed, dir fsynced."""
    temporary = path.with_name(f".{path.name}.replay-{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode or 0o600)
    try:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# --- the Kafka dead-letter topic ----------------------------------------------------------


def group_for(topic: str) -> str:
    """The consumer group a replay of `topic` reads and commits with."""
    return f"trigger-replay.{topic}"


@dataclass
class KafkaLetter(Letter):
    """A letter from the dead-letter topic, with the record as consumed (kept when left
    alone) and the original record it stands for (to produce it again when it fails)."""

    key: bytes | None = None
    value: bytes | None = None  # `raw` is b"" for a tombstone; this stays None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    origin: KafkaOrigin | None = None


def kafka_letter(cluster: str, message: Any) -> KafkaLetter:
    """A letter from one consumed dead-letter record (trigger.deadletter_kafka's form)."""
    headers = [(name, value) for name, value in message.headers]
    letter = KafkaLetter(
        f"{message.topic}/{message.partition}/{message.offset}",
        message.value or b"",
        key=message.key,
        value=message.value,
        headers=headers,
    )
    ours = {name[len(HEADER_PREFIX) :]: (value or b"").decode("utf-8", "replace")
            for name, value in headers if name.startswith(HEADER_PREFIX)}  # fmt: skip
    originals = tuple((n, v) for n, v in headers if not n.startswith(HEADER_PREFIX))
    try:
        stamp = ours.get("original.timestamp")
        origin = KafkaOrigin(
            cluster,
            ours["original.topic"],
            int(ours["original.partition"]),
            int(ours["original.offset"]),
            message.key,
            message.value,
            originals,
            int(stamp) if stamp else None,
        )
        time = parse_time(ours["time"]) if ours.get("time") else parse_time(message.timestamp)
    except (KeyError, ValueError, DecodeError) as exc:
        letter.problem = f"not a trigger dead letter (its trigger.* headers): {exc!r}"
        return letter
    letter.origin = origin
    try:
        event = decode_kafka_record(
            origin.topic, origin.partition, origin.offset, origin.timestamp,
            origin.key, origin.value, originals,
        )  # fmt: skip
    except DecodeError as exc:
        letter.problem = f"the record cannot be decoded: {exc}"
        return letter
    letter.event = event
    letter.record = DeadLetter.of(
        event,
        rule=ours.get("rule") or None,
        error=ours.get("error.class", ""),
        message=ours.get("error.message", ""),
        time=time,
    )
    letter.record = replace(letter.record, replays=int(ours.get("replays") or 0))
    return letter


@dataclass
class TopicReplay:
    """Reads a dead-letter topic up to its end at the start, in the group `group_for`,
    batch by batch: each batch's selected letters are replayed, then what is to stay —
    failing again (updated headers), not selected, bad (as they were) — is produced to the
    topic's end, then the batch's offsets are committed. Records produced by this run lie
    beyond the end it reads to."""

    cluster: str
    topic: str
    options: dict[str, Any]
    select: Selection
    parallel: int = 4

    async def run(self, replay: Replay | None, emit: Callable[[Letter], None]) -> None:
        """Replay (or with `replay` None, a dry run: `emit` each letter, commit nothing)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            group_id=group_for(self.topic),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.options,
        )
        await consumer.start()
        writer = KafkaTopicWriter(self.topic, self.options)
        try:
            await consumer.topics()  # the cluster's metadata, topics and partitions
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                raise ConfigError(f"Kafka topic {self.topic!r} does not exist")
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)  # the group's committed offsets, else the earliest
            ends = await consumer.end_offsets(tps)
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                fetched = await consumer.getmany(timeout_ms=1000, max_records=500)
                for tp, got in fetched.items():
                    messages = [m for m in got if m.offset < ends[tp]]
                    if not messages:
                        continue
                    await self._batch(replay, writer, [kafka_letter(self.cluster, m)
                                                        for m in messages], emit)  # fmt: skip
                    if replay is not None:
                        await consumer.commit({tp: messages[-1].offset + 1})
                    consumer.seek(tp, messages[-1].offset + 1)
        finally:
            await writer.close()
            await consumer.stop()

    async def _batch(
        self,
        replay: Replay | None,
        writer: KafkaTopicWriter,
        letters: list[KafkaLetter],
        emit: Callable[[Letter], None],
    ) -> None:
        taken = chosen(letters, self.select)
        if replay is None:  # a dry run: the bad letters and those chosen
            ids = {id(letter) for letter in taken}
            for letter in letters:
                if letter.problem is not None or id(letter) in ids:
                    emit(letter)
            return
        await replay.run(letters, taken, self.parallel)
        for letter in letters:
            result = letter.result
            if result is None:
                await writer.send(letter.key, letter.value, letter.headers)
            elif result.updated is not None and letter.origin is not None:
                await writer.write(result.updated, letter.origin)
