"""Decoder for Kafka records, and the per-format views a rule's `format` asks for.

A record is decoded once into the "auto" view: the value is parsed JSON when it parses,
else UTF-8 text, else base64 text. A rule with `format: json|text|bytes` gets
`view(event, fmt)`, built from `Event.raw` on first use and cached in `Event.views`, so
many rules asking for the same format cost one conversion per record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Final, Literal

from trigger.decoders._common import (
    as_mapping,
    at,
    b64text,
    compact_json,
    encode_utf8,
    opt_int,
    opt_mapping,
    parse_json,
    req_mapping,
    req_str,
    utf8,
)
from trigger.errors import DecodeError
from trigger.events import EPOCH, ONE_MS, Event, kafka_event_id, parse_time

Format = Literal["json", "text", "bytes"]
FORMATS: Final = ("json", "text", "bytes")
_VALUE_WHERE: Final = "value"


def decode_kafka_record(  # noqa: PLR0917 - positional, like the record it mirrors (aiokafka)
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
) -> Event:
    """Decode one consumed record into its "auto" view (`raw` keeps the value bytes).

    Repeated header names keep the last value; a header without a value reads as "".
    """
    auto, parsed_as = _auto(value)
    fields = {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": None if key is None else _text_or_base64(key),
        "headers": {name: _text_or_base64(data or b"") for name, data in headers},
        "value": auto,
        "timestamp": timestamp_ms,
    }
    event = Event(
        id=kafka_event_id(topic, partition, offset),
        source="kafka",
        type="kafka.message",
        subject=f"{topic}/{partition}/{offset}",
        time=_time(timestamp_ms),
        data=auto,
        fields=fields,
        raw=value,
    )
    if parsed_as is not None:
        # The auto view already is the json (or text) view: no second parse per rule.
        event.views[parsed_as] = event
    return event


def view(event: Event, fmt: Format) -> Event:
    """The event with its value decoded as `fmt`; a tombstone (no value) stays None.

    Views share the original's `views` dict, so a view of a view is served from the same
    cache and each format is converted at most once per record.
    """
    cached = event.views.get(fmt)
    if cached is not None:
        return cached
    value = _convert(event.raw, fmt)
    fields = dict(event.fields)
    fields["value"] = value
    result = replace(event, fields=fields, data=value, views=event.views)
    event.views[fmt] = result
    return result


def _convert(raw: bytes | None, fmt: Format) -> Any:
    if raw is None:
        return None
    if fmt == "bytes":
        return b64text(raw)
    if fmt == "text":
        return utf8(raw, where=_VALUE_WHERE)
    if fmt == "json":
        return parse_json(utf8(raw, where=_VALUE_WHERE), where=_VALUE_WHERE)
    raise ValueError(f"unknown Kafka value format {fmt!r}; expected one of {FORMATS}")


def _auto(value: bytes | None) -> tuple[Any, Format | None]:
    """The value as JSON, else text, else base64; and which format view that also is."""
    if value is None:
        return None, None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return b64text(value), None
    try:
        return parse_json(text, where=_VALUE_WHERE), "json"
    except DecodeError:
        return text, "text"


def _text_or_base64(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return b64text(data)


def _time(timestamp_ms: int | None) -> datetime:
    # Kafka uses -1 for "no timestamp"; exact integer arithmetic avoids float rounding.
    if timestamp_ms is None or timestamp_ms < 0:
        return EPOCH
    try:
        return EPOCH + timestamp_ms * ONE_MS
    except OverflowError as exc:
        raise DecodeError(f"timestamp {timestamp_ms} is out of range", where="timestamp") from exc


# --- event files: {"kafka": {...}} ------------------------------------------------------


def decode_kafka_file(obj: Mapping[str, Any]) -> Event:
    """Decode `{"kafka": {topic, partition, offset, timestamp, key, headers, value}}`.

    `value` may be any JSON: an object, array, number or boolean stands for its compact JSON
    bytes, a string for its UTF-8 bytes, null for a tombstone. `timestamp` is epoch
    milliseconds or an RFC 3339 time (optional); partition and offset default to 0.
    """
    where = "kafka"
    spec = req_mapping(as_mapping(obj, "$"), where, "")
    raw_headers = opt_mapping(spec, "headers", where) or {}
    return decode_kafka_record(
        topic=req_str(spec, "topic", where),
        partition=opt_int(spec, "partition", where) or 0,
        offset=opt_int(spec, "offset", where) or 0,
        timestamp_ms=_file_timestamp(spec.get("timestamp"), at(where, "timestamp")),
        key=_file_bytes(spec.get("key"), at(where, "key"), text_only=True),
        value=_file_bytes(spec.get("value"), at(where, "value"), text_only=False),
        headers=[
            (name, _file_bytes(data, at(at(where, "headers"), name), text_only=True))
            for name, data in raw_headers.items()
        ],
    )


def _file_timestamp(value: Any, where: str) -> int | None:
    if value is None:
        return None  # a record without a timestamp, as Kafka allows (-1 on the wire)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return (parse_time(value, where=where) - EPOCH) // ONE_MS


def _file_bytes(value: Any, where: str, *, text_only: bool) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return encode_utf8(value, where=where)
    if text_only:
        raise DecodeError(f"expected a string, got {type(value).__name__}", where=where)
    return compact_json(value, where=where)
