"""The rule set and its router: which rules an event matches, and why not.

Rules are indexed by source kind and exact key — OSS bucket (then key prefix), Kafka
(cluster, topic), webhook (path, method), cron rule name, a finished Workflow's phase — so
an event only meets the rules that can match it. Patterns and CEL then run on those few
candidates. Routing does no I/O; failures
(a Kafka value a `json` rule cannot decode, a CEL error) are returned, not raised.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from trigger.decoders.kafka import view as kafka_view
from trigger.errors import DecodeError, ExpressionError, Problem
from trigger.events import Event
from trigger.rules.queue import Queue, queue_namespaces
from trigger.rules.rule import Rule

FailureKind = Literal["decode", "expression"]


@dataclass(frozen=True)
class Match:
    """A rule that matched, with the event as that rule sees it."""

    rule: Rule
    event: Event


@dataclass(frozen=True)
class Failure:
    """A rule that could not be evaluated for an event.

    `decode`: the event is poison for this rule (dead-letter it); `expression`: the CEL
    filter failed, which counts as no match (log and count it).
    """

    rule: Rule
    kind: FailureKind
    message: str


@dataclass(frozen=True)
class Routed:
    matches: tuple[Match, ...]
    failures: tuple[Failure, ...] = ()
    filtered: tuple[Rule, ...] = ()  # candidates whose filter did not match
    candidates: int = 0  # rules the index offered (the others are not for this event)


@dataclass
class _PrefixIndex:
    """Rules by literal key prefix: a lookup per distinct prefix length, not per rule."""

    by_prefix: dict[str, list[Rule]] = field(default_factory=lambda: defaultdict(list))
    lengths: list[int] = field(default_factory=list)

    def add(self, prefix: str, rule: Rule) -> None:
        self.by_prefix[prefix].append(rule)
        if len(prefix) not in self.lengths:
            self.lengths.append(len(prefix))
            self.lengths.sort()

    def candidates(self, key: str) -> Iterator[Rule]:
        size = len(key)
        for length in self.lengths:
            if length > size:
                break
            yield from self.by_prefix.get(key[:length], ())


class RuleSet:
    """An immutable set of compiled rules with its routing index."""

    def __init__(
        self,
        rules: tuple[Rule, ...],
        *,
        files: tuple[str, ...] = (),
        warnings: tuple[Problem, ...] = (),
        queues: Mapping[str, Queue] | None = None,
    ) -> None:
        self.rules = rules
        self.queues: Mapping[str, Queue] = dict(queues or {})  # `kind: Queue`, by name
        self.files = files
        self.warnings = warnings  # what the loader found worth a look (an empty file)
        self.by_name: Mapping[str, Rule] = {r.name: r for r in rules}
        # A gate rule is routed as one rule per member (`RULE.MEMBER`); these are the
        # members of each gate, by the gate rule's name, and the names as the user wrote
        # them (a gate once), in load order.
        self.gates: Mapping[str, tuple[Rule, ...]] = _gates(rules)
        self.written: tuple[str, ...] = tuple(
            dict.fromkeys(r.gate.rule.name if r.gate is not None else r.name for r in rules)
        )
        self._oss: dict[str, _PrefixIndex] = defaultdict(_PrefixIndex)
        self._kafka: dict[tuple[str, str], list[Rule]] = defaultdict(list)
        self._webhook: dict[tuple[str, str], list[Rule]] = defaultdict(list)
        self._webhook_methods: dict[str, frozenset[str]] = {}
        self._workflow: dict[str, list[Rule]] = defaultdict(list)
        for rule in rules:
            self._index(rule)

    def _index(self, rule: Rule) -> None:
        if rule.kind == "oss":
            self._oss[rule.oss.bucket].add(rule.key_prefix, rule)
        elif rule.kind == "kafka":
            for topic in rule.kafka.topics:
                self._kafka[(rule.kafka.cluster, topic)].append(rule)
        elif rule.kind == "webhook":
            path = rule.webhook.path
            for method in rule.webhook.methods:
                self._webhook[(path, method)].append(rule)
            known = self._webhook_methods.get(path, frozenset())
            self._webhook_methods[path] = known | set(rule.webhook.methods)
        elif rule.kind == "workflow":
            for phase in rule.finished.phases:
                self._workflow[phase].append(rule)

    def __len__(self) -> int:
        return len(self.rules)

    def queue_namespaces(self) -> dict[str, tuple[str, ...]]:
        """Each queue's namespaces: declared, or where the Workflows of its rules run."""
        used: dict[str, set[str]] = defaultdict(set)
        for rule in self.rules:
            if rule.workflow.queue is not None:
                used[rule.workflow.queue].add(rule.workflow.namespace)
        return {n: queue_namespaces(q, used.get(n, ())) for n, q in self.queues.items()}

    def kinds(self) -> set[str]:
        return {rule.kind for rule in self.rules}

    def kafka_topics(self) -> dict[tuple[str, str | None], set[str]]:
        """Topics per (cluster, consumer group); None means the daemon's default group."""
        topics: dict[tuple[str, str | None], set[str]] = defaultdict(set)
        for rule in self.rules:
            if rule.kind == "kafka":
                topics[(rule.kafka.cluster, rule.kafka.group)].update(rule.kafka.topics)
        return dict(topics)

    def webhook_paths(self) -> set[str]:
        return set(self._webhook_methods)

    def webhook_methods(self, path: str) -> frozenset[str]:
        """The methods some webhook rule on `path` takes; empty when no rule is on it."""
        return self._webhook_methods.get(path, frozenset())

    def candidates(self, event: Event, *, cluster: str = "default") -> list[Rule]:
        """The rules whose source kind and exact keys fit the event (index lookup only)."""
        fields = event.fields
        if event.source == "oss":
            index = self._oss.get(fields.get("bucket", ""))
            if index is None:
                return []
            polled = bool(fields.get("polled"))  # a poll rule takes only what its poller lists
            return [
                rule
                for rule in index.candidates(fields.get("key", ""))
                if (rule.oss.poll is not None) == polled
                and (rule.event_types is None or rule.event_types(event.type))
            ]
        if event.source == "kafka":
            return self._kafka.get((cluster, fields.get("topic", "")), [])
        if event.source == "webhook":
            return self._webhook.get((fields.get("path", ""), fields.get("method", "")), [])
        if event.source == "workflow":
            found = self._workflow.get(fields.get("phase", ""), [])
            return [rule for rule in found if _explain_workflow(rule, event) is None]
        rule = self.by_name.get(fields.get("rule", ""))  # cron: a tick names its rule
        return [rule] if rule is not None and rule.kind == "cron" else []

    def route(self, event: Event, *, cluster: str = "default") -> Routed:
        """Every rule the event matches, and every rule that failed to evaluate."""
        matches: list[Match] = []
        failures: list[Failure] = []
        filtered: list[Rule] = []
        candidates = self.candidates(event, cluster=cluster)
        for rule in candidates:
            seen = event
            if rule.kind == "kafka":
                try:
                    seen = kafka_view(event, rule.kafka.format)
                except DecodeError as exc:
                    failures.append(Failure(rule, "decode", str(exc)))
                    continue
            try:
                if _filters_pass(rule, seen):
                    matches.append(Match(rule, seen))
                else:
                    filtered.append(rule)
            except ExpressionError as exc:
                failures.append(Failure(rule, "expression", str(exc)))
        return Routed(tuple(matches), tuple(failures), tuple(filtered), len(candidates))

    def explain(self, rule: Rule, event: Event, *, cluster: str = "default") -> str | None:
        """Why `rule` does not match `event` (None when it matches). Slow path, for humans."""
        reason = _explain_source(rule, event, cluster)
        if reason is not None:
            return reason
        seen = event
        if rule.kind == "kafka":
            try:
                seen = kafka_view(event, rule.kafka.format)
            except DecodeError as exc:
                return f"value is not {rule.kafka.format}: {exc}"
        if rule.pattern is not None:
            misses = rule.pattern.explain(seen.doc)
            if misses:
                return f"filter.pattern: {'; '.join(misses)}"
        if rule.expr is not None:
            try:
                if not rule.expr.evaluate({"event": seen.doc, "rule": rule.context}):
                    return f"filter.expr is false: {rule.expr.source}"
            except ExpressionError as exc:
                return f"filter.expr failed: {exc}"
        return None

    def explain_steps(
        self, rule: Rule, event: Event, *, cluster: str = "default"
    ) -> Iterator[tuple[str, bool, str, list[str]]]:
        """The checks `explain` makes, one (check, passed, detail, pattern misses) each, in
        order; stops after the first that fails. Slow path, for the decision records."""
        reason = _explain_source(rule, event, cluster)
        yield "source", reason is None, reason or f"a {rule.kind} event this rule takes", []
        if reason is not None:
            return
        seen = event
        if rule.kind == "kafka":
            try:
                seen = kafka_view(event, rule.kafka.format)
            except DecodeError as exc:
                yield "decode", False, f"value is not {rule.kafka.format}: {exc}", []
                return
            yield "decode", True, f"value is {rule.kafka.format}", []
        if rule.pattern is not None:
            misses = rule.pattern.explain(seen.doc)
            yield "filter.pattern", not misses, "does not match" if misses else "matches", misses
            if misses:
                return
        if rule.expr is not None:
            try:
                passed = bool(rule.expr.evaluate({"event": seen.doc, "rule": rule.context}))
                said = "true" if passed else "false"
                yield "filter.expr", passed, f"{said}: {rule.expr.source}", []
            except ExpressionError as exc:
                yield "filter.expr", False, f"failed: {exc}", []

    def explain_misses(
        self, event: Event, matched: Collection[str], *, cluster: str = "default"
    ) -> list[str]:
        """Why each rule not in `matched` does not match `event`: the rules of other sources
        together in one line, then one line per rule of the event's own source. A gate is
        one rule: it matched if a member did, else its line says why each member did not."""
        others: dict[str, list[str]] = defaultdict(list)
        lines = []
        for name in self.written:
            members = self.gates.get(name)
            if members is None:
                rule = self.by_name[name]
                if name in matched:
                    continue
                if rule.kind != event.source:
                    others[rule.kind].append(name)
                    continue
                lines.append(f"rule {name}: no match: {self.explain(rule, event, cluster=cluster)}")
                continue
            if any(m.name in matched for m in members):
                continue
            if all(m.kind != event.source for m in members):
                others[members[0].kind].append(f"{name} (gate)")
                continue
            why = "; ".join(
                f"member {m.gate.member if m.gate else m.name}: "
                f"{self.explain(m, event, cluster=cluster)}"
                for m in members
            )
            lines.append(f"rule {name}: no match: gate {why}")
        if others:
            count = sum(map(len, others.values()))
            by_kind = sorted(others.items())
            listed = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in by_kind)
            are = "rules are" if count > 1 else "rule is"
            lines.insert(0, f"{count} {are} for other sources ({listed})")
        return lines


def _gates(rules: tuple[Rule, ...]) -> dict[str, tuple[Rule, ...]]:
    found: dict[str, list[Rule]] = defaultdict(list)
    for rule in rules:
        if rule.gate is not None:
            found[rule.gate.rule.name].append(rule)
    return {name: tuple(members) for name, members in found.items()}


def _filters_pass(rule: Rule, event: Event) -> bool:
    if rule.key_filter is not None and not rule.key_filter(event.fields.get("key")):
        return False
    if rule.pattern is not None and not rule.pattern.matches(event.doc):
        return False
    if rule.expr is not None:
        return rule.expr.evaluate({"event": event.doc, "rule": rule.context})
    return True


def _explain_source(rule: Rule, event: Event, cluster: str) -> str | None:
    fields: Mapping[str, Any] = event.fields
    if rule.kind != event.source:
        return f"rule takes {rule.kind} events, not {event.source} events"
    if rule.kind == "kafka":
        if rule.kafka.cluster != cluster or fields.get("topic") not in rule.kafka.topics:
            return f"topic {fields.get('topic')!r} is not one of {rule.kafka.topics}"
    elif rule.kind == "cron" and fields.get("rule") != rule.name:
        return f"tick is for rule {fields.get('rule')!r}"
    return _EXPLAIN.get(rule.kind, _fits)(rule, event)


def _fits(rule: Rule, event: Event) -> str | None:
    return None


def _explain_workflow(rule: Rule, event: Event) -> str | None:
    """Why a finished Workflow is not one `rule`'s source takes, or None."""
    source, fields = rule.finished, event.fields
    if fields.get("phase") not in source.phases:
        return f"phase {fields.get('phase')!r} is not one of {source.phases}"
    if source.namespace is not None and fields.get("namespace") != source.namespace:
        return f"namespace {fields.get('namespace')!r} is not {source.namespace!r}"
    if source.templates is not None and fields.get("template") not in source.templates:
        return f"template {fields.get('template')!r} is not one of {source.templates}"
    labels = fields.get("labels") or {}
    wanted = source.selector.matchLabels if source.selector is not None else {}
    for key, value in wanted.items():
        if labels.get(key) != value:
            return f"label {key}={labels.get(key)!r} does not match selector {key}={value!r}"
    return None


def _explain_oss(rule: Rule, event: Event) -> str | None:
    fields = event.fields
    if fields.get("bucket") != rule.oss.bucket:
        return f"bucket {fields.get('bucket')!r} is not {rule.oss.bucket!r}"
    if (rule.oss.poll is not None) != bool(fields.get("polled")):
        return "rule polls its bucket; pushed events go to push rules (and vice versa)"
    if rule.event_types is not None and not rule.event_types(event.type):
        return f"event type {event.type!r} is not one of {rule.oss.events}"
    if rule.key_filter is not None and not rule.key_filter(fields.get("key")):
        return f"key {fields.get('key')!r} does not match source.oss.key {rule.oss.key}"
    return None


def _explain_webhook(rule: Rule, event: Event) -> str | None:
    path, method = event.fields.get("path"), event.fields.get("method")
    if path != rule.webhook.path:
        return f"path {path!r} is not {rule.webhook.path!r}"
    if method not in rule.webhook.methods:
        return f"method {method!r} is not one of {list(rule.webhook.methods)}"
    return None


# The sources whose own keys are explained by a function of their own.
_EXPLAIN: Final[Mapping[str, Callable[[Rule, Event], str | None]]] = {
    "oss": _explain_oss,
    "webhook": _explain_webhook,
    "workflow": _explain_workflow,
}
