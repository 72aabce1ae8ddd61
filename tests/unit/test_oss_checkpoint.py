"""The OSS poll checkpoint: packed digests, and the byte bound it keeps at any upload rate."""

from __future__ import annotations

import base64
import copy
import json
import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from trigger.settings import OssPollSettings
from trigger.sources.oss.checkpoint import (
    Checkpoint,
    Entries,
    Scan,
    digest,
    pack,
    unpack,
)

T0 = 1_750_000_000  # a LastModified second
DEFAULT_LIMIT = OssPollSettings().checkpoint_max_bytes


def at(second: int) -> datetime:
    return datetime.fromtimestamp(second, tz=UTC)


def spread(rng: random.Random, count: int, first: int, last: int) -> Entries:
    """`count` random digests modified at seconds spread evenly over [first, last]."""
    span = last - first + 1
    return {rng.getrandbits(64): first + i * span // count for i in range(count)}


def size(value: dict[str, object]) -> int:
    return len(json.dumps(value, sort_keys=True, separators=(",", ":")))


def mid_scan(old: Entries, new: Entries, started: int, lookback: int) -> Checkpoint:
    """A checkpoint whose previous scan left `old`, now scanning and having listed `new`."""
    watermark = at(started - 2 * lookback)
    scan = Scan(at(started), watermark, at(started - lookback), "in/k", dict(new))
    return Checkpoint(True, watermark, dict(old), scan, at(started - lookback))


def check_bounded(cp: Checkpoint, limit: int) -> Checkpoint:
    """Dump `cp` under `limit` and check what the saved value promises; returns it loaded."""
    assert cp.scan is not None
    before = copy.deepcopy(cp)
    value, trim = cp.dump(limit)
    assert cp == before, "dump must not change the checkpoint"
    assert size(value) <= limit and trim.size == size(value)
    saved = Checkpoint.load(value)
    assert saved.scan is not None
    started, old_horizon = int(cp.scan.started.timestamp()), cp.scan.horizon.timestamp()
    horizon = saved.scan.horizon.timestamp()
    assert old_horizon <= horizon <= max(old_horizon, started)
    assert trim.narrowed == (horizon > old_horizon)
    kept = saved.scan.seen
    assert kept.items() <= cp.scan.seen.items()
    assert saved.seen.items() <= {m: t for m, t in cp.seen.items() if m not in cp.scan.seen}.items()
    # Narrowing gives up whole seconds: every digest from the horizon to the start is kept.
    assert all(m in kept for m, t in cp.scan.seen.items() if horizon <= t < started)
    if trim.dropped:  # only once everything before the start is gone
        assert not any(t < started for t in kept.values())
    return saved


# --- packing ---------------------------------------------------------------------------------


@given(st.dictionaries(st.integers(0, 2**64 - 1), st.integers(0, 2**33), max_size=300))
def test_pack_round_trips(entries: dict[int, int]) -> None:
    """Any digests with any LastModified seconds come back exactly."""
    assert unpack(pack(entries)) == entries


def test_pack_is_smaller_than_bare_digests() -> None:
    """50,000 objects at 165 uploads/s, times included, pack into fewer base64 characters
    than their bare digests would take."""
    entries = spread(random.Random(7), 50_000, T0, T0 + 303)
    bare = len(base64.b64encode(b"\0" * 8 * len(entries)))
    assert len(pack(entries)) < 0.99 * bare


def test_digest_ignores_etag_case() -> None:
    """The ETag's case does not change an object's digest; the key and ETag do."""
    assert digest("in/a.csv", "abc") == digest("in/a.csv", "ABC")
    assert (
        len({digest("in/a.csv", "ABC"), digest("in/b.csv", "ABC"), digest("in/a.csv", "ABD")}) == 3
    )


def test_version_1_checkpoint_loads() -> None:
    """A checkpoint saved by version 1 (bare digests) loads; its digests date from the watermark."""
    marks = [digest(f"in/{i}.csv", "E") for i in range(3)]
    raw = base64.b64encode(b"".join(m.to_bytes(8, "big") for m in marks)).decode()
    value = {"version": 1, "watermark": "2025-06-01T00:00:00Z", "seen": raw, "scan": None}
    loaded = Checkpoint.load(value)
    assert loaded.seen == dict.fromkeys(marks, int(at(0).replace(year=2025, month=6).timestamp()))
    assert loaded.watermark == datetime(2025, 6, 1, tzinfo=UTC)


# --- the bound -------------------------------------------------------------------------------


def test_default_bound_holds_at_the_reported_volume() -> None:
    """120,000 objects in the lookback (105,000 were uploaded in 188 s in the report): the saved
    checkpoint fits the default bound mid-scan and after the scan, keeping whole seconds."""
    rng = random.Random(1)
    started, lookback = T0, 300
    previous = spread(rng, 94_000, started - lookback - 200, started - 5)
    listed = dict(list(previous.items())[-60_000:])  # listed again by this scan
    listed.update(spread(rng, 60_000, started - lookback, started + 100))
    cp = mid_scan(previous, listed, started, lookback)
    check_bounded(cp, DEFAULT_LIMIT)
    cp.finish(cp.scan)  # type: ignore[arg-type]
    value, trim = cp.dump(DEFAULT_LIMIT)
    assert size(value) <= DEFAULT_LIMIT and trim.narrowed and not trim.dropped
    assert trim.lookback is not None and 0 < trim.lookback < lookback


def test_volume_below_the_bound_is_kept_whole() -> None:
    """165 uploads/s over the five-minute lookback (the issue's rate) fits without narrowing."""
    rng = random.Random(2)
    started, lookback = T0, 300
    previous = spread(rng, 49_500, started - lookback - 30, started - 30)
    listed = dict(list(previous.items())[-40_000:]) | spread(rng, 10_000, started - 30, started)
    value, trim = mid_scan(previous, listed, started, lookback).dump(DEFAULT_LIMIT)
    assert not trim.narrowed and not trim.dropped and trim.lookback == lookback
    assert Checkpoint.load(value).scan.seen == listed  # type: ignore[union-attr]


def test_objects_modified_after_the_scan_start_are_dropped_last() -> None:
    """When even the objects modified since the scan started do not fit, the window stops at
    the start and the oldest of them are left out (they will be submitted again)."""
    rng = random.Random(3)
    started, lookback = T0, 300
    listed = spread(rng, 1000, started - 100, started - 1) | spread(
        rng, 3000, started, started + 60
    )
    cp = mid_scan({}, listed, started, lookback)
    saved = check_bounded(cp, 8192)
    assert saved.scan is not None and saved.scan.horizon == at(started)
    _, trim = cp.dump(8192)
    assert trim.dropped > 0 and trim.lookback == 0


def test_at_rest_the_watermark_moves_up_to_the_last_scan_start_at_most() -> None:
    """A finished checkpoint over the bound narrows too, keeping whole seconds, and never
    past its scan's start."""
    rng = random.Random(4)
    for after_start, narrowed_to_start in ((30, False), (300, True)):
        cp = mid_scan({}, spread(rng, 5000, T0 - 300, T0 + after_start), T0, 300)
        cp.finish(cp.scan)  # type: ignore[arg-type]
        value, trim = cp.dump(8192)
        saved = Checkpoint.load(value)
        assert saved.watermark is not None and saved.started == at(T0) and saved.scan is None
        assert at(T0 - 300) < saved.watermark <= at(T0)
        assert (saved.watermark == at(T0)) == narrowed_to_start == bool(trim.dropped)
        assert saved.seen.items() <= cp.seen.items()
        if not trim.dropped:
            assert saved.seen == {m: t for m, t in cp.seen.items() if at(t) >= saved.watermark}


@settings(max_examples=60, deadline=None)
@given(
    old=st.integers(0, 1500),
    new=st.integers(0, 1500),
    after_start=st.integers(0, 1500),
    limit=st.integers(8192, 40_000),
    seed=st.integers(0, 2**32),
)
def test_any_checkpoint_fits_any_bound(
    old: int, new: int, after_start: int, limit: int, seed: int
) -> None:
    """Whatever the mix of digests, the saved value fits and keeps the promised ones."""
    rng = random.Random(seed)
    started, lookback = T0, 300
    previous = spread(rng, old, started - 400, started)
    listed = spread(rng, new, started - lookback, started - 1) if new else {}
    listed |= spread(rng, after_start, started, started + 50) if after_start else {}
    listed |= dict(list(previous.items())[: old // 2])
    check_bounded(mid_scan(previous, listed, started, lookback), limit)


def test_first_run_scan_fires_from_its_start() -> None:
    """A first scan with `existing: skip` fires from its start, which is also its horizon."""
    scan = Checkpoint().begin(at(T0), "skip", 300)
    assert (scan.base, scan.horizon) == (at(T0), at(T0))
    later = Checkpoint(True, at(T0 - 10)).begin(at(T0), "skip", 300)
    assert (later.base, later.horizon) == (at(T0 - 10), at(T0 - 10))
    assert Checkpoint().begin(at(T0), "fire", 300).base is None
    assert Checkpoint().begin(at(T0), "fire", 300).horizon == at(T0) - timedelta(seconds=300)
