"""Objects as the server stores and describes them.

A bucket keeps its keys in a sorted list beside a dict of objects, so a listing page costs
O(log n + page) however many keys it holds. Objects carry what OSS reports about them: an
MD5 ETag, the CRC-64 of `x-oss-hash-crc64ecma`, and Last-Modified in the date forms oss2
parses.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Final

_MASK64: Final = 0xFFFFFFFFFFFFFFFF
_CRC64_POLY_REFLECTED: Final = 0xC96C5795D7870F42  # ECMA-182, bit-reversed as OSS uses it


def _crc64_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC64_POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC64_TABLE: Final = _crc64_table()


def crc64ecma(data: bytes) -> int:
    """The CRC-64 OSS reports in `x-oss-hash-crc64ecma` (ECMA-182, reflected, all-ones)."""
    crc = _MASK64
    for byte in data:
        crc = _CRC64_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _MASK64


def http_date(moment: datetime) -> str:
    """`Sat, 05 Dec 2015 11:10:29 GMT`, the only Last-Modified form oss2 parses."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def iso_millis(moment: datetime) -> str:
    """`2015-12-05T11:10:29.000Z`, the only LastModified form oss2's list parser accepts."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass(frozen=True)
class StoredObject:
    """One object as the server holds it; `etag` is upper-case hex without quotes."""

    key: str
    data: bytes
    content_type: str
    etag: str
    last_modified: datetime
    user_meta: Mapping[str, str]
    crc64: int

    @property
    def size(self) -> int:
        return len(self.data)


class Bucket:
    """Objects of one bucket, keys kept sorted (code-point order is UTF-8 byte order)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.keys: list[str] = []
        self.objects: dict[str, StoredObject] = {}

    def put(self, obj: StoredObject) -> None:
        if obj.key not in self.objects:
            insort(self.keys, obj.key)
        self.objects[obj.key] = obj

    def delete(self, key: str) -> StoredObject | None:
        obj = self.objects.pop(key, None)
        if obj is not None:
            del self.keys[bisect_left(self.keys, key)]
        return obj


def object_headers(obj: StoredObject) -> dict[str, str]:
    """The headers of a GetObject or HeadObject answer, user metadata included."""
    headers = {
        "Content-Type": obj.content_type,
        "ETag": f'"{obj.etag}"',
        "Last-Modified": http_date(obj.last_modified),
        "x-oss-object-type": "Normal",
        "x-oss-storage-class": "Standard",
        "x-oss-hash-crc64ecma": str(obj.crc64),
        "Accept-Ranges": "bytes",
    }
    headers.update(obj.user_meta)
    return headers
