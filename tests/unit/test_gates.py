"""The gate state machine: any order, duplicates and redeliveries fire once with every member."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trigger.rules.gates import (
    GateShape,
    Value,
    deadline,
    expire,
    members_view,
    missing,
    record,
    settle,
)

HOURLY = GateShape(counts={"hourly": 24, "marker": 1}, window=3600.0)
BATCH = [("hourly", f"h{i:02d}") for i in range(24)] + [("marker", "_SUCCESS")]


def feed(
    state: Value | None, shape: GateShape, items: list[tuple[str, str]], *, key: str, now: float
) -> tuple[Value | None, list[Value]]:
    """Record `items` in order, acting on (and settling) the outbox after each, as the
    pipeline does; the JSON round trip is what the state store does between events."""
    fired: list[Value] = []
    for member, event_id in items:
        new, _ = record(
            state, shape, key=key, member=member, event_id=event_id, event={"id": event_id}, now=now
        )
        state = json.loads(json.dumps(new))
        for entry in list(state["outbox"]) if state else []:
            fired.append(entry)
            state = settle(state, entry["first"])
    return state, fired


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_order_with_duplicates_fires_once_with_every_member(data: st.DataObject) -> None:
    """24 files and a marker in any order, with duplicates and redeliveries: one firing."""
    extra = data.draw(st.lists(st.sampled_from(BATCH), max_size=30))
    items = data.draw(st.permutations(BATCH + extra))
    _, fired = feed(None, HOURLY, items, key="2026-12-06", now=1000.0)
    assert len(fired) == 1
    assert fired[0]["action"] == "fire"
    view = members_view(fired[0])
    assert sorted(e["id"] for e in view["hourly"]) == [f"h{i:02d}" for i in range(24)]
    assert [e["id"] for e in view["marker"]] == ["_SUCCESS"]
    assert fired[0]["first"] == items[0][1]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_redelivery_after_firing_is_a_duplicate(data: st.DataObject) -> None:
    """A member redelivered after its gate fired (within the window) opens no new gate."""
    state, fired = feed(None, HOURLY, BATCH, key="k", now=1000.0)
    again = data.draw(st.lists(st.sampled_from(BATCH), min_size=1))
    state, more = feed(state, HOURLY, again, key="k", now=1500.0)
    assert len(fired) == 1 and more == []
    assert state is not None and state["open"] is None


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_two_keys_interleaved_never_mix(data: st.DataObject) -> None:
    """Events of two keys interleaved: each key fires once, with only its own events."""
    tagged = [("a", m, f"a-{i}") for m, i in BATCH] + [("b", m, f"b-{i}") for m, i in BATCH]
    order = data.draw(st.permutations(tagged))
    states: dict[str, Value | None] = {"a": None, "b": None}
    fired: dict[str, list[Value]] = {"a": [], "b": []}
    for key, member, event_id in order:
        states[key], got = feed(states[key], HOURLY, [(member, event_id)], key=key, now=0.0)
        fired[key] += got
    for key in ("a", "b"):
        assert len(fired[key]) == 1
        ids = [e["id"] for events in members_view(fired[key][0]).values() for e in events]
        assert len(ids) == 25 and all(i.startswith(f"{key}-") for i in ids)


@pytest.mark.parametrize(
    ("on_timeout", "action"), [("dead-letter", "dead-letter"), ("fire", "fire"), ("drop", None)]
)
def test_window_expiry_follows_on_timeout(on_timeout: Any, action: str | None) -> None:
    """An incomplete gate past its window dead-letters, fires partial, or is dropped."""
    shape = GateShape(counts={"hourly": 24, "marker": 1}, window=60.0, on_timeout=on_timeout)
    state, fired = feed(None, shape, BATCH[:3], key="k", now=100.0)
    assert state is not None and fired == [] and deadline(state, shape) == 160.0
    assert missing(state["open"], shape) == {"hourly": 21, "marker": 1}
    early = expire(json.loads(json.dumps(state)), shape, 159.9)
    assert early["open"] is not None and early["outbox"] == []
    late = expire(state, shape, 160.0)
    assert late["open"] is None
    assert [e["action"] for e in late["outbox"]] == ([action] if action else [])
    if action:
        assert [e["id"] for e in late["outbox"][0]["members"]["hourly"]] == ["h00", "h01", "h02"]


def test_late_event_closes_the_old_generation_and_opens_a_new_one() -> None:
    """An event after the window first times the old gate out, then starts its own gate."""
    shape = GateShape(counts={"hourly": 2, "marker": 1}, window=60.0)
    state, _ = feed(None, shape, [("hourly", "h1")], key="k", now=0.0)
    new, outcome = record(state, shape, key="k", member="hourly", event_id="h2", event={}, now=61.0)
    assert outcome == "opened" and new["open"]["first"] == "h2"
    assert [(e["first"], e["action"]) for e in new["outbox"]] == [("h1", "dead-letter")]


def test_seen_ids_lapse_and_the_state_empties() -> None:
    """After firing and one more window, the key holds nothing: state stays bounded."""
    shape = GateShape(counts={"a": 1}, window=10.0)
    state, fired = feed(None, shape, [("a", "x")], key="k", now=0.0)
    assert len(fired) == 1 and state is not None and state["seen"] == {"x": 10.0}
    assert settle(expire(state, shape, 10.0), "none") is None


def test_surplus_events_are_not_recorded() -> None:
    """Events beyond a member's count are acknowledged but not stored (bounded state)."""
    shape = GateShape(counts={"a": 1, "b": 1}, window=10.0)
    state, _ = feed(None, shape, [("a", "x")], key="k", now=0.0)
    new, outcome = record(state, shape, key="k", member="a", event_id="y", event={}, now=1.0)
    assert outcome == "surplus" and [e["id"] for e in new["open"]["members"]["a"]] == ["x"]


def test_unknown_member_is_refused() -> None:
    """Recording for a member the gate does not have is a programming error, not a state."""
    with pytest.raises(ValueError, match="no member"):
        record(None, HOURLY, key="k", member="nope", event_id="x", event={}, now=0.0)


def test_reload_keeps_remaining_members_and_drops_removed_ones() -> None:
    """A reload that renames `marker` to `done`: the files stay, the old marker's event is
    dropped (it can no longer count), and the gate fires once `done` arrives."""
    state, _ = feed(None, HOURLY, [*BATCH[:3], ("marker", "_SUCCESS")], key="k", now=0.0)
    reloaded = GateShape(counts={"hourly": 3, "done": 1}, window=3600.0)
    new, outcome = record(state, reloaded, key="k", member="done", event_id="ok", event={}, now=1.0)
    assert outcome == "added"
    [entry] = new["outbox"]
    assert members_view(entry) == {"hourly": [{"id": f"h{i:02d}"} for i in range(3)], "done": [{}]}  # fmt: skip


def test_reload_that_completes_a_gate_fires_it_at_the_next_look() -> None:
    """A count lowered below what an open gate holds: the next transition (an event of the
    key, or the leader's sweep: `expire`) fires it with the events that fit the count."""
    state, _ = feed(None, HOURLY, [*BATCH[:5], ("marker", "_SUCCESS")], key="k", now=0.0)
    assert state is not None
    lowered = GateShape(counts={"hourly": 4, "marker": 1}, window=3600.0)
    swept = expire(json.loads(json.dumps(state)), lowered, now=1.0)
    [entry] = swept["outbox"]
    assert entry["action"] == "fire" and len(entry["members"]["hourly"]) == 4


def test_reload_removing_every_member_with_events_forgets_the_gate() -> None:
    """An open gate holding only events of members the reload removed is forgotten."""
    state, _ = feed(None, HOURLY, [("marker", "_SUCCESS")], key="k", now=0.0)
    assert state is not None
    other = GateShape(counts={"hourly": 24, "done": 1}, window=3600.0)
    assert expire(json.loads(json.dumps(state)), other, now=1.0)["open"] is None
