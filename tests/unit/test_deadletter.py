"""Dead-letter records and the JSON-lines file sink."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trigger.decoders.kafka import decode_kafka_record
from trigger.events import Event
from trigger.submit.deadletter import DeadLetter, FileDeadLetterSink, encode

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
