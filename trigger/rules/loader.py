"""Load rule files: read YAML safely, check the schema, compile everything, report all problems.

`load_rules` either returns a complete RuleSet or raises RuleError listing every problem as
`file:line:column: rule NAME: message`, so `trigger validate` shows them all at once and the
daemon can keep its previous rule set when a reload fails.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Final, TypeVar, cast

from pydantic import ValidationError

from trigger.errors import ExpressionError, PatternError, Problem, RuleError, TemplateError
from trigger.rules.expressions import compile_expression
from trigger.rules.model import DNS1123_LABEL, GENERATE_NAME_MAX, RuleDocument
from trigger.rules.patterns import compile_pattern, match_leaf
from trigger.rules.router import RuleSet
from trigger.rules.rule import Predicate, Rule
from trigger.rules.schedules import ScheduleError, compile_schedule, compile_timezone
from trigger.rules.templating import Template, TemplateEngine
from trigger.rules.yamldoc import Document, Path, YamlProblem, read_documents

T = TypeVar("T")
RULE_SUFFIXES: Final = (".yaml", ".yml")
TEMPLATE_SCOPE: Final = frozenset({"event", "rule"})
_LABEL_VALUE: Final = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def rule_files(paths: Iterable[str | FsPath]) -> list[FsPath]:
    """The rule files under `paths`: files as given, directories searched recursively."""
    found: list[FsPath] = []
    for raw in paths:
        path = FsPath(raw)
        if path.is_dir():
            # Hidden entries are skipped below the root: a mounted ConfigMap keeps every file
            # twice, once in a hidden `..2025_01_01...` snapshot directory.
            found.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.suffix in RULE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and p.is_file()
            )
        else:
            found.append(path)
    return found


def load_rules(paths: Iterable[str | FsPath], *, engine: TemplateEngine | None = None) -> RuleSet:
    """Load and compile every rule under `paths`; raises RuleError with all problems."""
    loader = _Loader(engine or TemplateEngine())
    files = rule_files(paths)
    if not files:
        raise RuleError(
            [Problem(", ".join(map(str, paths)) or ".", 1, 1, None, "no rule files found")]
        )
    # Loading builds many small long-lived objects; the cyclic collector would rescan them
    # again and again as they pile up. Nothing here makes cycles that must be collected
    # before the load ends.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for file in files:
            loader.load_file(file)
    finally:
        if collecting:
            gc.enable()
    loader.check_shared_paths()
    if loader.problems:
        raise RuleError(loader.problems)
    return RuleSet(tuple(loader.rules), files=tuple(str(f) for f in files))


@dataclass
class _Loader:
    engine: TemplateEngine
    rules: list[Rule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seen: dict[str, tuple[str, Document]] = field(default_factory=dict)
    compiled: dict[tuple[str, str], Any] = field(default_factory=dict)

    def load_file(self, file: FsPath) -> None:
        name = str(file)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.problems.append(Problem(name, 1, 1, None, f"cannot read rule file: {exc}"))
            return
        try:
            for doc in read_documents(text):
                _DocumentCompiler(self, name, doc).compile()
        except YamlProblem as exc:
            self.problems.append(Problem(name, exc.line, exc.column, None, str(exc)))

    def memo(self, kind: str, source: Any, compile_: Callable[[Any], T]) -> T:
        """Compile `source` once per load: rule sets repeat their patterns, expressions and
        key filters, and compiled ones are immutable, so rules can share them. Errors are
        not cached: each rule that repeats a bad one gets its own problem."""
        key = (kind, json.dumps(source, sort_keys=True, default=repr))
        found = self.compiled.get(key)
        if found is None:
            found = self.compiled[key] = compile_(source)
        return cast(T, found)

    def check_shared_paths(self) -> None:
        """Rules that share a webhook path must authenticate it the same way."""
        first: dict[str, Rule] = {}
        for rule in self.rules:
            if rule.kind != "webhook":
                continue
            other = first.setdefault(rule.webhook.path, rule)
            if other is not rule and other.webhook.auth != rule.webhook.auth:
                file, doc = self.seen[rule.name]
                line, column = doc.where(("spec", "source", "webhook", "auth"))
                self.problems.append(
                    Problem(
                        file,
                        line,
                        column,
                        rule.name,
                        f"source.webhook.auth differs from rule {other.name}, which shares "
                        f"path {rule.webhook.path}: rules on one path share its authentication",
                    )
                )


class _Failed(Exception):  # internal control flow: stop compiling one document
    pass


@dataclass
class _DocumentCompiler:
    loader: _Loader
    file: str
    doc: Document
    name: str | None = None
    failed: bool = False

    def problem(self, path: Path, message: str, *, key: bool = False) -> None:
        line, column = self.doc.where(path, key=key)
        self.loader.problems.append(Problem(self.file, line, column, self.name, message))
        self.failed = True

    def compile(self) -> None:
        value = self.doc.value
        if not isinstance(value, dict):
            self.problem((), "a rule document must be a mapping (apiVersion, kind, metadata, spec)")
            return
        metadata = value.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("name"), str):
            self.name = metadata["name"]
        document = self.validate(value)
        if document is None:
            return
        self.check_unique(document.metadata.name)
        rule = self.build(document)
        if not self.failed and rule is not None:
            self.loader.rules.append(rule)

    def validate(self, value: dict[str, Any]) -> RuleDocument | None:
        try:
            return RuleDocument.model_validate(value)
        except ValidationError as exc:
            reported: set[Path] = set()
            for error in exc.errors(include_url=False):
                self.schema_problem(tuple(error["loc"]), error["type"], error["msg"], reported)
            return None

    def schema_problem(self, loc: Path, kind: str, message: str, reported: set[Path]) -> None:
        path = self.known_prefix(loc)
        if path in reported and kind != "extra_forbidden":
            return  # one message per place: unions report once per member
        reported.add(path)
        dotted = _dotted(loc if kind in {"missing", "extra_forbidden"} else path)
        if kind == "extra_forbidden":
            self.problem(loc, f"{dotted}: unknown field", key=True)
        elif kind == "missing":
            self.problem(path, f"{dotted}: required field is missing", key=bool(path))
        else:
            message = message.removeprefix("Value error, ")
            self.problem(path, f"{dotted}: {message}")

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
        first = self.loader.seen.get(name)
        if first is None:
            self.loader.seen[name] = (self.file, self.doc)
            return
        line, column = first[1].where(("metadata", "name"))
        self.problem(
            ("metadata", "name"),
            f"duplicate rule name (first defined at {first[0]}:{line}:{column})",
        )

    def build(self, document: RuleDocument) -> Rule | None:
        spec = document.spec
        kind = spec.source.kind
        context = {
            "name": document.metadata.name,
            "namespace": spec.workflow.namespace,
            "template": spec.workflow.template,
            "labels": dict(document.metadata.labels),
        }
        extra: dict[str, Any] = {}
        try:
            if kind == "oss":
                extra = self.oss_parts(spec.source.oss)
            elif kind == "cron":
                extra = self.cron_parts(spec.source.cron)
        except _Failed:
            return None
        pattern = expr = None
        if spec.filter and spec.filter.pattern is not None:
            try:
                pattern = self.loader.memo("pattern", spec.filter.pattern, compile_pattern)
            except PatternError as exc:
                self.problem(("spec", "filter", "pattern", *exc.path), f"filter.pattern: {exc}")
        if spec.filter and spec.filter.expr is not None:
            try:
                expr = self.loader.memo("expr", spec.filter.expr, compile_expression)
            except ExpressionError as exc:
                self.problem(("spec", "filter", "expr"), f"filter.expr: {exc}")
        parameters = tuple(self.parameters(spec.workflow.parameters))
        idempotency = None
        if spec.idempotencyKey is not None:
            idempotency = self.template(("spec", "idempotencyKey"), spec.idempotencyKey)
        self.check_labels(document)
        if self.failed:
            return None
        return Rule(
            name=document.metadata.name,
            file=self.file,
            index=self.doc.index,
            kind=kind,
            document=document,
            pattern=pattern,
            expr=expr,
            parameters=parameters,
            idempotency_key=idempotency,
            generate_name=(
                spec.workflow.generateName or default_generate_name(document.metadata.name)
            ),
            context=context,
            **extra,
        )

    def parameters(self, raw: dict[str, Any]) -> Iterator[tuple[str, Template]]:
        for name, value in raw.items():
            path = ("spec", "workflow", "parameters", name)
            if not name or not re.match(r"^[A-Za-z0-9_.-]+$", name):
                self.problem(path, f"parameter name {name!r} is not valid", key=True)
                continue
            text = _scalar_text(value)
            if text is None:
                self.problem(path, f"parameters.{name}: must be a string, number or boolean")
                continue
            template = self.template(path, text)
            if template is not None:
                yield name, template

    def template(self, path: Path, source: str) -> Template | None:
        field_name = _dotted(path[1:])
        try:
            template = self.loader.engine.compile(source)
        except TemplateError as exc:
            self.problem(path, f"{field_name}: {exc}")
            return None
        unknown = template.variables - TEMPLATE_SCOPE
        if unknown:
            self.problem(
                path,
                f"{field_name}: unknown name(s) {', '.join(sorted(unknown))} "
                "(templates see only event and rule)",
            )
            return None
        return template

    def oss_parts(self, oss: Any) -> dict[str, Any]:
        base = ("spec", "source", "oss")
        parts: dict[str, Any] = {"event_types": self.event_types(oss.events)}
        if oss.key is not None:
            checks: list[Predicate] = []
            for op, operand in oss.key.items():
                try:
                    checks.append(self.loader.memo("leaf", [{op: operand}], match_leaf))
                except PatternError as exc:
                    self.problem((*base, "key", op), f"source.oss.key.{op}: {exc}")
            if isinstance(oss.key.get("prefix"), str):
                parts["key_prefix"] = oss.key["prefix"]
            parts["key_filter"] = _all(checks)
        if self.failed:
            raise _Failed
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
                    ("spec", "source", "oss", "events", i),
                    f"source.oss.events[{i}]: {name!r} is not an OSS event name "
                    "(e.g. ObjectCreated:PutObject, ObjectCreated:*, oss:ObjectRemoved:*)",
                )
            elif bare.endswith("*"):
                prefixes.append(bare[:-1])
            else:
                exact.add(bare)
        frozen, starts = frozenset(exact), tuple(prefixes)
        return lambda t: t in frozen or (bool(starts) and t.startswith(starts))

    def cron_parts(self, cron: Any) -> dict[str, Any]:
        base = ("spec", "source", "cron")
        schedules = []
        for i, text in enumerate(cron.schedules):
            try:
                schedules.append(compile_schedule(text))
            except ScheduleError as exc:
                self.problem((*base, "schedules", i), f"source.cron.schedules[{i}]: {exc}")
        try:
            compile_timezone(cron.timezone)
        except ScheduleError as exc:
            self.problem((*base, "timezone"), f"source.cron.timezone: {exc}")
        if self.failed:
            raise _Failed
        return {"schedules": tuple(schedules)}

    def check_labels(self, document: RuleDocument) -> None:
        workflow = document.spec.workflow
        for where, table in (("labels", workflow.labels), ("annotations", workflow.annotations)):
            for key in table:
                if not _label_key(key):
                    self.problem(
                        ("spec", "workflow", where, key),
                        f"workflow.{where}: {key!r} is not a valid Kubernetes key",
                        key=True,
                    )
        for key, value in workflow.labels.items():
            if len(value) > 63 or not _LABEL_VALUE.match(value):
                self.problem(
                    ("spec", "workflow", "labels", key),
                    f"workflow.labels.{key}: {value!r} is not a valid label value",
                )


def default_generate_name(rule: str) -> str:
    """The rule's name and a dash, cut to fit `generateName`'s limit."""
    return f"{rule[: GENERATE_NAME_MAX - 1].rstrip('-')}-"


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


def _dotted(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _always(_: Any) -> bool:
    return True


def _all(checks: Sequence[Predicate]) -> Predicate:
    if len(checks) == 1:
        return checks[0]
    frozen = tuple(checks)
    return lambda value: all(check(value) for check in frozen)


__all__ = ["DNS1123_LABEL", "load_rules", "rule_files"]
