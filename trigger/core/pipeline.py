"""The event pipeline shared by every source: route, then submit every match.

A source hands in a decoded Event and awaits `handle`; when it returns, every matched rule
has its Workflow (created or duplicate) or a dead letter, and the source may acknowledge.
When it raises TemporarySubmitError, the source must not acknowledge (a push answers 503,
a consumer retries). Per-event logs are bound to the event id and rule; events that match
nothing are only counted (logging them at INFO is how Argo Events reached 400 GB/day).

Every event handled leaves a decision record (trigger.core.decisions) in `decisions`: what
happened with each rule, logged at DEBUG only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from trigger.clock import Clock
from trigger.core.decisions import Decision, Decisions
from trigger.core.decisions import Outcome as Decided
from trigger.core.gatekeeper import GateKeeper
from trigger.core.metrics import Metrics, source_label
from trigger.errors import DecodeError, RenderError, TemporarySubmitError
from trigger.events import Event
from trigger.rules.render import render
from trigger.rules.router import Routed, RuleSet
from trigger.rules.rule import Rule
from trigger.submit.deadletter import DeadLetter, DeadLetterSink
from trigger.submit.submitter import NoHooks, OnExhausted, Outcome, OutcomeKind, Submitter

log = structlog.get_logger("trigger.pipeline")


@dataclass
class RuleStatus:
    """What /status shows per rule."""

    matched: int = 0
    created: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    last_event: str | None = None
    last_event_time: str | None = None
    last_workflow: str | None = None
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Pipeline:
    """Routes events through the active rule set into the submitter."""

    rules: RuleSet
    submitter: Submitter
    dead_letters: DeadLetterSink
    metrics: Metrics
    clock: Clock
    status: dict[str, RuleStatus] = field(default_factory=dict)
    decisions: Decisions = field(default_factory=lambda: Decisions(DEFAULT_DECISIONS))
    # Records gate members' events; set once the state store is open (see assembly).
    gates: GateKeeper | None = None

    def swap(self, rules: RuleSet) -> None:
        """Atomically replace the rule set; in-flight events finish with the old one."""
        self.rules = rules
        self.metrics.rules_loaded.set(len(rules))

    async def handle(
        self, event: Event, *, cluster: str = "default", on_exhausted: OnExhausted = "raise"
    ) -> list[Outcome]:
        """Submit every rule `event` matches; see the module docstring for the contract."""
        rules = self.rules  # one rule set for the whole event, even across a reload
        self.metrics.child(self.metrics.events_received, source_label(event)).inc()
        routed = rules.route(event, cluster=cluster)
        decision = self._decision(rules, event, routed, cluster)
        poison = []
        for failure in routed.failures:
            if failure.kind == "expression":
                decision.note(failure.rule.name, Decided.FILTERED, failure.message)
                self.metrics.child(self.metrics.expression_errors, failure.rule.name).inc()
                log.warning(
                    "filter.expr failed",
                    event_id=event.id,
                    source=event.source,
                    rule=failure.rule.name,
                    error=failure.message,
                )
            else:
                poison.append(failure)
        outcomes: list[Outcome] = []
        if routed.matches:
            for match in routed.matches:
                self._matched(match.rule, event)
            pairs = [(m.rule, m.event) for m in routed.matches if m.rule.gate is None]
            if pairs:
                outcomes = await self._submit(event, decision, pairs, on_exhausted)
            # Recorded before `handle` returns: the source acknowledges only after.
            for match in routed.matches:
                if match.rule.gate is not None:
                    outcomes += await self._gate(match.rule, match.event, decision)
        # Poison letters last: while a match fails temporarily the event is redelivered,
        # and a letter written before would be written again by every redelivery.
        for failure in poison:
            await self._poison(event, failure.rule.name, failure.message, decision)
        _log_decision(decision)
        return outcomes

    def _decision(self, rules: RuleSet, event: Event, routed: Routed, cluster: str) -> Decision:
        kafka_cluster = cluster if event.source == "kafka" else None
        return self.decisions.routed(event, self.clock.now(), len(rules), routed, kafka_cluster)

    async def _submit(
        self,
        event: Event,
        decision: Decision,
        pairs: Sequence[tuple[Rule, Event]],
        on_exhausted: OnExhausted,
    ) -> list[Outcome]:
        """submit_many, with the record live (the hooks move its rules on) meanwhile."""
        live = self.decisions.live
        live[event.id] = decision
        try:
            outcomes = await self.submitter.submit_many(pairs, on_exhausted=on_exhausted)
        except Exception as exc:
            for rule, _ in pairs:
                if decision.rules[rule.name][0] in _UNFINISHED:
                    decision.note(rule.name, Decided.FAILED, f"{type(exc).__name__}: {exc}")
            _log_decision(decision)
            raise
        finally:
            if live.get(event.id) is decision:
                del live[event.id]
        for outcome in outcomes:
            self._record(event, outcome, decision)
        return outcomes

    @property
    def batches(self) -> bool:
        """Whether `handle_batch` can be used (the sink creates many in one call)."""
        return self.submitter.batches

    async def handle_batch(
        self, events: Sequence[Event], *, cluster: str = "default"
    ) -> list[Batched]:
        """Handle many events with one sink call for all their Workflows (see Batched).

        The batch takes only the plain case: every match renders and no matched rule is
        rate-limited. An event with a routing failure (poison, a failing filter), a render
        error or a rate-limited match is left untouched, for the caller to `handle` — so
        dead letters and retries always happen on the one-event path."""
        rules = self.rules  # one rule set for the whole batch, even across a reload
        results: list[Batched] = []
        plans: list[tuple[Event, list[tuple[Rule, Event, dict[str, Any]]], Decision]] = []
        for event in events:
            planned = _plan(rules, event, cluster)
            if planned is None:
                results.append(SLOW)
                continue
            routed, items = planned
            results.append(DONE)  # until a failed item says otherwise
            plans.append((event, items, self._decision(rules, event, routed, cluster)))
            self.metrics.child(self.metrics.events_received, source_label(event)).inc()
            for rule, _, _ in items:
                self._matched(rule, event)
        if not plans:
            return results
        outcomes = iter(
            await self.submitter.create_batch([item for _, items, _ in plans for item in items])
        )
        plan_of = iter(plans)
        for index, result in enumerate(results):
            if result is SLOW:
                continue
            event, items, decision = next(plan_of)
            failed: list[tuple[Rule, Event]] = []
            for (rule, seen, _), outcome in zip(items, outcomes, strict=False):
                if isinstance(outcome, Outcome):
                    self._record(event, outcome, decision)
                else:
                    failed.append((rule, seen))
            if failed:
                results[index] = Batched(failed=tuple(failed), decision=decision)
            else:
                _log_decision(decision)
        return results

    async def submit_matches(
        self,
        event: Event,
        pairs: Sequence[tuple[Rule, Event]],
        *,
        on_exhausted: OnExhausted = "raise",
        decision: Decision | None = None,
    ) -> list[Outcome]:
        """Submit some of an event's matches (what a batch left over) the one-event way;
        `decision` is the batch's record of the event (`Batched.decision`)."""
        if decision is None:  # not from handle_batch: a record of its own
            decision = self.decisions.record(event, self.clock.now(), 0)
            for rule, _ in pairs:
                decision.note(rule.name, Decided.SUBMITTING)
        outcomes = await self._submit(event, decision, pairs, on_exhausted)
        _log_decision(decision)
        return outcomes

    async def _gate(self, rule: Rule, event: Event, decision: Decision) -> list[Outcome]:
        """Record a gate member's event in its gate (stored before this returns); the
        outcomes — the gate's Workflow when this completed it — are counted and noted."""
        assert rule.gate is not None
        try:
            if self.gates is None:
                raise TemporarySubmitError("gates are not ready: the state store is not open yet")
            recording = await self.gates.record(rule, event)
        except Exception as exc:
            decision.note(rule.name, Decided.FAILED, f"{type(exc).__name__}: {exc}")
            raise
        outcomes = recording.outcomes
        if recording.note is not None:
            decision.note(rule.name, Decided.GATED, recording.note)
        for outcome in outcomes:
            self._record(event, outcome, decision)
        return outcomes

    def _status(self, rule: str) -> RuleStatus:
        """The rule's status, made on its first use (not a spare one per event)."""
        status = self.status.get(rule)
        if status is None:
            status = self.status[rule] = RuleStatus()
        return status

    def _matched(self, rule: Rule, event: Event) -> None:
        self.metrics.child(self.metrics.events_matched, rule.name).inc()
        status = self._status(rule.name)
        status.matched += 1
        status.last_event = event.id
        status.last_event_time = event.doc["time"]

    async def _poison(self, event: Event, rule: str, message: str, decision: Decision) -> None:
        """An event one rule can never take (e.g. a Kafka value that is not JSON)."""
        decision.note(rule, Decided.DEAD_LETTERED, f"{DecodeError.__name__}: {message}")
        record = DeadLetter.of(
            event, rule=rule, error=DecodeError.__name__, message=message, time=self.clock.now()
        )
        await self.dead_letters.write(record)
        self.metrics.child(self.metrics.dead_letters, rule, DecodeError.__name__).inc()
        status = self._status(rule)
        status.dead_letters += 1
        status.last_error = message
        log.warning("event is poison for rule", event_id=event.id, rule=rule, error=message)

    def record_outcome(self, event: Event, outcome: Outcome) -> None:
        """Count and log an outcome reached off an event's path (a gate the leader's sweep
        fired or timed out) as `handle` does its own, with a decision record of its own."""
        decision = self.decisions.record(event, self.clock.now(), 0)
        self._record(event, outcome, decision)
        _log_decision(decision)

    def _record(self, event: Event, outcome: Outcome, decision: Decision) -> None:
        status = self._status(outcome.rule)
        ids = {"event_id": event.id, "rule": outcome.rule, "workflow": outcome.workflow}
        decision.note(outcome.rule, _DECIDED[outcome.kind], outcome.workflow)
        if outcome.kind == "created":
            status.created += 1
            status.last_workflow = outcome.workflow
            log.info("workflow created", attempts=outcome.attempts, **ids)
        elif outcome.kind == "duplicate":
            status.duplicates += 1
            status.last_workflow = outcome.workflow
            log.info("workflow already exists (redelivery)", **ids)
        else:
            status.dead_letters += 1
            status.last_error = f"{outcome.reason}: {outcome.message}"
            decision.note(outcome.rule, Decided.DEAD_LETTERED, status.last_error)
            log.error("dead-lettered", reason=outcome.reason, error=outcome.message, **ids)


DEFAULT_DECISIONS: Final = 1000
_UNFINISHED: Final = frozenset({Decided.SUBMITTING, Decided.RATE_LIMITED, Decided.RETRYING})
_DECIDED: Final = {
    OutcomeKind.CREATED: Decided.CREATED,
    OutcomeKind.DUPLICATE: Decided.DUPLICATE,
    OutcomeKind.DEAD_LETTERED: Decided.DEAD_LETTERED,
}


def _log_decision(decision: Decision) -> None:
    """One DEBUG line per decision (never INFO: most events match nothing)."""
    log.debug(
        "decision",
        event_id=decision.id,
        source=decision.event.source,
        other_rules=decision.others,
        rules=decision.rules,  # rule -> [outcome, detail]; nothing built unless logged
    )


@dataclass(frozen=True)
class Batched:
    """How `handle_batch` left one event: `slow` — nothing was done, `handle` it; else
    every match has its Workflow except those in `failed`, to `submit_matches`."""

    slow: bool = False
    failed: tuple[tuple[Rule, Event], ...] = ()
    decision: Decision | None = field(default=None, compare=False)  # with `failed`

    @property
    def done(self) -> bool:
        return not self.slow and not self.failed


SLOW: Final = Batched(slow=True)
DONE: Final = Batched()


def _plan(
    rules: RuleSet, event: Event, cluster: str
) -> tuple[Routed, list[tuple[Rule, Event, dict[str, Any]]]] | None:
    """How the event routed and its rendered Workflows, or None when it needs the
    one-event path."""
    routed = rules.route(event, cluster=cluster)
    if routed.failures:
        return None
    items = []
    for match in routed.matches:
        if match.rule.document.spec.rateLimit is not None or match.rule.gate is not None:
            return None
        try:
            workflow = render(match.rule, match.event)
        except RenderError:
            return None
        items.append((match.rule, match.event, workflow))
    return routed, items


async def gather_cancelling(*aws: Any) -> list[Any]:
    """gather() that cancels the siblings when one fails (used for one delivery's events)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


class MetricsHooks(NoHooks):
    """Feeds submitter outcomes into Prometheus."""

    def __init__(self, metrics: Metrics, clock: Clock, decisions: Decisions | None = None) -> None:
        self._metrics = metrics
        self._clock = clock
        self._decisions = decisions  # whose in-flight records retries and waits move on

    def on_created(self, rule: Rule, event: Event | None, workflow: str, latency: float) -> None:
        self._metrics.child(self._metrics.workflows, rule.name, "created", "").inc()
        self._metrics.submit_latency.observe(latency)
        if event is not None:
            age = (self._clock.now() - event.time).total_seconds()
            self._metrics.event_latency.observe(max(age, 0.0))

    def on_duplicate(self, rule: Rule, event: Event | None, workflow: str) -> None:
        self._metrics.child(self._metrics.workflows, rule.name, "duplicate", "").inc()

    def on_retry(
        self, rule: Rule, event: Event | None, attempt: int, delay: float, error: Exception
    ) -> None:
        self._metrics.child(self._metrics.retries, rule.name).inc()
        if self._decisions is not None and event is not None:
            detail = f"attempt {attempt}: {error}"
            self._decisions.update(event.id, rule.name, Decided.RETRYING, detail)
        log.warning(
            "submit failed, retrying",
            rule=rule.name,
            event_id=event.id if event else None,
            attempt=attempt,
            delay=round(delay, 3),
            error=str(error),
        )

    def on_rate_limited(self, rule: Rule, event: Event | None, delay: float) -> None:
        if self._decisions is not None and event is not None:
            detail = f"waiting {delay:.3g} s"
            self._decisions.update(event.id, rule.name, Decided.RATE_LIMITED, detail)

    def on_exhausted(
        self, rule: Rule, event: Event | None, attempts: int, error: Exception
    ) -> None:
        self._metrics.workflows.labels(rule.name, "failed", type(error).__name__).inc()

    def on_collision(
        self, rule: Rule, event: Event | None, taken: str, following: str, error: Exception
    ) -> None:
        self._metrics.child(self._metrics.name_collisions, rule.name).inc()
        log.warning(
            "workflow name taken by another key, trying the next name",
            rule=rule.name,
            event_id=event.id if event else None,
            workflow=taken,
            next=following,
            error=str(error),
        )

    def on_dead_letter(self, record: DeadLetter) -> None:
        self._metrics.dead_letters.labels(record.rule or "", record.error).inc()
        self._metrics.workflows.labels(record.rule or "", "failed", record.error).inc()
