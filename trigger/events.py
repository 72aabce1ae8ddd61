"""The Event envelope every source produces, and how its id and time are derived.

An Event is immutable and CloudEvents-shaped: the common fields (`id`, `source`, `type`,
`subject`, `time`, `data`) plus the source's own fields (DESIGN §2). `Event.doc` is the one
document that patterns, CEL expressions and templates see: the common fields and the
source's fields at the top level, the raw payload under `data`, times as RFC 3339 strings.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import cached_property
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from trigger.errors import DecodeError

SourceKind = Literal["oss", "kafka", "cron", "webhook", "workflow"]
# The annotation trigger writes on every Workflow it creates: the id of the event behind it
# (a `workflow` event's `triggeredBy` reads it back).
ANNOTATION_EVENT_ID: Final = "trigger.dev/event-id"


@dataclass(frozen=True)
class Event:
    """One event, decoded once at the edge."""

    id: str
    source: SourceKind
    type: str
    subject: str
    time: datetime
    data: Any
    fields: Mapping[str, Any] = field(default_factory=dict)
    # The undecoded payload, kept where a rule may ask for another decoding (Kafka `format`).
    raw: bytes | None = field(default=None, compare=False, repr=False)
    # Per-format views of this event (see trigger.decoders.kafka); filled lazily.
    views: dict[str, Event] = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def doc(self) -> dict[str, Any]:
        """The document filters and templates see (built once per event)."""
        doc: dict[str, Any] = dict(self.fields)
        doc.update(
            id=self.id,
            source=self.source,
            type=self.type,
            subject=self.subject,
            time=format_time(self.time),
            data=self.data,
        )
        return doc


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`; milliseconds only when the time has them."""
    moment = moment.astimezone(UTC)
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


_ZONE_SUFFIX = re.compile(
    r"^(?P<stamp>\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?)"
    r"(?P<zone>[A-Za-z][A-Za-z0-9_+\-/]*)$"
)
_EPOCH_MS_THRESHOLD: Final = 100_000_000_000  # numbers above this are milliseconds (year 5138 in s)


def parse_time(value: Any, *, where: str = "time") -> datetime:
    """Parse a time leniently into an aware UTC datetime.

    Accepts datetimes, epoch seconds or milliseconds (int, float or digit strings),
    RFC 3339 / ISO 8601 with `Z` or an offset (naive means UTC), and the Alibaba form with
    a zone name glued to the end (`2021-05-06T08:00:00.149Asia/Shanghai`, `...179PRC`).
    """
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    if isinstance(value, bool):
        raise DecodeError(f"expected a time, got {value!r}", where=where)
    if isinstance(value, int | float):
        return _from_epoch(float(value), where)
    if not isinstance(value, str) or not value.strip():
        raise DecodeError(f"expected a time, got {value!r}", where=where)
    text = value.strip()
    if text.isdigit():
        return _from_epoch(float(text), where)
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        parsed = _with_zone_name(text, where)
    return parse_time(parsed)


def _from_epoch(number: float, where: str) -> datetime:
    seconds = number / 1000 if abs(number) >= _EPOCH_MS_THRESHOLD else number
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise DecodeError(f"epoch time {number!r} is out of range", where=where) from exc


def _with_zone_name(text: str, where: str) -> datetime:
    match = _ZONE_SUFFIX.match(text)
    if match is None:
        raise DecodeError(f"cannot parse time {text!r}", where=where)
    try:
        zone: timezone | ZoneInfo = ZoneInfo(match["zone"])
    except (ZoneInfoNotFoundError, ValueError) as exc:
        if match["zone"] in {"UTC", "GMT", "Z"}:
            zone = UTC
        else:
            raise DecodeError(
                f"cannot parse time {text!r}: unknown zone {match['zone']!r}", where=where
            ) from exc
    try:
        return datetime.fromisoformat(match["stamp"]).replace(tzinfo=zone)
    except ValueError as exc:
        raise DecodeError(f"cannot parse time {text!r}", where=where) from exc


# --- ids derived from each source's own coordinates (DESIGN §2) -------------------------


def kafka_event_id(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


def cron_event_id(rule: str, scheduled: datetime) -> str:
    return f"{rule}@{format_time(scheduled)}"


def workflow_event_id(uid: str, phase: str) -> str:
    return f"{uid}:{phase}"


def polled_object_id(bucket: str, key: str, etag: str) -> str:
    return f"{bucket}/{key}@{etag}"


def default_idempotency_key(event: Event) -> str:
    """What one rule fires once for, when the rule sets no `idempotencyKey`: the event's
    id — except for a created OSS object with an ETag, where it is the object's content,
    `bucket/key@ETAG` (the id a polled object has). So a pushed object and a polled one
    agree: a re-upload of identical content, a client's retried PUT, or a second
    notification path is the same work, and a re-upload with new content is new work.

    A Kafka record's key is its id with its timestamp, `topic/partition/offset@MILLIS`: a
    redelivered record is the same work, while a record of a deleted and re-created topic
    at an offset the old topic used (offsets start from 0 again) is new work."""
    if event.source == "kafka":
        stamp = event.fields.get("timestamp")
        return event.id if stamp is None or stamp < 0 else f"{event.id}@{stamp}"
    if event.source != "oss" or "ObjectCreated" not in event.type:
        return event.id
    fields = event.fields
    etag, bucket, key = fields.get("etag"), fields.get("bucket"), fields.get("key")
    if not (etag and bucket and key is not None):
        return event.id
    return polled_object_id(str(bucket), str(key), str(etag).strip('"').upper())


def content_id(*parts: bytes | str) -> str:
    """A content hash for deliveries that carry no id of their own (webhooks)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()[:32]


EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS: Final = timedelta(milliseconds=1)
