"""Gates at run time: record a member's event in its gate's state, then act on the outbox.

The pipeline hands a gate member's match here instead of submitting it. `record` renders
the gate key, applies the pure transition (`trigger.rules.gates.record`) inside the state
store's read-modify-write, and returns only once the event is stored — so the source
acknowledges (Kafka commit, push 2xx, poll checkpoint) only after the event is recorded in
its gate. It then performs the key's outbox: a complete (or `onTimeout: fire`) generation
is submitted as the gate rule's Workflow, named from (rule, key, first event) through the
firing event's id, so a crash between recording and creating, a redelivery, or a second
replica gives a duplicate, never a second Workflow; a timed-out one is dead-lettered. Each
entry is settled after its action, so a failed action stays for the next event of the key
(or the leader's sweep) to retry. `sweep` runs on the leader (`trigger.sources.gates`): it
times out gates past their window on the injected clock and performs what is left.

Errors: a temporary state failure is a TemporarySubmitError (the source does not
acknowledge); a gate whose state would pass the store's per-key limit dead-letters the
event that would overflow it (`GateStateTooLarge`) rather than blocking its source.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from trigger.clock import Clock
from trigger.core.metrics import Metrics
from trigger.core.state import StateError, StateStore, StateTooLarge
from trigger.errors import RenderError, TemporarySubmitError, TriggerError
from trigger.events import Event, default_idempotency_key, format_time, parse_time
from trigger.rules.gates import (
    Recorded,
    Value,
    complete,
    deadline,
    expire,
    idle,
    members_view,
    missing,
    progress,
    record,
    settle,
)
from trigger.rules.router import RuleSet
from trigger.rules.rule import GatePlan, Rule
from trigger.submit.deadletter import DeadLetter, DeadLetterSink
from trigger.submit.submitter import Outcome, OutcomeKind, Submitter

log = structlog.get_logger("trigger.gates")
TIMEOUT_ERROR: Final = "GateTimeout"
TOO_LARGE_ERROR: Final = "GateStateTooLarge"
KEY_SHOWN: Final = 100  # characters of a gate key a member's decision detail keeps


@dataclass(frozen=True)
class Recording:
    """What recording a member's event did: the outcomes of any gate it fired (or the
    member's dead letter), and for the member's decision record where the event went and
    what its gate still lacks (`note`; None when the event was not recorded)."""

    outcomes: list[Outcome]
    note: str | None = None


@dataclass
class GateKeeper:
    """Records gate members' events in the state store and fires complete gates."""

    store: StateStore
    submitter: Submitter
    dead_letters: DeadLetterSink
    clock: Clock
    metrics: Metrics | None = None
    # Told of each outcome of the leader's sweep (the pipeline's /status counters): on an
    # event's path the outcomes go back to `Pipeline.handle`, which records them.
    on_outcome: Callable[[Event, Outcome], None] | None = None

    async def record(self, rule: Rule, event: Event) -> Recording:
        """Record `event` for the member `rule`; the outcomes of any gate this fired, or the
        member's dead letter when the event cannot be recorded (its key does not render, its
        gate's state is full). The note is made from the state the store's update returned:
        no second read."""
        plan = rule.gate
        assert plan is not None, "only gate members' rules are recorded"
        try:
            key = plan.key.render({"event": event.doc, "rule": plan.rule.context})
        except TriggerError as exc:
            error = RenderError(str(exc), rule=rule.name, field="gate.key", event_id=event.id)
            letter = await self._member_letter(event, rule.name, type(error).__name__, str(error))
            return Recording([letter])
        event_id = default_idempotency_key(event)
        now = self.clock.now().timestamp()
        outcome: list[Recorded] = []  # the last call's (the store may call `add` again)
        dropped: list[bool] = []

        def add(state: Value | None) -> Value:
            new, recorded = record(
                state,
                plan.shape,
                key=key,
                member=plan.member,
                event_id=event_id,
                event=event.doc,
                now=now,
            )
            outcome[:] = [recorded]
            dropped[:] = [was_dropped(state, new)]
            return new

        try:
            state = await self.store.update(plan.state_key(key), add)
        except StateTooLarge as exc:
            log.error("gate state is full", rule=plan.rule.name, gate_key=key, error=str(exc))
            letter = await self._member_letter(event, rule.name, TOO_LARGE_ERROR, str(exc))
            return Recording([letter])
        except StateError as exc:
            if exc.temporary:
                raise TemporarySubmitError(f"gate state: {exc}") from exc
            raise
        if self.metrics is not None and outcome:
            name = plan.rule.name
            self.metrics.child(self.metrics.gate_events, name, outcome[0]).inc()
            size = len(json.dumps(state, separators=(",", ":"))) if state is not None else 0
            self.metrics.child(self.metrics.gate_state_bytes, name).observe(size)
            if dropped[0]:
                self.metrics.child(self.metrics.gates_closed, name, "timeout-dropped").inc()
        note = None
        if state is not None and outcome:
            note = gated_note(plan, key, progress(state, plan.shape, event_id, outcome[0]))
        performed = await self.perform(plan, key, state)
        return Recording([outcome for _, outcome in performed], note)

    async def perform(
        self, plan: GatePlan, key: str, state: Value | None
    ) -> list[tuple[Event, Outcome]]:
        """Do what the key's outbox holds, settling each entry once its action is done; each
        action's firing event and outcome (a timeout's dead letter is one too)."""
        outcomes: list[tuple[Event, Outcome]] = []
        for entry in list(state["outbox"]) if state else []:
            firing = firing_event(plan, key, entry)
            if entry["action"] == "fire":
                outcomes.append((firing, await self.submitter.submit(plan.rule, firing)))
                self._closed(plan, "timeout-fired" if firing.type == "gate.timeout" else "fired")
            else:
                lacking = ", ".join(f"{m} ({n})" for m, n in missing(entry, plan.shape).items())
                message = (
                    f"gate {key!r} was not complete {plan.shape.window:g}s after its first "
                    f"event; missing: {lacking}"
                )
                await self._dead_letter(firing, plan.rule.name, TIMEOUT_ERROR, message)
                self._closed(plan, "timeout-dead-letter")
                lettered = Outcome(
                    OutcomeKind.DEAD_LETTERED, plan.rule.name, None,
                    reason=TIMEOUT_ERROR, message=message,
                )  # fmt: skip
                outcomes.append((firing, lettered))
            await self.store.update(plan.state_key(key), _settler(entry["first"]))
        return outcomes

    def _closed(self, plan: GatePlan, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.child(self.metrics.gates_closed, plan.rule.name, outcome).inc()

    async def sweep(self, rules: RuleSet) -> int:
        """Time out every gate past its window and perform every outbox (the leader's job:
        a gate whose key sees no further event still ends). How many keys it looked at."""
        plans = {r.gate.rule.name: r.gate for r in rules.rules if r.gate is not None}
        now = self.clock.now().timestamp()
        looked = 0
        for name, plan in plans.items():
            still_open = 0
            for state_key in await self.store.keys(f"gate/{name}/"):
                looked += 1
                dropped: list[bool] = []
                state = await self.store.update(state_key, _expirer(plan, now, dropped))
                if dropped and dropped[0]:
                    self._closed(plan, "timeout-dropped")
                if state is not None:
                    still_open += state["open"] is not None
                    for firing, outcome in await self.perform(plan, state["key"], state):
                        if self.on_outcome is not None:
                            self.on_outcome(firing, outcome)
            if self.metrics is not None:
                self.metrics.child(self.metrics.gates_open, name).set(still_open)
        return looked

    async def open_gates(
        self, rules: RuleSet, *, limit: int, within: float
    ) -> list[dict[str, Any]]:
        """Per gate rule, its open gates as the status page and `/api/gates` show them
        (`gate_view`): at most `limit` per rule, read from the store within `within`
        seconds in all. `keys` is how many keys the rule has in the store (open or
        recently closed gates), `unread` how many of them were not read (past the limit,
        or the time ran out: `error` says so)."""
        plans = {r.gate.rule.name: r.gate for r in rules.rules if r.gate is not None}
        found: list[dict[str, Any]] = [
            {"rule": name, "members": dict(plan.shape.counts), "window": plan.shape.window,
             "gates": [], "keys": 0, "unread": 0, "error": None}
            for name, plan in sorted(plans.items())
        ]  # fmt: skip
        done: set[str] = set()
        try:
            async with asyncio.timeout(within):
                for entry in found:
                    await self._read_open(plans[entry["rule"]], entry, limit)
                    done.add(entry["rule"])
        except TimeoutError:
            for entry in found:
                if entry["rule"] not in done:
                    entry["error"] = f"the state store did not answer within {within:g}s"
        return found

    async def _read_open(self, plan: GatePlan, entry: dict[str, Any], limit: int) -> None:
        """Fill `entry` (see `open_gates`) with the open gates of one rule."""
        try:
            keys = await self.store.keys(f"gate/{plan.rule.name}/")
        except StateError as exc:
            entry["error"] = f"cannot list the gates: {exc}"
            return
        entry["keys"] = entry["unread"] = len(keys)
        for state_key in keys:
            if len(entry["gates"]) >= limit:
                break
            try:
                state = await self.store.get(state_key)
            except StateError as exc:
                entry["error"] = f"cannot read a gate: {exc}"
                return
            entry["unread"] -= 1
            if state is not None and state["open"] is not None:
                entry["gates"].append(gate_view(plan, state))
        entry["gates"].sort(key=lambda gate: (gate["opened"], gate["key"]))

    async def _member_letter(self, event: Event, rule: str, error: str, message: str) -> Outcome:
        """Dead-letter an event its member could not record; the outcome says so."""
        await self._dead_letter(event, rule, error, message)
        return Outcome(OutcomeKind.DEAD_LETTERED, rule, None, reason=error, message=message)

    async def _dead_letter(self, event: Event, rule: str, error: str, message: str) -> None:
        record_ = DeadLetter.of(
            event, rule=rule, error=error, message=message, time=self.clock.now()
        )
        await self.submitter.write_dead_letters([record_])


def _expirer(
    plan: GatePlan, now: float, dropped: list[bool]
) -> Callable[[Value | None], Value | None]:
    """The sweep's update; `dropped` says (for the last call) whether it dropped a gate."""

    def fn(state: Value | None) -> Value | None:
        if state is None:
            return None
        before = copy.deepcopy(state)
        new = expire(state, plan.shape, now)
        dropped[:] = [was_dropped(before, new)]
        return None if idle(new) else new

    return fn


def was_dropped(before: Value | None, after: Value) -> bool:
    """Whether a transition ended `before`'s open gate without acting on it (a timeout
    under `onTimeout: drop`, or a reload that left it empty)."""
    gate = before["open"] if before is not None else None
    if gate is None:
        return False
    first = gate["first"]
    still = after["open"] is not None and after["open"]["first"] == first
    return not still and not any(entry["first"] == first for entry in after["outbox"])


def gate_view(plan: GatePlan, state: Value) -> dict[str, Any]:
    """One open gate: its key, first event (id, and when it was recorded), deadline (the
    window's end, by the gate rule as loaded now), members present and required, missing."""
    gate = state["open"]
    ends = deadline(state, plan.shape)
    assert ends is not None, "only open gates are shown"
    return {
        "key": state["key"],
        "firstEvent": gate["first"],
        "opened": format_time(datetime.fromtimestamp(gate["opened"], UTC)),
        "deadline": format_time(datetime.fromtimestamp(ends, UTC)),
        "members": {
            m: {"have": len(gate["members"].get(m, [])), "need": n}
            for m, n in plan.shape.counts.items()
        },
        "missing": missing(gate, plan.shape),
    }


def gated_note(plan: GatePlan, key: str, progress: str) -> str:
    """A member's decision detail: `gate RULE key KEY: PROGRESS` (a long key clipped, so
    the progress stays within the record's text limit)."""
    shown = key if len(key) <= KEY_SHOWN else key[:KEY_SHOWN] + "…"
    return f"gate {plan.rule.name} key {shown}: {progress}"


def _settler(first: str) -> Callable[[Value | None], Value | None]:
    return lambda state: settle(state, first)


def firing_event(plan: GatePlan, key: str, entry: Value) -> Event:
    """The event a closed generation fires with. Its id — from the key and the first
    event's id — names the Workflow; templates read `gate` (key, members, first, timedOut)."""
    members = members_view(entry)
    first: dict[str, Any] = next(
        (e["event"] for es in entry["members"].values() for e in es if e["id"] == entry["first"]),
        {},
    )
    timed_out = not complete(entry, plan.shape)
    gate: dict[str, Any] = {"key": key, "members": members, "first": first, "timedOut": timed_out}
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Event(
        id=f"gate:{digest}:{entry['first']}",
        source=plan.rule.kind,
        type="gate.timeout" if timed_out else "gate.complete",
        subject=key,
        time=parse_time(first.get("time", entry["opened"])),
        data=None,
        fields={"gate": gate},
    )


@dataclass
class GateReplay:
    """Gates over a set of events in memory, for `trigger match`: each event's own time is
    the clock, nothing is stored. `add` gives the firing events and notes of what closed;
    `progress` says, per open gate, which members are still missing."""

    states: dict[tuple[str, str], tuple[GatePlan, Value]] = field(default_factory=dict)

    def add(self, rule: Rule, event: Event) -> tuple[list[Event], list[str]]:
        plan = rule.gate
        assert plan is not None, "only gate members' rules are replayed"
        key = plan.key.render({"event": event.doc, "rule": plan.rule.context})
        found = self.states.get((plan.rule.name, key))
        new, recorded = record(
            found[1] if found else None,
            plan.shape,
            key=key,
            member=plan.member,
            event_id=default_idempotency_key(event),
            event=event.doc,
            now=event.time.timestamp(),
        )
        notes = [f"gate {plan.rule.name} key {key!r}: {plan.member} {recorded}"]
        firings = []
        for entry in new["outbox"]:
            firing = firing_event(plan, key, entry)
            if entry["action"] == "fire":
                firings.append(firing)
                notes.append(f"gate {plan.rule.name} key {key!r}: fires ({firing.type})")
            else:
                notes.append(f"gate {plan.rule.name} key {key!r}: timed out (dead letter)")
        new["outbox"] = []
        self.states[(plan.rule.name, key)] = (plan, new)
        return firings, notes

    def progress(self) -> list[str]:
        lines = []
        for (name, key), (plan, state) in sorted(self.states.items(), key=lambda kv: kv[0]):
            gate = state["open"]
            if gate is None:
                continue
            lacking = ", ".join(
                f"{member} ({n} of {plan.shape.counts[member]})"
                for member, n in missing(gate, plan.shape).items()
            )
            ends = format_time(datetime.fromtimestamp(gate["opened"] + plan.shape.window, UTC))
            lines.append(f"gate {name} key {key!r}: waiting for {lacking}; window ends {ends}")
        return lines
