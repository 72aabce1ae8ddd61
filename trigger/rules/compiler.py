"""Compile one rule document (or `kind: Queue` document), reporting every problem it has,
each at its place.

The schema (`model.py`) checks shape; this module compiles what the schema cannot judge —
the OSS event names and key filter, cron schedules and timezone, the pattern, the CEL
expression, the templates — and checks every event field they name against the rule's
source (`fields.py`). A part is compiled even when the schema refused another part of the
document, so one mistake does not hide the next. Every message starts with the field it is
about, spelled one way: the path below `spec` (`filter.pattern.size[0].numeric`,
`workflow.parameters.day`), or from the top for the rest (`metadata.name`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast

from pydantic import BaseModel, ValidationError

from trigger.errors import ExpressionError, PatternError, Problem, TemplateError
from trigger.events import SourceKind
from trigger.rules.expressions import compile_expression
from trigger.rules.fields import Scope
from trigger.rules.gates import GateShape
from trigger.rules.model import GENERATE_NAME_MAX, SOURCE_OR_GATE, QueueDocument, RuleDocument
from trigger.rules.patterns import compile_pattern, match_leaf
from trigger.rules.queue import Queue
from trigger.rules.rule import GatePlan, Predicate, Rule
from trigger.rules.schedules import ScheduleError, compile_schedule, compile_timezone
from trigger.rules.templating import Template, TemplateEngine
from trigger.rules.yamldoc import Document, Path

T = TypeVar("T")
D = TypeVar("D", bound=BaseModel)
TEMPLATE_SCOPE: Final = frozenset({"event", "rule"})
GATE_TEMPLATE_SCOPE: Final = frozenset({"gate", "rule"})
GATE_FIELDS: Final = ("key", "members", "first", "timedOut")
KINDS: Final = ("oss", "kafka", "cron", "webhook", "workflow")
_LABEL_VALUE: Final = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@dataclass
class Session:
    """What one load shares across documents: the engine, what was found, and the cache."""

    engine: TemplateEngine
    rules: list[Rule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seen: dict[str, tuple[str, Document]] = field(default_factory=dict)
    queues: list[Queue] = field(default_factory=list)
    queues_seen: dict[str, tuple[str, Document]] = field(default_factory=dict)
    compiled: dict[tuple[str, ...], Any] = field(default_factory=dict)

    def memo(self, kind: str, source: Any, compile_: Callable[[Any], T]) -> T:
        """Compile `source` once per load: rule sets repeat their patterns, expressions and
        key filters, and compiled ones are immutable, so rules can share them. Errors are
        not cached: each rule that repeats a bad one gets its own problem."""
        # Expressions are strings: their own key, without a JSON encoding (~7 % of the
        # compile time of 10,000 rules); a tuple of another length keeps them apart.
        key = (
            (kind, source)
            if isinstance(source, str)
            else (kind, json.dumps(source, sort_keys=True, default=repr), "")
        )
        found = self.compiled.get(key)
        if found is None:
            found = self.compiled[key] = compile_(source)
        return cast(T, found)


def field_name(path: Path) -> str:
    """How messages spell a place in a rule: below `spec` without it, indices in brackets."""
    if len(path) > 1 and path[0] == "spec":
        path = path[1:]
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass(frozen=True)
class Parts:
    """The parts of a rule the schema cannot judge, read from the raw document — each only
    where it has the right type (the schema reports the others) — so that they are compiled
    even when the schema refused some other part of the rule."""

    kind: SourceKind | None
    source: Mapping[str, Any]
    pattern: Mapping[str, Any] | None
    expr: str | None
    parameters: Mapping[Any, Any]
    idempotency_key: str | None
    labels: Mapping[Any, Any]
    annotations: Mapping[Any, Any]

    @classmethod
    def of(cls, value: Mapping[str, Any]) -> Parts:
        spec = _get(value, "spec")
        source = _get(spec, "source")
        kinds = [k for k in KINDS if k in source]
        workflow = _get(spec, "workflow")
        return cls(
            kind=cast(SourceKind, kinds[0]) if len(kinds) == 1 else None,
            source=_get(source, kinds[0]) if len(kinds) == 1 else {},
            pattern=_typed(_get(spec, "filter").get("pattern"), dict),
            expr=_typed(_get(spec, "filter").get("expr"), str),
            parameters=_get(workflow, "parameters"),
            idempotency_key=_typed(spec.get("idempotencyKey"), str),
            labels=_get(workflow, "labels"),
            annotations=_get(workflow, "annotations"),
        )

    def scope(self) -> Scope | None:
        if self.kind is None:
            return None
        polled = self.kind == "oss" and self.source.get("poll") is not None
        kafka_format = self.source.get("format", "json") if self.kind == "kafka" else "json"
        return Scope(self.kind, polled=polled, kafka_format=str(kafka_format))


def _get(value: Any, key: str) -> Mapping[str, Any]:
    # YAML gives plain dicts; the exact type check keeps this off the slower ABC check.
    found = value.get(key) if type(value) is dict else None
    return found if type(found) is dict else {}


def _typed(value: Any, kind: type[T]) -> T | None:
    return value if isinstance(value, kind) else None


@dataclass
class DocumentCompiler:
    """Compiles one document into a Rule, or records its problems in the session."""

    session: Session
    file: str
    doc: Document
    name: str | None = None
    found: list[Problem] = field(default_factory=list)
    # Where the source and filter being compiled are: `spec`, or a gate member's place.
    base: Path = ("spec",)
    model: type[BaseModel] = RuleDocument  # the schema of the document's kind
    queue: str | None = None  # the name of a Queue document, for its messages

    @property
    def failed(self) -> bool:
        return bool(self.found)

    def problem(
        self, path: Path, message: str, *, key: bool = False, name: Path | None = None
    ) -> None:
        """Record a problem located at `path` and about the field `name` (default: `path`)."""
        line, column = self.doc.where(path, key=key)
        where = field_name(path if name is None else name)
        text = f"{where}: {message}" if where else message
        if self.queue is not None:
            text = f"queue {self.queue}: {text}"
        self.found.append(Problem(self.file, line, column, self.name, text))

    def compile(self) -> None:
        """Compile the document: its Rule into the session, or its problems, in file order."""
        try:
            self._compile()
        finally:
            self.found.sort(key=lambda p: (p.line, p.column))
            self.session.problems.extend(self.found)

    def _compile(self) -> None:
        value = self.doc.value
        if not isinstance(value, dict):
            self.problem((), "a rule document must be a mapping (apiVersion, kind, metadata, spec)")
            return
        metadata = value.get("metadata")
        named = metadata.get("name") if isinstance(metadata, dict) else None
        if value.get("kind") == "Queue":
            self.model, self.queue = QueueDocument, named if isinstance(named, str) else None
            self.compile_queue(value)
            return
        if isinstance(named, str):
            self.name = named
        document = self.validate(value)
        if document is not None:
            self.check_unique(document.metadata.name)
        if "gate" in _get(value, "spec"):
            members, firing = self.gate_parts(_get(value, "spec"))
            if document is not None and not self.failed:
                self.session.rules.extend(self.build_gate(document, members, firing))
            return
        compiled = self.parts(Parts.of(value))
        if document is not None and not self.failed:
            self.session.rules.append(self.build(document, compiled))

    # --- the schema -----------------------------------------------------------------------

    def validate(self, value: dict[str, Any]) -> RuleDocument | None:
        spec = value.get("spec")
        # `source` is optional only beside a gate; a rule with neither is told about its
        # source at once, as a required field (pydantic's whole-model check runs only
        # once every field is valid, and would speak of gates to every plain rule).
        neither = isinstance(spec, dict) and "source" not in spec and "gate" not in spec
        return self.validated(RuleDocument, value, neither=neither)

    def validated(
        self, model: type[D], value: dict[str, Any], *, neither: bool = False
    ) -> D | None:
        reported: set[Path] = set()
        if neither:
            self.schema_problem(("spec", "source"), "missing", "", reported)
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                if neither and SOURCE_OR_GATE in error["msg"]:
                    continue
                self.schema_problem(tuple(error["loc"]), error["type"], error["msg"], reported)
            return None

    def schema_problem(self, loc: Path, kind: str, message: str, reported: set[Path]) -> None:
        path = self.known_prefix(loc)
        if path in reported and kind != "extra_forbidden":
            return  # one message per place: unions report once per member
        reported.add(path)
        if kind == "extra_forbidden":
            self.problem(loc, f"unknown field{_nearest_key(loc, self.model)}", key=True)
        elif kind == "missing":
            self.problem(path, "required field is missing", key=bool(path), name=loc)
        elif loc == ("kind",):
            self.problem(path, "a document is a Rule or a Queue (kind: Rule, kind: Queue)")
        else:
            self.problem(path, message.removeprefix("Value error, "))

    def known_prefix(self, loc: Path) -> Path:
        """The longest prefix of a pydantic location that names a place in the document."""
        best: Path = ()
        probe: Path = ()
        for part in loc:
            probe = (*probe, part)
            if probe in self.doc.paths:
                best = probe
        return best

    def check_unique(self, name: str) -> None:
        first = self.session.seen.get(name)
        if first is None:
            self.session.seen[name] = (self.file, self.doc)
            return
        line, column = first[1].where(("metadata", "name"))
        self.problem(
            ("metadata", "name"),
            f"duplicate rule name (first defined at {first[0]}:{line}:{column})",
        )

    # --- queues ----------------------------------------------------------------------------

    def compile_queue(self, value: dict[str, Any]) -> None:
        """A `kind: Queue` document: its Queue into the session, or its problems."""
        if self.queue is not None:  # a duplicate is one, even when either is also wrong
            first = self.session.queues_seen.setdefault(self.queue, (self.file, self.doc))
            if first[1] is not self.doc:
                line, column = first[1].where(("metadata", "name"))
                self.problem(
                    ("metadata", "name"),
                    f"duplicate queue name (first defined at {first[0]}:{line}:{column})",
                )
        document = self.validated(QueueDocument, value)
        if document is None or self.failed:
            return
        name, spec = document.metadata.name, document.spec
        namespaces = tuple(spec.namespaces) if spec.namespaces is not None else None
        self.session.queues.append(
            Queue(name, spec.limit, namespaces, spec.description, self.file, self.doc.index)
        )

    # --- the parts --------------------------------------------------------------------------

    def parts(self, parts: Parts) -> dict[str, Any]:
        """Compile every part, recording each problem; what compiled, by Rule field."""
        scope = parts.scope()
        compiled = self.source_parts(parts, scope)
        compiled["parameters"] = tuple(self.parameters(parts.parameters, scope))
        if parts.idempotency_key is not None:
            compiled["idempotency_key"] = self.template(
                ("spec", "idempotencyKey"), parts.idempotency_key, scope
            )
        self.check_labels(parts.labels, parts.annotations)
        return compiled

    def source_parts(self, parts: Parts, scope: Scope | None) -> dict[str, Any]:
        """The source's and the filter's compiled parts, by Rule field."""
        compiled: dict[str, Any] = {}
        if parts.kind == "oss":
            compiled.update(self.oss_parts(parts.source))
        elif parts.kind == "cron":
            compiled.update(self.cron_parts(parts.source))
        if parts.pattern is not None:
            compiled["pattern"] = self.pattern(parts.pattern, scope)
        if parts.expr is not None:
            compiled["expr"] = self.expression(parts.expr)
        return compiled

    def gate_parts(
        self, spec: Mapping[str, Any]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """A gate's members (each compiled like a rule's source and filter, at its place),
        its key (checked against every member's events) and its Workflow's parameters
        (which see `gate` and `rule`)."""
        gate = _get(spec, "gate")
        members: dict[str, dict[str, Any]] = {}
        scopes: list[tuple[str, Scope]] = []
        for name, member in _get(gate, "members").items():
            if not isinstance(name, str) or type(member) is not dict:
                continue  # the schema says so
            parts = Parts.of({"spec": {**member, "workflow": {}}})
            scope = parts.scope()
            self.base = ("spec", "gate", "members", name)
            try:
                members[name] = self.source_parts(parts, scope)
            finally:
                self.base = ("spec",)
            if scope is not None:
                scopes.append((name, scope))
        key = gate.get("key")
        if isinstance(key, str):
            members_key = self.template(("spec", "gate", "key"), key, None)
            for at, why in _member_problems(members_key, scopes):
                self.problem(("spec", "gate", "key"), f"{at}: {why}")
            for compiled in members.values():
                compiled["key"] = members_key
        workflow = _get(spec, "workflow")
        names = frozenset(n for n in _get(gate, "members") if isinstance(n, str))
        firing = {
            "parameters": tuple(
                self.parameters(_get(workflow, "parameters"), None, gate_members=names)
            )
        }
        self.check_labels(_get(workflow, "labels"), _get(workflow, "annotations"))
        return members, firing

    def pattern(self, source: Mapping[str, Any], scope: Scope | None) -> Any:
        base = (*self.base, "filter", "pattern")
        pattern = None
        try:
            pattern = self.session.memo("pattern", source, compile_pattern)
        except PatternError as exc:
            for error in exc.errors:
                self.problem((*base, *error.path), str(error))
        for at, why in scope.pattern_problems(source) if scope else ():
            self.problem((*base, *at), why, key=True)
        return pattern

    def expression(self, source: str) -> Any:
        try:
            return self.session.memo("expr", source, compile_expression)
        except ExpressionError as exc:
            self.problem((*self.base, "filter", "expr"), str(exc))
            return None

    def parameters(
        self,
        raw: Mapping[Any, Any],
        scope: Scope | None,
        *,
        gate_members: frozenset[str] | None = None,
    ) -> Iterator[tuple[str, Template]]:
        for name, value in raw.items():
            path = ("spec", "workflow", "parameters", name)
            if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_.-]+$", name):
                self.problem(path, f"parameter name {name!r} is not valid", key=True)
                continue
            text = _scalar_text(value)
            if text is None:
                self.problem(path, "must be a string, number or boolean")
                continue
            template = self.template(path, text, scope, gate_members=gate_members)
            if template is not None:
                yield name, template

    def template(
        self,
        path: Path,
        source: str,
        scope: Scope | None,
        *,
        gate_members: frozenset[str] | None = None,
    ) -> Template | None:
        """Compile a template and check the names it uses; `gate_members` is given for a
        gate rule's Workflow templates, which see `gate` and `rule` instead of `event`."""
        try:
            template = self.session.engine.compile(source)
        except TemplateError as exc:
            self.problem(path, str(exc))
            return None
        roots = TEMPLATE_SCOPE if gate_members is None else GATE_TEMPLATE_SCOPE
        unknown = template.variables - roots
        if unknown:
            names = ", ".join(sorted(unknown))
            seen = " and ".join(sorted(roots))
            self.problem(path, f"unknown name(s) {names} (templates see only {seen})")
            return None
        problems = [(p, scope.check(p)) for p in sorted(template.paths, key=str)] if scope else []
        if gate_members is not None:
            paths = sorted(template.paths, key=str)
            problems += [(p, _gate_path_problem(p, gate_members)) for p in paths]
        for named, why in problems:
            if why is not None:
                self.problem(path, f"{_event_path(named)}: {why}")
        return template

    def oss_parts(self, oss: Mapping[str, Any]) -> dict[str, Any]:
        base = (*self.base, "source", "oss")
        parts: dict[str, Any] = {}
        events = oss.get("events", ["ObjectCreated:*"])
        if isinstance(events, list) and all(isinstance(e, str) for e in events):
            parts["event_types"] = self.event_types(events)
        key = oss.get("key")
        if isinstance(key, Mapping):
            checks: list[Predicate] = []
            for op, operand in key.items():
                try:
                    checks.append(self.session.memo("leaf", [{op: operand}], match_leaf))
                except PatternError as exc:
                    self.problem((*base, "key", op), str(exc))
            if isinstance(key.get("prefix"), str):
                parts["key_prefix"] = key["prefix"]
            parts["key_filter"] = _all(checks)
        return parts

    def event_types(self, names: Sequence[str]) -> Predicate:
        exact: set[str] = set()
        prefixes: list[str] = []
        for i, name in enumerate(names):
            bare = name.removeprefix("oss:")
            if bare == "*":
                return _always
            if "*" in bare[:-1] or not re.match(r"^[A-Za-z]+(:[A-Za-z*]+)?$", bare):
                self.problem(
                    (*self.base, "source", "oss", "events", i),
                    f"{name!r} is not an OSS event name "
                    "(e.g. ObjectCreated:PutObject, ObjectCreated:*, oss:ObjectRemoved:*)",
                )
            elif bare.endswith("*"):
                prefixes.append(bare[:-1])
            else:
                exact.add(bare)
        frozen, starts = frozenset(exact), tuple(prefixes)
        return lambda t: t in frozen or (bool(starts) and t.startswith(starts))

    def cron_parts(self, cron: Mapping[str, Any]) -> dict[str, Any]:
        base = (*self.base, "source", "cron")
        schedules = []
        raw = cron.get("schedules")
        for i, text in enumerate(raw if isinstance(raw, list) else []):
            if not isinstance(text, str):
                continue  # the schema says so
            try:
                schedules.append(compile_schedule(text))
            except ScheduleError as exc:
                self.problem((*base, "schedules", i), str(exc))
        timezone = cron.get("timezone", "UTC")
        try:
            if isinstance(timezone, str):
                compile_timezone(timezone)
        except ScheduleError as exc:
            self.problem((*base, "timezone"), str(exc))
        return {"schedules": tuple(schedules)}

    def check_labels(self, labels: Mapping[Any, Any], annotations: Mapping[Any, Any]) -> None:
        for where, table in (("labels", labels), ("annotations", annotations)):
            for key in table:
                if isinstance(key, str) and not _label_key(key):
                    self.problem(
                        ("spec", "workflow", where, key),
                        f"{key!r} is not a valid Kubernetes key",
                        key=True,
                    )
        for key, value in labels.items():
            if isinstance(value, str) and (len(value) > 63 or not _LABEL_VALUE.match(value)):
                self.problem(
                    ("spec", "workflow", "labels", key), f"{value!r} is not a valid label value"
                )

    # --- the Rule ---------------------------------------------------------------------------

    def build_gate(
        self,
        document: RuleDocument,
        members: Mapping[str, Mapping[str, Any]],
        firing: Mapping[str, Any],
    ) -> list[Rule]:
        """A gate rule is one rule per member (`RULE.MEMBER`, routed like any rule, with
        the member's source and filter) sharing one GatePlan: the gate rule as it fires."""
        spec = document.spec
        gate = spec.gate
        assert gate is not None
        first = next(iter(gate.members.values()))
        fires = self.build(document, firing, kind=first.source.kind)
        shape = GateShape(
            {n: m.count for n, m in gate.members.items()}, gate.window, gate.onTimeout
        )
        rules = []
        for name, member in gate.members.items():
            compiled = dict(members[name])
            key = compiled.pop("key")
            plan = GatePlan(rule=fires, member=name, key=key, shape=shape)
            own = spec.model_copy(update={"source": member.source, "filter": member.filter})
            rule = self.build(document.model_copy(update={"spec": own}), compiled)
            rules.append(
                dataclasses.replace(rule, name=f"{document.metadata.name}.{name}", gate=plan)
            )
        return rules

    def build(
        self,
        document: RuleDocument,
        compiled: Mapping[str, Any],
        *,
        kind: SourceKind | None = None,
    ) -> Rule:
        spec = document.spec
        return Rule(
            name=document.metadata.name,
            file=self.file,
            index=self.doc.index,
            kind=kind or spec.origin.kind,
            document=document,
            generate_name=(
                spec.workflow.generateName or default_generate_name(document.metadata.name)
            ),
            context={
                "name": document.metadata.name,
                "namespace": spec.workflow.namespace,
                "template": spec.workflow.template,
                "labels": dict(document.metadata.labels),
            },
            **compiled,
        )


def _member_problems(
    template: Template | None, scopes: Sequence[tuple[str, Scope]]
) -> Iterator[tuple[str, str]]:
    """A gate key renders for every member's events: each field it names must exist in
    each member's source (one problem per field, naming the members that lack it)."""
    if template is None:
        return
    for named in sorted(template.paths, key=str):
        lacking = [(member, why) for member, scope in scopes if (why := scope.check(named))]
        if lacking:
            members = ", ".join(member for member, _ in lacking)
            yield _event_path(named), f"{lacking[0][1]} (member {members})"


def _gate_path_problem(path: Sequence[str | int], members: frozenset[str]) -> str | None:
    """Why a `gate.…` path names nothing: `gate` has key, members.NAME, first, timedOut."""
    if path[0] != "gate" or len(path) < 2:
        return None
    if path[1] not in GATE_FIELDS:
        return f"gate has no field {path[1]!r} (it has: {', '.join(GATE_FIELDS)})"
    if path[1] == "members" and len(path) > 2 and path[2] not in members:
        return f"the gate has no member {path[2]!r} (it has: {', '.join(sorted(members))})"
    return None


def default_generate_name(rule: str) -> str:
    """The rule's name and a dash, cut to fit `generateName`'s limit."""
    return f"{rule[: GENERATE_NAME_MAX - 1].rstrip('-')}-"


def _nearest_key(loc: Path, root: type[BaseModel] = RuleDocument) -> str:
    """How to fix an unknown key: the nearest field its place has, or all of them."""
    known = _model_fields(loc[:-1], root)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    owner = field_name(loc[:-1]) or "a rule"
    return f" ({owner} has: {', '.join(known)})" if known else ""


def _model_fields(path: Path, root: type[BaseModel] = RuleDocument) -> list[str]:
    model: Any = root
    for part in path:
        info = model.model_fields.get(part) if isinstance(part, str) else None
        if info is None:
            return []
        model = next((t for t in _members(info.annotation) if _is_model(t)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _members(annotation: Any) -> tuple[Any, ...]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _event_path(path: Sequence[str | int]) -> str:
    """`event.value.items[0]`: how templates and CEL write a field."""
    text = str(path[0])
    for part in path[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_LABEL_VALUE.match(name))


def _scalar_text(value: Any) -> str | None:
    """Argo parameters are strings: YAML booleans and numbers are written as YAML would."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value if isinstance(value, str) else None


def _always(_: Any) -> bool:
    return True


def _all(checks: Sequence[Predicate]) -> Predicate:
    if len(checks) == 1:
        return checks[0]
    frozen = tuple(checks)
    return lambda value: all(check(value) for check in frozen)
