"""Kafka decoder: the auto view, per-format views and their cache, and kafka event files."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from trigger.decoders import decode_kafka_file, decode_kafka_record, view
from trigger.errors import DecodeError
from trigger.events import EPOCH, Event

FIXTURES = Path(__file__).parents[1] / "fixtures"


def record(
    value: bytes | None = b'{"orderId": "A-1"}',
    *,
    key: bytes | None = b"customer-42",
    headers: list[tuple[str, bytes | None]] | None = None,
    timestamp: int | None = 1735718400123,
) -> Event:
    return decode_kafka_record("orders", 2, 418, timestamp, key, value, headers or [])


def test_record_envelope() -> None:
    """id and subject are topic/partition/offset; time is the timestamp in ms."""
    event = record()
    assert (event.id, event.subject, event.source, event.type) == (
        "orders/2/418",
        "orders/2/418",
        "kafka",
        "kafka.message",
    )
    assert event.time == datetime(2025, 1, 1, 8, 0, 0, 123000, tzinfo=UTC)
    assert event.fields["timestamp"] == 1735718400123
    assert (event.fields["topic"], event.fields["partition"], event.fields["offset"]) == (
        "orders",
        2,
        418,
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'{"orderId": "A-1"}', {"orderId": "A-1"}),
        (b"[1, 2]", [1, 2]),
        (b"42", 42),
        (b"hello world", "hello world"),
        (b"NaN", "NaN"),
        ("\u4e2d".encode(), "\u4e2d"),
        (b"\xff\x00\x01", base64.b64encode(b"\xff\x00\x01").decode()),
        (b"", ""),
        (None, None),
    ],
)
def test_auto_value(value: bytes | None, expected: Any) -> None:
    """The auto view is JSON when it parses, else text when UTF-8, else base64."""
    event = record(value)
    assert event.fields["value"] == expected
    assert event.data == expected
    assert event.raw == value


@pytest.mark.parametrize(
    ("key", "expected"),
    [(b"customer-42", "customer-42"), (b"\xff\xfe", "//4="), (None, None)],
)
def test_key(key: bytes | None, expected: str | None) -> None:
    """The key is text when UTF-8, base64 otherwise, None when absent."""
    assert record(key=key).fields["key"] == expected


def test_headers() -> None:
    """Header values are text when UTF-8, else base64; null is empty; the last repeat wins."""
    headers = [("a", b"1"), ("bin", b"\xff"), ("none", None), ("a", b"2")]
    assert record(headers=headers).fields["headers"] == {"a": "2", "bin": "/w==", "none": ""}


@pytest.mark.parametrize("timestamp", [None, -1])
def test_missing_timestamp_is_epoch(timestamp: int | None) -> None:
    """A record without a timestamp (-1 in Kafka) gets the epoch as its time."""
    assert record(timestamp=timestamp).time == EPOCH


def test_small_timestamp_is_milliseconds() -> None:
    """Timestamps are always milliseconds, even small ones."""
    assert record(timestamp=1500).time == datetime(1970, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        ("json", b'{"a": 1}', {"a": 1}),
        ("json", b'"quoted"', "quoted"),
        ("text", b'{"a": 1}', '{"a": 1}'),
        ("text", b"42", "42"),
        ("bytes", b'{"a": 1}', base64.b64encode(b'{"a": 1}').decode()),
        ("bytes", b"\xff", "/w=="),
        ("json", None, None),
        ("text", None, None),
        ("bytes", None, None),
    ],
)
def test_view(fmt: Any, value: bytes | None, expected: Any) -> None:
    """A view decodes the value per format, in fields, data and the doc."""
    result = view(record(value), fmt)
    assert result.fields["value"] == expected
    assert result.data == expected
    assert result.doc["value"] == expected


@pytest.mark.parametrize(
    ("fmt", "value"),
    [("json", b"not json"), ("json", b"\xff"), ("json", b"NaN"), ("text", b"\xff\xfe")],
)
def test_view_refuses(fmt: Any, value: bytes) -> None:
    """json needs UTF-8 JSON and text needs UTF-8; otherwise DecodeError on `value`."""
    with pytest.raises(DecodeError) as caught:
        view(record(value), fmt)
    assert caught.value.where == "value"


def test_view_cached() -> None:
    """Asking twice for a format returns the same object."""
    event = record()
    assert view(event, "text") is view(event, "text")


def test_view_of_view_shares_cache() -> None:
    """A view's own views come from the original's cache."""
    event = record()
    assert view(view(event, "text"), "bytes") is view(event, "bytes")


def test_view_leaves_original_untouched() -> None:
    """Building a view does not change the original event's value."""
    event = record(b"42")
    view(event, "text")
    assert event.fields["value"] == 42


def test_view_unknown_format() -> None:
    """An unknown format is a programming error (ValueError), not poison."""
    with pytest.raises(ValueError, match="unknown"):
        view(record(), "yaml")  # type: ignore[arg-type]


# --- kafka event files ------------------------------------------------------------------


def test_file_fixture() -> None:
    """The kafka fixture decodes with its JSON value and compact raw bytes."""
    doc = json.loads((FIXTURES / "kafka/record-json.json").read_text())
    event = decode_kafka_file(doc)
    assert event.id == "orders/2/418"
    assert event.fields["value"]["amount"] == 249.5
    assert event.fields["headers"]["trace-id"] == "4bf92f3577b34da6"
    assert event.raw == json.dumps(doc["kafka"]["value"], separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("value", "raw", "auto"),
    [
        ("hello", b"hello", "hello"),
        ("123", b"123", 123),
        (7, b"7", 7),
        ([1, "\u4e2d"], '[1,"\u4e2d"]'.encode(), [1, "\u4e2d"]),
        (None, None, None),
    ],
)
def test_file_value_forms(value: Any, raw: bytes | None, auto: Any) -> None:
    """A string value stands for its UTF-8 bytes, other JSON for its compact encoding."""
    event = decode_kafka_file({"kafka": {"topic": "t", "timestamp": 0, "value": value}})
    assert (event.raw, event.fields["value"]) == (raw, auto)


def test_file_time_string() -> None:
    """A file timestamp may be an RFC 3339 time; fields keep milliseconds."""
    event = decode_kafka_file({"kafka": {"topic": "t", "timestamp": "2025-01-01T08:00:00.5Z"}})
    assert event.fields["timestamp"] == 1735718400500


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"timestamp": 0}, "kafka.topic"),
        ({"topic": 1, "timestamp": 0}, "kafka.topic"),
        ({"partition": 1}, "kafka.topic"),
        ({"topic": "t", "timestamp": "soon"}, "kafka.timestamp"),
        ({"topic": "t", "timestamp": 0, "partition": "2"}, "kafka.partition"),
        ({"topic": "t", "timestamp": 0, "key": 5}, "kafka.key"),
        ({"topic": "t", "timestamp": 0, "headers": []}, "kafka.headers"),
        ({"topic": "t", "timestamp": 0, "headers": {"h": 1}}, "kafka.headers.h"),
        ({"topic": "t", "timestamp": 0, "value": "\ud800"}, "kafka.value"),
    ],
)
def test_file_problem_located(spec: dict[str, Any], where: str) -> None:
    """A missing or mistyped member of a kafka file names its path."""
    with pytest.raises(DecodeError) as caught:
        decode_kafka_file({"kafka": spec})
    assert caught.value.where == where


def test_headers_as_the_readme_says() -> None:
    """A repeated header name keeps its last value, a null value is "", bytes that are not
    UTF-8 are base64 (README: Kafka, "Message fields")."""
    event = record(headers=[("trace", b"a"), ("trace", b"b"), ("empty", None), ("bin", b"\xff\x00")])
    assert event.fields["headers"] == {"trace": "b", "empty": "", "bin": "/wA="}
