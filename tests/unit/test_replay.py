"""`trigger replay`'s rebuilding of events from dead-letter records, and its selection.

What a replay re-drives must be the event the daemon had: the same id, idempotency key and
document (so the same Workflow names and parameters), after the record went through the
dead-letter file's JSON and back.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import EXAMPLE_EVENTS
from trigger.daemon.replay import (
    Result,
    Selection,
    Unreplayable,
    letter_of,
    read_file,
    rebuild,
    rewrite,
)
from trigger.decoders.detect import decode_file
from trigger.decoders.kafka import decode_kafka_record
from trigger.events import Event, default_idempotency_key
from trigger.submit.deadletter import DeadLetter, encode

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def through_the_file(event: Event, rule: str | None = "r") -> DeadLetter:
    """The record of `event` as a replay reads it back from a dead-letter file."""
    record = DeadLetter.of(event, rule=rule, error="RenderError", message="m", time=T0)
    return DeadLetter.from_json(json.loads(encode(record)))


def same_event(rebuilt: Event, original: Event) -> None:
    assert rebuilt.id == original.id
    assert default_idempotency_key(rebuilt) == default_idempotency_key(original)
    assert rebuilt.doc == original.doc


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
values = st.one_of(
    st.none(),
    st.binary(max_size=40),
    st.text(max_size=40).map(str.encode),
    json_values.map(lambda v: json.dumps(v, indent=1).encode()),
)


@given(
    value=values,
    key=st.none() | st.binary(max_size=12),
    headers=st.lists(st.tuples(st.text(min_size=1, max_size=6), st.none() | st.binary(max_size=8)), max_size=3),
    timestamp=st.none() | st.integers(-1, 2**42),
    offset=st.integers(0, 2**40),
)
def test_a_kafka_record_comes_back_as_the_event_the_daemon_decoded(
    value: bytes | None,
    key: bytes | None,
    headers: list[tuple[str, bytes | None]],
    timestamp: int | None,
    offset: int,
) -> None:
    """Any record (JSON, text, binary, tombstone; any key, headers, timestamp): the rebuilt
    event has the daemon's id, idempotency key and document."""
    original = decode_kafka_record("orders", 3, offset, timestamp, key, value, headers)
    same_event(rebuild(through_the_file(original)), original)


@pytest.mark.parametrize(
    "path", sorted(p for p in EXAMPLE_EVENTS.iterdir() if "kafka" not in p.name), ids=lambda p: p.name
)
def test_every_example_event_comes_back_the_same(path: Path) -> None:
    """OSS, cron, webhook and workflow events: id, idempotency key and document kept."""
    for original in decode_file(path):
        same_event(rebuild(through_the_file(original)), original)


def test_a_record_without_an_event_cannot_be_replayed() -> None:
    """An undecodable payload's record (no event) is unreplayable, saying why."""
    record = DeadLetter(rule=None, error="DecodeError", message="bad time", time=T0, payload="eA==")
    with pytest.raises(Unreplayable, match="payload could not be decoded: DecodeError: bad time"):
        rebuild(record)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"not json", "not a dead-letter record"),
        (b"[1, 2]", "not an object"),
        (b'{"rule": "r"}', "not a dead-letter record"),
        (b'{"rule": "r", "error": "E", "message": "m", "time": "2025-01-01T00:00:00Z"}', "no event"),
    ],
)
def test_bad_lines_say_why(line: bytes, problem: str) -> None:
    """A line that is not a record, or a record with no event, is a bad letter with a reason."""
    letter = letter_of("line 1", line)
    assert letter.problem is not None and problem in letter.problem
    assert letter.raw == line


def test_selection_by_rule_and_since() -> None:
    """--rule matches the record's rule; --since its time, inclusive."""
    record = DeadLetter(rule="a", error="E", message="m", time=T0)
    assert Selection()(record)
    assert Selection(rule="a", since=T0)(record)
    assert not Selection(rule="b")(record)
    assert not Selection(since=datetime(2025, 1, 2, tzinfo=UTC))(record)


outcomes = st.sampled_from([None, "created", "duplicate", "filtered", "failed", "bad"])


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(outcomes, max_size=12), tail=st.lists(st.text(max_size=10), max_size=3))
def test_a_rewrite_keeps_exactly_what_did_not_succeed(
    tmp_path: Path, kinds: list[str | None], tail: list[str]
) -> None:
    """Whatever the mix: successes leave, failures stay updated in place, untouched and bad
    lines stay byte for byte, and lines appended after the read are carried over."""
    path = tmp_path / "dead.jsonl"
    lines = []
    for n, kind in enumerate(kinds):
        event = decode_kafka_record("t", 0, n, None, None, b"{}", [])
        record = DeadLetter.of(event, rule="r", error="E", message=str(n), time=T0)
        lines.append(b"bad line %d" % n if kind == "bad" else encode(record))
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    snapshot = read_file(path)
    appended = b"".join(json.dumps({"late": t}).encode() + b"\n" for t in tail)
    with path.open("ab") as handle:
        handle.write(appended)
    expected = []
    for letter, kind in zip(snapshot.letters, kinds, strict=True):
        if kind in (None, "bad"):
            expected.append(letter.raw)
            continue
        assert letter.record is not None
        updated = replace(letter.record, replays=1) if kind == "failed" else None
        letter.result = Result(kind, updated=updated)  # type: ignore[arg-type]
        if updated is not None:
            expected.append(encode(updated))
    changed = rewrite(snapshot)
    want = b"".join(line + b"\n" for line in expected) + appended
    assert path.read_bytes() == (want if changed else b"".join(x + b"\n" for x in lines) + appended)
    assert changed == any(k not in (None, "bad") for k in kinds)
