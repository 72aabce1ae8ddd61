"""Whether rules and rendered Workflows fit their templates (pure: no I/O).

`check_rules` runs at load time: a rule's template must exist, every parameter without a
default must be supplied, a parameter the template does not declare is a warning, and a
literal value must be in the enum. A `workflow` rule (chaining) may only render the
`event.outputs` that each of its source's WorkflowTemplates declares, where the catalog
knows them. `check_rendered` runs at submit time on the rendered
Workflow's parameters; a template not (yet) in a synced catalog is `TemplateMissing`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from trigger.errors import TemporarySubmitError
from trigger.rules.router import RuleSet
from trigger.rules.rule import Rule
from trigger.submit.templates.model import (
    TemplateInfo,
    TemplateKey,
    TemplateParameter,
    scalar_text,
)

TEMPLATE_MISSING_GRACE: Final = 300.0
"""Seconds a submitter should keep retrying `TemplateMissing` before dead-lettering."""

Severity = Literal["error", "warning"]


class TemplateLookup(Protocol):
    """What the checks need from a catalog."""

    @property
    def synced(self) -> bool: ...

    def get(self, namespace: str, name: str, cluster_scope: bool) -> TemplateInfo | None: ...


@dataclass(frozen=True)
class TemplateProblem:
    """A rule that does not fit its template; `field` is dotted under `spec`."""

    rule: str
    file: str
    index: int
    field: str  # "workflow.template", "workflow.parameters" or "workflow.parameters.<name>"
    message: str
    severity: Severity = "error"


class TemplateMissing(TemporarySubmitError):
    """The Workflow's template is not (yet) in the catalog.

    Temporary because templates and rules are often deployed together and the template
    may arrive a little later. The submitter should retry it for a bounded grace period
    (configurable, default `TEMPLATE_MISSING_GRACE`, 5 minutes) counted from the first
    attempt, and then dead-letter the event, so a rule whose template never comes does
    not hold its source for ever.
    """

    def __init__(self, key: TemplateKey) -> None:
        super().__init__(f"{key} not found")
        self.key = key


def check_rules(rules: RuleSet | Iterable[Rule], catalog: TemplateLookup) -> list[TemplateProblem]:
    """Every problem between the rules and the templates they instantiate."""
    found: list[TemplateProblem] = []
    for rule in rules.rules if isinstance(rules, RuleSet) else rules:
        found.extend(check_rule(rule, catalog))
    return found


def check_rule(rule: Rule, catalog: TemplateLookup) -> list[TemplateProblem]:
    workflow = rule.workflow
    key = TemplateKey.of(workflow.namespace, workflow.template, workflow.clusterScope)
    info = catalog.get(key.namespace, key.name, key.cluster_scope)

    def problem(where: str, message: str, severity: Severity = "error") -> TemplateProblem:
        return TemplateProblem(rule.name, rule.file, rule.index, where, message, severity)

    found = _upstream_outputs(rule, catalog, problem)
    if info is None:
        return [*found, problem("workflow.template", f"{key} not found")]
    supplied = dict(rule.parameters)
    missing = [p.name for p in info.parameters if not p.has_default and p.name not in supplied]
    if missing:
        found.append(
            problem(
                "workflow.parameters",
                f"workflow.parameters: missing "
                f"{', '.join(missing)}, required by {key} (no default)",
            )
        )
    for name, template in rule.parameters:
        where = f"workflow.parameters.{name}"
        declared = info.parameter(name)
        if declared is None:
            found.append(
                problem(where, f"{where}: {key} declares no parameter {name!r}", "warning")
            )
        elif declared.enum is not None and template.is_literal:
            refused = _refused(declared, template.render({}), key)
            if refused:
                found.append(problem(where, f"{where}: {refused}"))
    return found


def _upstream_outputs(
    rule: Rule, catalog: TemplateLookup, problem: Callable[[str, str], TemplateProblem]
) -> list[TemplateProblem]:
    """`event.outputs.NAME` in a chained rule's templates that an upstream WorkflowTemplate
    the catalog knows does not declare: that render would fail for its every Workflow."""
    if rule.kind != "workflow" or not rule.finished.templates or not rule.finished.namespace:
        return []
    used = [(f"workflow.parameters.{name}", t) for name, t in rule.parameters]
    if rule.idempotency_key is not None:
        used.append(("idempotencyKey", rule.idempotency_key))
    found = []
    for upstream in rule.finished.templates:
        info = catalog.get(rule.finished.namespace, upstream, False)
        if info is None or info.outputs is None:
            continue
        for where, template in used:
            for path in sorted(template.paths, key=str):
                if path[:2] == ("event", "outputs") and len(path) > 2:
                    name = path[2]
                    if isinstance(name, str) and name not in info.outputs:
                        declared = ", ".join(info.outputs) or "none"
                        found.append(
                            problem(
                                where,
                                f"{where}: event.outputs.{name}: {info.key} declares no "
                                f"output parameter {name!r} (it declares: {declared})",
                            )
                        )
    return found


def _refused(parameter: TemplateParameter, value: str, key: TemplateKey) -> str | None:
    if parameter.enum is None or value in parameter.enum:
        return None
    allowed = ", ".join(parameter.enum)
    return f"{value!r} is not allowed by {key} (enum: {allowed})"


def check_rendered(workflow: Mapping[str, Any], catalog: TemplateLookup) -> str | None:
    """Why a rendered Workflow's parameters break its template's enums, or None.

    Raises `TemplateMissing` when the catalog is synced and the template is not in it;
    answers None while the catalog is not synced (the cache must not hold submissions up).
    """
    spec = workflow.get("spec") or {}
    ref = spec.get("workflowTemplateRef") or {}
    if not ref.get("name") or not catalog.synced:
        return None
    namespace = (workflow.get("metadata") or {}).get("namespace") or "default"
    key = TemplateKey.of(namespace, ref["name"], bool(ref.get("clusterScope")))
    info = catalog.get(key.namespace, key.name, key.cluster_scope)
    if info is None:
        raise TemplateMissing(key)
    enums = info.enums
    if not enums:
        return None
    refusals: list[str] = []
    for given in (spec.get("arguments") or {}).get("parameters") or []:
        name, value = str(given.get("name")), scalar_text(given.get("value"))
        declared = enums.get(name)
        refused = None if declared is None or value is None else _refused(declared, value, key)
        if refused:
            refusals.append(f"parameter {name}: {refused}")
    return "; ".join(refusals) or None
