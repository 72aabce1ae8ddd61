"""The gate state machine (DESIGN §7): pure functions over one gate key's JSON state.

A gate waits for a set of events before its rule fires. Events are grouped by the rendered
`key`; each key's state is one JSON object in the state store, changed only through the
functions here, so the same transition runs in a StateStore `update` (which may call it
more than once) and in a property test. Nothing here does I/O or reads a clock: `now` is
seconds since the epoch, handed in by the caller's injected clock.

The state of one key:

- `open`: the generation that is collecting, or None — its `first` event id (which names
  the Workflow), when it `opened`, and per member the distinct events recorded so far
  (`{"id", "event"}`, at most the member's `count`).
- `outbox`: closed generations whose action is not done yet — `fire` (complete, or timed
  out with `onTimeout: fire`) or `dead-letter`. The caller performs the action with a name
  derived from (rule, key, first), so doing it twice is harmless, then `settle`s it. A
  crash between closing and acting leaves the entry in the outbox for the next event or
  the leader's sweep: a gate is never lost and never fired twice.
- `seen`: the event ids of generations closed within the last `window`, with the time
  they stop counting, so a redelivery of a member of a fired gate is a duplicate rather
  than the first event of a new gate. Pruned as they lapse: the state stays bounded by
  the members' counts.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

Value = dict[str, Any]
OnTimeout = Literal["dead-letter", "fire", "drop"]
Recorded = Literal["opened", "added", "duplicate", "surplus"]
Action = Literal["fire", "dead-letter"]
ON_TIMEOUT: Final[tuple[OnTimeout, ...]] = ("dead-letter", "fire", "drop")


@dataclass(frozen=True)
class GateShape:
    """What the state machine needs of a gate: members with their counts, the window (s)."""

    counts: Mapping[str, int]
    window: float
    on_timeout: OnTimeout = "dead-letter"


def empty(key: str) -> Value:
    return {"key": key, "open": None, "outbox": [], "seen": {}}


def record(
    state: Value | None,
    shape: GateShape,
    *,
    key: str,
    member: str,
    event_id: str,
    event: Any,
    now: float,
) -> tuple[Value, Recorded]:
    """Record one event for `member`; a completed generation moves to the outbox."""
    if member not in shape.counts:
        raise ValueError(f"gate has no member {member!r}")
    new = expire(copy.deepcopy(state) if state is not None else empty(key), shape, now)
    if event_id in new["seen"] or any(_holds(entry, event_id) for entry in new["outbox"]):
        return new, "duplicate"
    outcome: Recorded = "added"
    if new["open"] is None:
        new["open"] = {"first": event_id, "opened": now, "members": {m: [] for m in shape.counts}}
        outcome = "opened"
    events = new["open"]["members"].setdefault(member, [])
    if any(e["id"] == event_id for e in events):
        return new, "duplicate"
    if len(events) >= shape.counts[member]:
        return new, "surplus"
    events.append({"id": event_id, "event": event})
    if complete(new["open"], shape):
        _close(new, shape, "fire", now)
    return new, outcome


def expire(state: Value, shape: GateShape, now: float) -> Value:
    """Fit the open generation to the gate's members (see `_reshape`), close it once
    `window` has passed since its first event (per `onTimeout`), and forget seen ids that
    have lapsed. Changes and returns `state`."""
    gate = state["open"]
    if gate is not None and _reshape(state, shape):
        _close(state, shape, "fire", now)
        gate = None
    gate = state["open"]
    if gate is not None and now >= gate["opened"] + shape.window:
        if shape.on_timeout == "drop":
            _remember(state, gate, now + shape.window)
            state["open"] = None
        else:
            _close(state, shape, "fire" if shape.on_timeout == "fire" else "dead-letter", now)
    state["seen"] = {i: until for i, until in state["seen"].items() if until > now}
    return state


def settle(state: Value | None, first: str) -> Value | None:
    """The outbox entry of the generation started by `first` is done: remove it. None when
    nothing is left to keep (the caller deletes the key)."""
    if state is None:
        return None
    new = copy.deepcopy(state)
    new["outbox"] = [e for e in new["outbox"] if e["first"] != first]
    return None if idle(new) else new


def idle(state: Value) -> bool:
    return state["open"] is None and not state["outbox"] and not state["seen"]


def complete(gate: Value, shape: GateShape) -> bool:
    return all(len(gate["members"].get(m, [])) >= n for m, n in shape.counts.items())


def deadline(state: Value, shape: GateShape) -> float | None:
    """When the open generation times out, if there is one."""
    gate = state["open"]
    return None if gate is None else float(gate["opened"]) + shape.window


def missing(gate: Value, shape: GateShape) -> dict[str, int]:
    """Per member, how many events it still lacks (members that have enough are left out)."""
    have = gate["members"]
    return {
        m: n - len(have.get(m, [])) for m, n in shape.counts.items() if len(have.get(m, [])) < n
    }


def progress(state: Value, shape: GateShape, event_id: str, recorded: Recorded) -> str:
    """What an event's record left its gate lacking, from the state `record` returned:
    `complete` when this event completed it, else the members still missing (`hourly
    (3), marker (1)`), prefixed by `duplicate` or `surplus` when the event did not count."""
    gate = state["open"]
    if recorded in ("opened", "added") and (gate is None or not _holds(gate, event_id)):
        return "complete"  # its generation closed: in the outbox to fire
    if gate is None:
        return "duplicate of a closed gate" if recorded == "duplicate" else "complete"
    lacking = ", ".join(f"{m} ({n})" for m, n in missing(gate, shape).items())
    prefix = "" if recorded in ("opened", "added") else f"{recorded}; "
    return f"{prefix}missing {lacking}"


def members_view(gate: Value) -> dict[str, list[Any]]:
    """What templates see as `gate.members`: each member's events, in arrival order."""
    return {m: [e["event"] for e in events] for m, events in gate["members"].items()}


def _reshape(state: Value, shape: GateShape) -> bool:
    """After a reload changed the gate's members, the open generation keeps the events of
    the members still there (up to their counts) and drops the others' — they can no
    longer count and templates cannot name them; a generation left empty is forgotten.
    True when it is now complete (a count lowered, a member removed): it fires."""
    gate = state["open"]
    if gate["members"].keys() == shape.counts.keys() and not any(
        len(events) > shape.counts[m] for m, events in gate["members"].items()
    ):
        return False  # the usual case: nothing changed, and not complete (else it closed)
    kept = {m: gate["members"].get(m, [])[:n] for m, n in shape.counts.items()}
    if not any(kept.values()):
        state["open"] = None
        return False
    gate["members"] = kept
    return complete(gate, shape)


def _close(state: Value, shape: GateShape, action: Action, now: float) -> None:
    gate = state["open"]
    state["outbox"].append({**gate, "action": action, "closed": now})
    _remember(state, gate, now + shape.window)
    state["open"] = None


def _remember(state: Value, gate: Value, until: float) -> None:
    for events in gate["members"].values():
        for e in events:
            state["seen"][e["id"]] = until


def _holds(entry: Value, event_id: str) -> bool:
    return any(e["id"] == event_id for events in entry["members"].values() for e in events)
