"""Decision records: for every event, what happened with each rule (DESIGN §8).

The pipeline appends one `Decision` per event it handles to a bounded ring (`Decisions`):
the event's id, time and source, how many rules were not for this source/bucket/topic
(one grouped count), and per candidate rule its outcome — filtered, rate-limited,
retrying (attempt, error), failed (not acknowledged: the sender redelivers), created as
NAME, duplicate of NAME, dead-lettered (reason). A rule's outcome moves on while its
event is in flight (rate-limited → retrying → created); the record is the same object.

The hot path only builds that small record. Why a filtered rule did not match — the
explain tree: which check, on which field, with which value — is computed when someone
asks (`explain`), against the event kept in the record. The event is kept as it came
when it is small (its raw payload within `max_event_bytes`, or a source whose events
are small by construction: cron, OSS); a larger one is kept clipped (strings and lists
cut, marked), so a record's memory stays bounded whatever the senders send. An
explanation of a clipped event says so.

Gates (waiting for the other members of a group) add their outcome here, as one more
`Outcome` value set by whoever holds the event; nothing in this module fakes one.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from trigger.events import Event, format_time
from trigger.rules.router import Routed, RuleSet

CLIPPED: Final = "…[clipped]"
# Sources whose events are small by construction: a tick (a rule name and a time), an OSS
# notification (one object's fixed set of fields). Kafka and webhook events are judged by
# their raw payload; a finished Workflow's (labels, parameters, outputs) is always clipped.
SMALL_SOURCES: Final = frozenset({"cron", "oss"})
MAX_TEXT: Final = 200  # characters kept of any text in a record (error messages, values)


class Outcome(enum.StrEnum):
    """What happened with one rule for one event."""

    FILTERED = "filtered"  # a candidate whose filter did not match (or failed: expr error)
    SUBMITTING = "submitting"  # matched; its Workflow is being created
    RATE_LIMITED = "rate-limited"  # matched; waiting for the rule's rate limit
    RETRYING = "retrying"  # a create failed temporarily; the next attempt is due
    FAILED = "failed"  # gave up for now without acknowledging: the sender redelivers
    CREATED = "created"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead-lettered"
    GATED = "gated"  # a gate member's event, recorded in its gate (which fires once complete)


# What `?outcome=` and `--outcome` accept besides the outcomes: "other-source", the rules
# the event was not for, counted per record.
OTHER_SOURCE: Final = "other-source"


class Decision:
    """One event's record. `rules` maps a candidate rule to [outcome, detail]; `detail` is
    the Workflow's name (created, duplicate), `attempt N: error` (retrying), the reason
    (dead-lettered, failed), the filter error, or None."""

    __slots__ = ("at", "cluster", "event", "others", "rules", "seq")

    def __init__(
        self, seq: int, at: datetime, event: Event, others: int, cluster: str | None
    ) -> None:
        self.seq = seq
        self.at = at
        self.event = event
        self.others = others
        self.cluster = cluster
        self.rules: dict[str, list[Any]] = {}

    @property
    def id(self) -> str:
        return self.event.id

    def note(self, rule: str, outcome: Outcome, detail: str | None = None) -> None:
        self.rules[rule] = [outcome, _clip_text(detail)]

    def outcomes(self) -> set[str]:
        found = {str(entry[0]) for entry in self.rules.values()}
        if self.others:
            found.add(OTHER_SOURCE)
        return found

    def summary(self) -> dict[str, Any]:
        """The record as the API lists it."""
        event = self.event
        return {
            "seq": self.seq,
            "id": event.id,
            "at": format_time(self.at),
            "time": format_time(event.time),
            "source": event.source,
            "type": event.type,
            "subject": _clip_text(event.subject),
            "otherRules": self.others,
            "rules": [
                {"rule": name, "outcome": str(outcome), "detail": detail}
                for name, (outcome, detail) in self.rules.items()
            ],
        }


class Decisions:
    """The ring of the last `size` decisions; appending past the end drops the oldest."""

    def __init__(self, size: int, *, max_event_bytes: int = 4096) -> None:
        self.size = size
        self.max_event_bytes = max_event_bytes
        self._ring: deque[Decision] = deque(maxlen=size)
        self._seq = itertools.count(1)
        self.appended = 0
        # Records whose rules are still in flight, by event id: what the submitter's hooks
        # (rate limit, retries) update.
        self.live: dict[str, Decision] = {}

    def __len__(self) -> int:
        return len(self._ring)

    @property
    def dropped(self) -> int:
        return self.appended - len(self._ring)

    def record(
        self, event: Event, at: datetime, others: int, cluster: str | None = None
    ) -> Decision:
        """A new record for `event`, appended (the hot path: no copy unless it is large)."""
        decision = Decision(next(self._seq), at, self._kept(event), others, cluster)
        if self.size:
            self._ring.append(decision)
            self.appended += 1
        return decision

    def routed(
        self, event: Event, at: datetime, rules: int, routed: Routed, cluster: str | None
    ) -> Decision:
        """The record of an event just routed against `rules` rules: its candidates
        filtered or submitting, the rest counted as not for it."""
        decision = self.record(event, at, rules - routed.candidates, cluster)
        for rule in routed.filtered:
            decision.rules[rule.name] = [Outcome.FILTERED, None]
        for match in routed.matches:
            decision.rules[match.rule.name] = [Outcome.SUBMITTING, None]
        return decision

    def update(self, event_id: str, rule: str, outcome: Outcome, detail: str | None) -> None:
        """Move a rule of an in-flight record on (from the submitter's hooks)."""
        decision = self.live.get(event_id)
        if decision is not None and rule in decision.rules:
            decision.note(rule, outcome, detail)

    def find(self, event_id: str) -> Decision | None:
        """The newest record of `event_id` (a redelivered event has several)."""
        for decision in reversed(self._ring):
            if decision.event.id == event_id:
                return decision
        return None

    def select(
        self,
        *,
        rule: str | None = None,
        outcome: str | None = None,
        source: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[Decision]:
        """The newest `limit` records that fit every filter given, oldest first."""
        found: list[Decision] = []
        for decision in reversed(self._ring):
            if decision.seq <= after or len(found) >= limit:
                break
            if _fits(decision, rule, outcome, source):
                found.append(decision)
        found.reverse()
        return found

    def _kept(self, event: Event) -> Event:
        raw = event.raw
        if event.source in SMALL_SOURCES or (raw is not None and len(raw) <= self.max_event_bytes):
            return event
        return clipped(event, self.max_event_bytes)


def _fits(decision: Decision, rule: str | None, outcome: str | None, source: str | None) -> bool:
    if source is not None and decision.event.source != source:
        return False
    if rule is not None:
        entry = decision.rules.get(rule)
        if entry is None:
            return outcome == OTHER_SOURCE and bool(decision.others)
        return outcome is None or str(entry[0]) == outcome
    return outcome is None or outcome in decision.outcomes()


def clipped(event: Event, budget: int) -> Event:
    """`event` with its data and fields cut down to about `budget` characters each view
    (each text to MAX_TEXT, each list and object to its first items), its raw payload
    dropped. The views already decoded (a Kafka value as JSON) are kept, clipped alike."""
    views: dict[str, Event] = {}
    for fmt, seen in event.views.items():
        views[fmt] = _clipped_view(seen, budget, views)
    return _clipped_view(event, budget, views)


def _clipped_view(event: Event, budget: int, views: dict[str, Event]) -> Event:
    fields = _clip(dict(event.fields), [budget // 2], 0)
    return replace(
        event,
        data=_clip(event.data, [budget // 2], 0),
        fields=fields if isinstance(fields, dict) else {},
        raw=None,
        views=views,
    )


MAX_DEPTH: Final = 8


def _clip(value: Any, left: list[int], depth: int) -> Any:
    """A bounded copy of `value`; `left` is the character budget, shared and spent."""
    if left[0] <= 0 or depth > MAX_DEPTH:
        return CLIPPED
    if isinstance(value, str | bytes):
        text = value if isinstance(value, str) else value.decode("utf-8", "replace")
        kept = text[: min(MAX_TEXT, max(left[0], 16))]
        left[0] -= len(kept)
        return kept if len(kept) == len(text) else kept + CLIPPED
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if left[0] <= 0:
                out[CLIPPED] = True
                break
            left[0] -= len(str(key)) + 2
            out[str(key)[:MAX_TEXT]] = _clip(item, left, depth + 1)
        return out
    if isinstance(value, list | tuple):
        items: list[Any] = []
        for item in value:
            if left[0] <= 0:
                items.append(CLIPPED)
                break
            items.append(_clip(item, left, depth + 1))
        return items
    left[0] -= 8
    return value


def _clip_text(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_TEXT:
        return text
    return text[:MAX_TEXT] + CLIPPED


@dataclass(frozen=True)
class Step:
    """One check of a rule against an event, in the order the router makes them."""

    check: str  # source, decode, filter.pattern, filter.expr
    ok: bool
    detail: str = ""
    misses: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"check": self.check, "ok": self.ok, "detail": self.detail}
        if self.misses:
            found["misses"] = list(self.misses)
        return found


def explain(rules: RuleSet, decision: Decision) -> dict[str, Any]:
    """The record with, per filtered rule, its explain tree (computed now, against the
    rules loaded now), and the rules the event was not for, grouped by why."""
    event = decision.event
    found = decision.summary()
    found["clipped"] = (
        event.raw is None
        and decision.event.source not in SMALL_SOURCES
        and (_has_clip(event.data) or _has_clip(event.fields))
    )
    found["event"] = event.doc
    cluster = decision.cluster or "default"
    for entry in found["rules"]:
        rule = rules.by_name.get(entry["rule"])
        if entry["outcome"] == Outcome.FILTERED and rule is not None:
            entry["steps"] = [s.as_dict() for s in steps(rules, rule, event, cluster)]
        elif entry["outcome"] == Outcome.FILTERED:
            entry["steps"] = [Step("rule", False, "no longer loaded").as_dict()]
    found["otherRuleReasons"] = _grouped(rules, decision, cluster)
    return found


def steps(rules: RuleSet, rule: Any, event: Event, cluster: str) -> list[Step]:
    """The router's checks of `rule` against `event`, each passed or failed, up to the
    first that fails."""
    done: list[Step] = []
    for check, ok, detail, misses in rules.explain_steps(rule, event, cluster=cluster):
        done.append(Step(check, ok, _clip_text(detail) or "", tuple(map(_text, misses))))
        if not ok:
            break
    return done


def _text(line: str) -> str:
    return _clip_text(line) or ""


def _grouped(rules: RuleSet, decision: Decision, cluster: str) -> list[dict[str, Any]]:
    """The rules the event was not for (neither matched nor filtered), grouped by reason."""
    if not decision.others:
        return []
    by_reason: dict[str, list[str]] = {}
    for rule in rules.rules:
        if rule.name in decision.rules:
            continue
        reason = rules.explain(rule, decision.event, cluster=cluster)
        if reason is None:
            continue  # loaded since: it would match now
        by_reason.setdefault(_group(reason), []).append(rule.name)
    return [{"reason": r, "rules": names} for r, names in by_reason.items()]


def _group(reason: str) -> str:
    """A grouping key: the reason with the rule's own expectation left out."""
    for marker in (" is not ", " does not match "):
        if marker in reason:
            return f"{reason.split(marker, 1)[0]}{marker}the rule's"
    return reason


def _has_clip(value: Any) -> bool:
    if isinstance(value, str):
        return value.endswith(CLIPPED)
    if isinstance(value, Mapping):
        return CLIPPED in value or any(_has_clip(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_clip(v) for v in value)
    return False
