"""The intermediate every reader produces (DESIGN §9): templates, rules and a report.

A reader turns one kind of job definition into plain documents — WorkflowTemplates and
trigger rules as the YAML a user would write — and says, per source object and field
path, what it could not carry over and what it carried over with a different meaning.
The writer (`writer.py`) is the only place that decides how they are laid out.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

Severity = Literal["dropped", "changed", "manual"]
_INVALID: Final = re.compile(r"[^a-z0-9-]+")
MAX_NAME: Final = 63


@dataclass(frozen=True)
class Origin:
    """Where a source object came from: `kind/namespace/name` in a file."""

    file: str
    kind: str
    name: str
    namespace: str | None = None

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where} ({self.file})"


@dataclass(frozen=True)
class Note:
    """One thing the report says about a field of a source object.

    `dropped`: it has no equivalent and is not carried over; `changed`: it is carried over
    with a difference the user should know; `manual`: the user must do something by hand
    (create a Secret, configure a Kafka cluster) for the converted rule to work."""

    origin: Origin
    path: str
    severity: Severity
    message: str


@dataclass
class Conversion:
    """What the readers made of a set of source objects."""

    templates: list[dict[str, Any]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    converted: list[Origin] = field(default_factory=list)
    skipped: list[Origin] = field(default_factory=list)

    def note(self, origin: Origin, path: str, severity: Severity, message: str) -> None:
        note = Note(origin, path, severity, message)
        if note not in self.notes:  # an EventSource used by several triggers says it once
            self.notes.append(note)

    def extend(self, other: Conversion) -> None:
        self.templates.extend(other.templates)
        self.rules.extend(other.rules)
        for note in other.notes:
            self.note(note.origin, note.path, note.severity, note.message)
        self.converted.extend(other.converted)
        self.skipped.extend(other.skipped)


def namespace_of(origin: Origin, out: Conversion, path: str = "metadata.namespace") -> str:
    """The object's namespace; `default`, said in the report, when the file has none."""
    if origin.namespace:
        return origin.namespace
    out.note(
        origin,
        path,
        "changed",
        "not set: the rule creates Workflows in namespace "
        "default; set workflow.namespace to where the original ran",
    )
    return "default"


def unique_rule_names(conversion: Conversion) -> None:
    """Rule names are unique in a rule set: a repeated one (two namespaces' CronWorkflows
    of one name) takes its namespace, then a number."""
    seen: set[str] = set()
    for rule in conversion.rules:
        name = original = rule["metadata"]["name"]
        if name in seen:
            name = dns_name(original, rule["spec"]["workflow"]["namespace"])
        number = 2
        while name in seen:
            name = dns_name(original, str(number))
            number += 1
        rule["metadata"]["name"] = name
        seen.add(name)


def dns_name(*parts: str, limit: int = MAX_NAME) -> str:
    """A DNS-1123 label made of `parts`; a long one is cut and keeps a short hash of the
    whole, so two long names that share a beginning stay distinct."""
    joined = "-".join(p for p in parts if p)
    name = _INVALID.sub("-", joined.lower()).strip("-") or "converted"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(joined.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def rule_document(
    name: str,
    source: dict[str, Any] | None,
    workflow: dict[str, Any],
    *,
    filter_: dict[str, Any] | None = None,
    gate: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A `trigger/v1` Rule document (of a `source`, or a `gate`), keys in the order the
    README shows them."""
    spec: dict[str, Any] = {"gate": gate} if source is None else {"source": source}
    if filter_:
        spec["filter"] = filter_
    spec["workflow"] = workflow
    spec.update(extra or {})
    metadata: dict[str, Any] = {"name": name}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "trigger/v1", "kind": "Rule", "metadata": metadata, "spec": spec}


def workflow_template(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def go_duration_seconds(value: Any) -> float | None:
    """A Go duration (`10s`, `1h30m`, `500ms`) in seconds; None when it is not one."""
    if not isinstance(value, str) or not value:
        return None
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * units[u] for n, u in parts)


def seconds_text(seconds: float) -> str:
    """Seconds as a trigger duration string (`90s`, `2h`)."""
    whole = int(seconds)
    if whole == seconds and whole % 3600 == 0 and whole:
        return f"{whole // 3600}h"
    if whole == seconds and whole % 60 == 0 and whole:
        return f"{whole // 60}m"
    return f"{whole}s" if whole == seconds else f"{int(seconds * 1000)}ms"


def literal(value: Any) -> str:
    """A fixed value as a rule template: Argo's own `{{...}}` placeholders pass through."""
    text = value if isinstance(value, str) else json.dumps(value)
    if "{{" in text or "{%" in text or "{#" in text:
        return "{% raw %}" + text.replace("{% endraw %}", "") + "{% endraw %}"
    return text
