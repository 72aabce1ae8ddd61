"""The OSS poller's checkpoint: what the scans of one (endpoint, bucket, prefix) have done,
kept under a byte bound however fast objects are uploaded.

One state value (version 2) holds:

- `watermark`: objects whose LastModified is before it are done.
- `seen`: digests of the objects at or after the watermark that were already fired (or
  skipped on the first run), so the overlap between scans fires nothing twice.
- `started`: when the scan that left the watermark started (the bound below needs it).
- `scan`: the scan in progress, if any: its start `started` (server time of its first
  page), the watermark it fires from `base` (None: everything), the watermark it will
  leave `horizon`, the last key whose page was submitted `after`, and the digests of what
  it listed at or after `horizon` (`seen`). While a scan runs, the outer `seen` keeps only
  the digests the scan has not listed again, so the two never overlap.

A digest is 64 bits of BLAKE2b over (key, ETag), stored with the object's LastModified
second. `pack` groups them by second (offset from the previous second and a count, as
varints), writes each second's sorted digests as differences (8 bytes each), and
zlib-compresses the lot: digests are random, so this only wins back the times and a little
more: about 10.4 base64 characters per object at 165 uploads/s, times included (bare
digests took 10.7).

The bound: `dump(limit)` returns a value whose JSON takes at most `limit` bytes. When the
digests do not fit, it gives up, in this order, what costs least:

1. the oldest seconds before the scan's start: the watermark left for the next scan moves
   up to the oldest second kept (never past the scan's start), so the lookback narrows,
   and an object that shows up in listings later than the narrowed window after its
   LastModified, behind a scan's position, is missed;
2. digests the running scan has not reached yet (kept in memory; after a restart those
   objects would be submitted again, meeting their Workflow's name);
3. the oldest digests of objects modified after the scan started: the next scan submits
   those objects again, and they meet their Workflow's name.

Nothing is dropped from memory: `dump` is pure, and the poller starts each scan from what
was saved.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import math
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from trigger.errors import SourceError
from trigger.events import format_time, parse_time

Entries = dict[int, int]  # digest -> LastModified, in whole seconds since the epoch
VERSION: Final = 2
_DIGEST_BYTES: Final = 8
_SHRINK: Final = 0.98  # aim a little under the bound: fewer digests cost a little more each


def digest(key: str, etag: str) -> int:
    data = key.encode("utf-8", "surrogatepass") + b"\0" + etag.upper().encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=_DIGEST_BYTES).digest(), "big")


# --- packing ---------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def pack(entries: Mapping[int, int]) -> str:
    """The entries as base64 of zlib of (second offset, count, digest differences)..."""
    if not entries:
        return ""
    by_second: dict[int, list[int]] = {}
    for mark, second in entries.items():
        by_second.setdefault(second, []).append(mark)
    raw, previous = bytearray(), 0
    for second in sorted(by_second):
        marks = sorted(by_second[second])
        deltas = [b - a for a, b in zip([0, *marks], marks, strict=False)]
        raw += _varint(second - previous) + _varint(len(marks))
        raw += struct.pack(f">{len(deltas)}Q", *deltas)
        previous = second
    return base64.b64encode(zlib.compress(bytes(raw))).decode()


def unpack(text: str) -> Entries:
    if not text:
        return {}
    raw = zlib.decompress(base64.b64decode(text, validate=True))
    entries: Entries = {}
    pos = second = 0
    while pos < len(raw):
        offset, pos = _read_varint(raw, pos)
        count, pos = _read_varint(raw, pos)
        second += offset
        deltas = struct.unpack_from(f">{count}Q", raw, pos)
        pos += count * _DIGEST_BYTES
        entries.update(dict.fromkeys(itertools.accumulate(deltas), second))
    return entries


def _unpack_v1(text: str, second: int) -> Entries:
    """Version 1 kept bare digests; give them `second`, the earliest they can be from."""
    raw = base64.b64decode(text)
    size = _DIGEST_BYTES
    return {int.from_bytes(raw[i : i + size], "big"): second for i in range(0, len(raw), size)}


def _size(value: Mapping[str, Any]) -> int:
    """Bytes of `value` as the state stores encode it (ASCII: characters are bytes)."""
    return len(json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False))


# --- the checkpoint --------------------------------------------------------------------


def _time(value: Any) -> datetime | None:
    return None if value is None else parse_time(value, where="checkpoint")


def _stamp(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


def _second(value: datetime | None) -> int:
    return 0 if value is None else math.floor(value.timestamp())


def _at(second: int) -> datetime:
    return datetime.fromtimestamp(second, tz=UTC)


@dataclass
class Scan:
    """A scan in progress: fires objects at or after `base` not in the old `seen`."""

    started: datetime  # server time of the first page, whole seconds
    base: datetime | None  # the watermark it fires from; None: everything (existing: fire)
    horizon: datetime  # the watermark it will leave; digests at or after it are collected
    after: str = ""  # the last key whose page was submitted
    seen: Entries = field(default_factory=dict)


@dataclass(frozen=True)
class Trim:
    """What `dump` gave up to stay under its bound."""

    size: int  # bytes of the value returned
    lookback: float | None  # seconds the saved window covers (scan start - its horizon)
    narrowed: bool = False  # the window was narrowed to fit
    dropped: int = 0  # digests left out beyond the narrowing (objects submitted again)


@dataclass
class Checkpoint:
    initialized: bool = False  # False: never saved, the first-run policy applies
    watermark: datetime | None = None
    seen: Entries = field(default_factory=dict)
    scan: Scan | None = None
    started: datetime | None = None  # start of the scan that left `watermark`

    @classmethod
    def load(cls, value: Mapping[str, Any] | None) -> Checkpoint:
        if value is None:
            return cls()
        try:
            return cls._load(value)
        except (KeyError, TypeError, ValueError, IndexError, struct.error, zlib.error,
                binascii.Error) as exc:  # fmt: skip
            raise SourceError(f"poll checkpoint is unreadable: {exc!r}") from exc

    @classmethod
    def _load(cls, value: Mapping[str, Any]) -> Checkpoint:
        version = value.get("version", 1)
        if version not in (1, VERSION):
            raise SourceError(f"poll checkpoint version {version} is newer than this trigger")
        watermark = _time(value.get("watermark"))

        def entries(text: str, floor: datetime | None) -> Entries:
            return unpack(text) if version == VERSION else _unpack_v1(text, _second(floor))

        scan = None
        raw = value.get("scan")
        if raw is not None:
            horizon = parse_time(raw["horizon"])
            scan = Scan(
                started=parse_time(raw["started"]),
                base=_time(raw.get("base")),
                horizon=horizon,
                after=str(raw.get("after", "")),
                seen=entries(raw.get("seen", ""), horizon),
            )
        seen = entries(value.get("seen", ""), watermark)
        return cls(True, watermark, seen, scan, _time(value.get("started")))

    def begin(self, started: datetime, existing: str, lookback: float) -> Scan:
        first = started if existing == "skip" else None
        base = self.watermark if self.initialized else first
        horizon = started - timedelta(seconds=lookback)
        if base is not None and base > horizon:
            horizon = base
        return Scan(started, base, horizon)

    def finish(self, scan: Scan) -> None:
        self.initialized, self.watermark, self.seen = True, scan.horizon, scan.seen
        self.started, self.scan = scan.started, None

    # --- saving, bounded

    def dump(self, limit: int) -> tuple[dict[str, Any], Trim]:
        """The value to save, at most `limit` bytes when encoded (module docstring)."""
        old, new, started, horizon = self._parts()
        lookback = None if started is None or horizon is None else float(started - horizon)
        value = self._value(old, new, horizon)
        size = _size(value)
        if size <= limit or not (old or new):
            return value, Trim(size, lookback)
        overhead = _size(self._value({}, {}, horizon))
        target, cut, dropped = len(old) + len(new), horizon, 0
        while size > limit and target > 0:
            target = int(target * max(0, limit - overhead) / max(1, size - overhead) * _SHRINK)
            kept_old, kept_new, cut, dropped = _cut(old, new, started, horizon, target)
            value = self._value(kept_old, kept_new, cut)
            size = _size(value)
        narrowed = cut is not None and horizon is not None and cut > horizon
        if cut is not None and started is not None:
            lookback = float(started - cut)
        return value, Trim(size, lookback, narrowed, dropped)

    def _parts(self) -> tuple[Entries, Entries, int | None, int | None]:
        """(digests the scan has not listed again, digests it will leave, the start that
        caps narrowing, the horizon), in whole seconds: LastModified has no fraction, so
        `t >= horizon` means the same with the horizon rounded up."""
        scan = self.scan
        if scan is None:
            started = None if self.started is None else _second(self.started)
            horizon = None if self.watermark is None else math.ceil(self.watermark.timestamp())
            return {}, self.seen, started, horizon
        old = {mark: t for mark, t in self.seen.items() if mark not in scan.seen}
        return old, scan.seen, _second(scan.started), math.ceil(scan.horizon.timestamp())

    def _value(self, old: Entries, new: Entries, horizon: int | None) -> dict[str, Any]:
        scan = self.scan
        value: dict[str, Any] = {
            "version": VERSION,
            "watermark": _stamp(self.watermark),
            "started": _stamp(self.started),
            "seen": pack(old),
            "scan": None,
        }
        if scan is None:
            value["watermark"] = None if horizon is None else _stamp(_at(horizon))
            value["seen"] = pack(new)
            return value
        value["scan"] = {
            "started": format_time(scan.started),
            "base": _stamp(scan.base),
            "horizon": format_time(_at(horizon) if horizon is not None else scan.horizon),
            "after": scan.after,
            "seen": pack(new),
        }
        return value


def _cut(
    old: Entries, new: Entries, started: int | None, horizon: int | None, target: int
) -> tuple[Entries, Entries, int | None, int]:
    """Keep at most `target` digests, giving up what costs least first (module docstring).

    Returns the digests kept of each part, the horizon they now cover and how many were
    dropped beyond the narrowing."""
    excess = len(old) + len(new) - target
    cut = horizon
    if horizon is not None and started is not None:
        # Whole seconds only: every object at or after the new horizon keeps its digest.
        per_second = Counter(t for t in new.values() if t < started)
        for second in sorted(per_second):
            if excess <= 0:
                break
            excess -= per_second[second]
            cut = second + 1
        if cut is not None and cut > horizon:
            new = {mark: t for mark, t in new.items() if t >= cut}
    dropped = max(0, excess)
    old, excess = _drop_oldest(old, excess)
    new, _ = _drop_oldest(new, excess)
    return old, new, cut, dropped


def _drop_oldest(entries: Entries, count: int) -> tuple[Entries, int]:
    """`entries` without its `count` oldest, and how many more were asked for than held."""
    if count <= 0:
        return entries, 0
    if count >= len(entries):
        return {}, count - len(entries)
    ordered: Iterable[tuple[int, int]] = sorted(entries.items(), key=lambda e: (e[1], e[0]))
    return dict(itertools.islice(ordered, count, None)), 0
