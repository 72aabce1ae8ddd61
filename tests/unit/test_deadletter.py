"""Dead-letter records and the JSON-lines file sink."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trigger.decoders._common import MAX_DEPTH
from trigger.decoders.kafka import decode_kafka_record
from trigger.errors import StorageError, TemporarySubmitError
from trigger.events import Event
from trigger.submit.deadletter import DeadLetter, FileDeadLetterSink, OnceDeadLetters, encode

WHEN = datetime(2025, 1, 1, 12, 30, 0, 250000, tzinfo=UTC)


def event(offset: int = 3) -> Event:
    value = b'{"orderId": "A-1", "note": "caf\xc3\xa9\\nline"}'
    return decode_kafka_record("orders", 2, offset, 1735718400000, b"k", value, [])


def record(offset: int = 3, **overrides: object) -> DeadLetter:
    fields: dict[str, object] = {
        "rule": "orders",
        "error": "PermanentSubmitError",
        "message": "admission webhook denied the request",
        "time": WHEN,
        "attempts": 1,
        "workflow": "orders-0123456789ab",
    }
    fields.update(overrides)
    return DeadLetter.of(event(offset), **fields)  # type: ignore[arg-type]


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_record_carries_the_event() -> None:
    """A record names the event by id, source, type and subject and keeps its document."""
    rec = record()
    assert (rec.event_id, rec.event_source, rec.event_type, rec.event_subject) == (
        "orders/2/3",
        "kafka",
        "kafka.message",
        event().subject,
    )
    assert rec.event is not None and rec.event["value"]["orderId"] == "A-1"


def test_record_without_event() -> None:
    """A record for a manual firing or an undecodable payload has no event fields."""
    rec = DeadLetter.of(
        None, rule=None, error="DecodeError", message="bad", time=WHEN, payload="AAEC"
    )
    assert (rec.event_id, rec.event, rec.payload) == (None, None, "AAEC")


def test_record_round_trips_through_json() -> None:
    """encode() gives one newline-free JSON document that reads back into the same record."""
    rec = record()
    wire = encode(rec)
    assert b"\n" not in wire
    back = DeadLetter.from_json(json.loads(wire))
    assert back == rec
    assert back.event == rec.event
    assert json.loads(wire)["time"] == "2025-01-01T12:30:00.250Z"


async def test_file_sink_appends_one_line_per_record(tmp_path: Path) -> None:
    """Each write appends one JSON line; the file reads back record by record."""
    path = tmp_path / "dead.jsonl"
    sink = FileDeadLetterSink(path)
    await sink.write(record(1))
    await sink.write(record(2, error="RenderError"))
    await sink.close()
    lines = read_lines(path)
    assert [(x["event_id"], x["error"]) for x in lines] == [
        ("orders/2/1", "PermanentSubmitError"),
        ("orders/2/2", "RenderError"),
    ]


async def test_concurrent_writers_never_interleave(tmp_path: Path) -> None:
    """Many concurrent writes give exactly one whole JSON line each."""
    path = tmp_path / "dead.jsonl"
    sink = FileDeadLetterSink(path)
    big = "x" * 100_000  # larger than a pipe buffer, so a torn write would show
    await asyncio.gather(*(sink.write(record(n, message=big)) for n in range(40)))
    await sink.close()
    lines = read_lines(path)
    assert sorted(str(x["event_id"]) for x in lines) == sorted(f"orders/2/{n}" for n in range(40))
    assert all(x["message"] == big for x in lines)


async def test_every_record_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """write() returns only after fsync of the dead-letter file, once per record."""
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    sink = FileDeadLetterSink(tmp_path / "dead.jsonl")
    for n in range(3):
        await sink.write(record(n))
        assert len(synced) == n + 1
    await sink.close()


async def test_existing_file_is_appended_to(tmp_path: Path) -> None:
    """A restarted sink appends after the lines already in the file."""
    path = tmp_path / "dead.jsonl"
    for n in range(2):
        sink = FileDeadLetterSink(path)
        await sink.write(record(n))
        await sink.close()
    assert [x["event_id"] for x in read_lines(path)] == ["orders/2/0", "orders/2/1"]


async def test_missing_directory_is_created(tmp_path: Path) -> None:
    """The sink creates the file's directory on first write."""
    path = tmp_path / "var" / "dead" / "letters.jsonl"
    sink = FileDeadLetterSink(path)
    await sink.write(record())
    await sink.close()
    assert len(read_lines(path)) == 1


async def test_closed_sink_refuses_writes(tmp_path: Path) -> None:
    """close() is idempotent and a later write raises instead of losing the record."""
    sink = FileDeadLetterSink(tmp_path / "dead.jsonl")
    await sink.write(record())
    await sink.close()
    await sink.close()
    with pytest.raises(RuntimeError, match="closed"):
        await sink.write(record())


async def test_cancelled_write_keeps_the_lock_until_its_line_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer cancelled while its thread writes holds the lock until the line is whole."""
    entered, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        entered.set()
        release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "dead.jsonl"
    sink = FileDeadLetterSink(path)
    first = asyncio.create_task(sink.write(record(1, message="z" * 200_000)))
    assert await asyncio.to_thread(entered.wait, 10)
    first.cancel()
    second = asyncio.create_task(sink.write(record(2)))
    try:
        for _ in range(100):
            await asyncio.sleep(0)
        assert not first.done() and not second.done()
    finally:
        release.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    await sink.close()
    assert [x["event_id"] for x in read_lines(path)] == ["orders/2/1", "orders/2/2"]


# --- deep events, full disks, one letter per (event, rule, reason) ------------------------


def nested(depth: int) -> dict[str, object]:
    """A document nested `depth` levels, built without recursion."""
    document: dict[str, object] = {}
    for _ in range(depth):
        document = {"a": document}
    return document


def test_an_event_too_deep_to_serialise_still_leaves_its_coordinates() -> None:
    """A record whose event document cannot be serialised is written without it, with the
    event's id, the rule, the reason and why the document was left out."""
    rec = DeadLetter(
        rule="orders",
        error="RenderError",
        message="boom",
        time=WHEN,
        event_id="orders/0/7",
        event_source="kafka",
        event=nested(5000),
    )
    document = json.loads(encode(rec))
    assert (document["event_id"], document["rule"], document["error"]) == (
        "orders/0/7",
        "orders",
        "RenderError",
    )
    assert document["event"] is None
    assert "RecursionError" in document["eventOmitted"]
    assert DeadLetter.from_json(document).event_id == "orders/0/7"


@settings(max_examples=40, deadline=None)
@given(depth=st.integers(1, 3000), width=st.integers(0, 3))
def test_any_decoded_payload_can_be_dead_lettered(depth: int, width: int) -> None:
    """Whatever nesting a JSON payload has, it is either kept as text (too deep to be
    taken as JSON) or parsed, and its dead letter serialises whole either way."""
    text = "[" * depth + ",".join(["1"] * width) + "]" * depth
    value = ('{"v": ' + text + "}").encode()
    event = decode_kafka_record("orders", 0, 1, 1735718400000, None, value, [])
    parsed = event.doc["value"]
    assert isinstance(parsed, str) == (depth + 1 > MAX_DEPTH)
    rec = DeadLetter.of(event, rule="r", error="RenderError", message="m", time=WHEN)
    document = json.loads(encode(rec))
    assert document["event"]["value"] == parsed
    assert "eventOmitted" not in document


async def test_a_failed_write_is_a_storage_error_and_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC in the middle of a line: a StorageError (temporary) is raised, the observer
    hears of it, the partial line is cut away, and the next write starts a clean line."""
    seen: list[StorageError] = []
    path = tmp_path / "dead.jsonl"
    sink = FileDeadLetterSink(path, observer=seen.append)
    await sink.write(record(1))
    real_write = os.write

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 10:
            return real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(StorageError, match="ENOSPC") as raised:
        await sink.write(record(2))
    assert isinstance(raised.value, TemporarySubmitError) and raised.value.retry_after
    assert [e.target for e in seen] == ["dead-letters"]
    monkeypatch.setattr(os, "write", real_write)
    await sink.write(record(3))
    await sink.close()
    assert [x["event_id"] for x in read_lines(path)] == ["orders/2/1", "orders/2/3"]


class Counting:
    """A dead-letter sink that records writes and fails the ones it is told to."""

    def __init__(self) -> None:
        self.written: list[DeadLetter] = []
        self.fail = 0
        self.gate: asyncio.Event | None = None

    async def write(self, record: DeadLetter) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise StorageError("full", target="dead-letters", error=OSError(errno.ENOSPC, "x"))
        self.written.append(record)

    async def close(self) -> None:
        pass


async def test_once_writes_each_event_rule_and_reason_once() -> None:
    """Repeats of one (event, rule, reason) write nothing; another rule or reason writes."""
    inner = Counting()
    once = OnceDeadLetters(inner)
    for rec in (record(1), record(1), record(1, rule="other"), record(1, error="RenderError")):
        await once.write(rec)
    await once.write(record(1, message="the same letter, said differently"))
    assert [(r.rule, r.error) for r in inner.written] == [
        ("orders", "PermanentSubmitError"),
        ("other", "PermanentSubmitError"),
        ("orders", "RenderError"),
    ]
    assert once.repeats == 2


async def test_once_shares_a_write_in_flight_and_retries_a_failed_one() -> None:
    """Concurrent twins wait for one write; a failed write is forgotten, so its retry writes."""
    inner = Counting()
    inner.gate = asyncio.Event()
    once = OnceDeadLetters(inner)
    twins = [asyncio.create_task(once.write(record(1))) for _ in range(3)]
    await asyncio.sleep(0)
    inner.gate.set()
    await asyncio.gather(*twins)
    assert len(inner.written) == 1
    inner.fail = 1
    with pytest.raises(StorageError):
        await once.write(record(2))
    await once.write(record(2))
    assert [r.event_id for r in inner.written] == ["orders/2/1", "orders/2/2"]


async def test_once_learns_what_the_file_holds_before_its_first_write(tmp_path: Path) -> None:
    """After a restart, a letter already in the file is not written again."""
    path = tmp_path / "dead.jsonl"
    first = FileDeadLetterSink(path)
    await first.write(record(1))
    await first.close()
    again = FileDeadLetterSink(path)
    once = OnceDeadLetters(again, primer=again)
    await once.write(record(1))
    await once.write(record(2))
    await once.close()
    assert [x["event_id"] for x in read_lines(path)] == ["orders/2/1", "orders/2/2"]
