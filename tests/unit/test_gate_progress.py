"""A gate member's decision detail: the gate, its key, and what the gate still lacks after
the event (`trigger.rules.gates.progress`, `trigger.core.gatekeeper.gated_note`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from trigger.core.gatekeeper import KEY_SHOWN, gated_note
from trigger.rules.gates import GateShape, Value, progress, record, settle
from trigger.rules.loader import load_rules

SHAPE = GateShape(counts={"hourly": 3, "marker": 1}, window=3600.0)
BATCH = [("hourly", "h0"), ("hourly", "h1"), ("hourly", "h2"), ("marker", "_SUCCESS")]
RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: nightly-load}
spec:
  gate:
    key: "{{ event.key }}"
    window: 1h
    members:
      marker: {source: {oss: {bucket: raw, key: {prefix: sales/}}}}
  workflow: {template: nightly-load, namespace: data}
"""


def step(state: Value | None, member: str, event_id: str) -> tuple[Value, str]:
    """Record one event as GateKeeper.record does; its progress, then the outbox settled."""
    new, recorded = record(
        state, SHAPE, key="k", member=member, event_id=event_id, event={}, now=1000.0
    )
    said = progress(new, SHAPE, event_id, recorded)
    for entry in list(new["outbox"]):
        new = settle(new, entry["first"]) or {"key": "k", "open": None, "outbox": [], "seen": {}}
    return json.loads(json.dumps(new)), said


def test_each_member_event_says_what_is_still_missing_then_complete() -> None:
    """After each event: the members still lacking, with how many; `complete` at the end."""
    state: Value | None = None
    said = []
    for member, event_id in BATCH:
        state, text = step(state, member, event_id)
        said.append(text)
    assert said == [
        "missing hourly (2), marker (1)",
        "missing hourly (1), marker (1)",
        "missing marker (1)",
        "complete",
    ]


def test_events_that_do_not_count_say_so() -> None:
    """A redelivery says `duplicate`, one past a member's count `surplus`, a redelivery
    after the gate fired `duplicate of a closed gate`."""
    state, _ = step(None, "hourly", "h0")
    assert step(state, "hourly", "h0")[1] == "duplicate; missing hourly (2), marker (1)"
    for event_id in ("h1", "h2"):
        state, _ = step(state, "hourly", event_id)
    assert step(state, "hourly", "h3")[1] == "surplus; missing marker (1)"
    state, _ = step(state, "marker", "_SUCCESS")
    assert step(state, "hourly", "h1")[1] == "duplicate of a closed gate"


@settings(max_examples=100, deadline=None)
@given(st.permutations(BATCH))
def test_exactly_the_last_distinct_event_says_complete(order: list[tuple[str, str]]) -> None:
    """In any order, only the event that completes the gate says `complete`, and each
    other's missing counts are what the gate lacked after it."""
    state: Value | None = None
    have = {"hourly": 0, "marker": 0}
    for index, (member, event_id) in enumerate(order):
        state, text = step(state, member, event_id)
        have[member] += 1
        if index == len(order) - 1:
            assert text == "complete"
            continue
        lacking = [f"{m} ({n - have[m]})" for m, n in SHAPE.counts.items() if have[m] < n]
        assert text == "missing " + ", ".join(lacking)


def test_the_note_names_the_gate_and_its_key_and_clips_a_long_key(
    write_rules: Callable[..., Path],
) -> None:
    """`gate RULE key KEY: PROGRESS`, the key cut at KEY_SHOWN characters."""
    [member] = load_rules([write_rules(RULE)]).rules
    plan = member.gate
    assert plan is not None
    assert gated_note(plan, "sales/2026-12-06", "complete") == (
        "gate nightly-load key sales/2026-12-06: complete"
    )
    long = "k" * (KEY_SHOWN + 50)
    assert gated_note(plan, long, "missing marker (1)") == (
        f"gate nightly-load key {'k' * KEY_SHOWN}…: missing marker (1)"
    )
