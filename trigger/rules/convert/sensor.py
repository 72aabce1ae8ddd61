"""Argo Events `Sensor` (with its `EventSource`s) → rules, and the WorkflowTemplates they need.

Each trigger that creates an Argo Workflow (`argoWorkflow` with `operation: submit`, or
`k8s` creating a `Workflow`) becomes one rule per dependency that can fire it alone: the
only dependency, or each side of an `||` in `conditions`. Dependencies that must all have
happened (`&&`, the default for several) need a gate, which trigger does not have yet:
such triggers are reported, not converted. The inline Workflow's spec becomes a
WorkflowTemplate; the trigger's `parameters` become the rule's templated parameters.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Final

from trigger.rules.convert.eventsources import SourcePlan, plan
from trigger.rules.convert.filters import dependency_filter
from trigger.rules.convert.parameters import Target, target_of, values_for
from trigger.rules.convert.result import (
    Conversion,
    Origin,
    dns_name,
    go_duration_seconds,
    literal,
    namespace_of,
    rule_document,
    seconds_text,
    workflow_template,
)
from trigger.rules.model import DNS1123_SUBDOMAIN, GENERATE_NAME_MAX

Sources = dict[tuple[str, str], tuple[dict[str, Any], Origin]]
_UNIT_SECONDS: Final = {"Second": 1.0, "Minute": 60.0, "Hour": 3600.0}


def convert(sensor: dict[str, Any], origin: Origin, sources: Sources) -> Conversion:
    out = Conversion()
    spec: dict[str, Any] = sensor.get("spec") or {}
    deps = {str(d.get("name")): d for d in spec.get("dependencies") or []}
    plans: dict[str, tuple[SourcePlan, Origin] | None] = {}
    for index, trigger in enumerate(spec.get("triggers") or []):
        _trigger(trigger, f"spec.triggers[{index}]", deps, plans, sources, origin=origin, out=out)
    for key in sorted(set(spec) - {"dependencies", "triggers"}):
        out.note(
            origin,
            f"spec.{key}",
            "dropped",
            "the Sensor's own deployment settings "
            "belong to trigger's deployment (the Helm chart: replicas, service account "
            "and RBAC to create Workflows)",
        )
    if out.rules:
        out.converted.append(origin)
    else:
        out.skipped.append(origin)
    return out


def _plan_for(
    dep: dict[str, Any], sources: Sources, origin: Origin, out: Conversion
) -> tuple[SourcePlan, Origin] | None:
    es_name, event = str(dep.get("eventSourceName")), str(dep.get("eventName"))
    found = sources.get((origin.namespace or "", es_name)) or next(
        (v for (_, n), v in sources.items() if n == es_name), None
    )
    if found is None:
        out.note(
            origin,
            f"spec.dependencies[{dep.get('name')}]",
            "dropped",
            f"EventSource {es_name} is not among the files converted: give its file too",
        )
        return None
    es, es_origin = found
    for kind, entries in (es.get("spec") or {}).items():
        if isinstance(entries, dict) and isinstance(entries.get(event), dict):
            result = plan(kind, event, entries[event], out, es_origin)
            return None if result is None else (result, es_origin)
    out.note(
        origin,
        f"spec.dependencies[{dep.get('name')}]",
        "dropped",
        f"EventSource {es_name} has no event {event}",
    )
    return None


def _trigger(
    trigger: dict[str, Any],
    where: str,
    deps: dict[str, dict[str, Any]],
    plans: dict[str, tuple[SourcePlan, Origin] | None],
    sources: Sources,
    *,
    origin: Origin,
    out: Conversion,
) -> None:
    template: dict[str, Any] = trigger.get("template") or {}
    action = _workflow_action(template, f"{where}.template", origin, out)
    if action is None:
        return
    resource, parameters, action_where = action
    branches = _branches(template.get("conditions"), list(deps), f"{where}.template", origin, out)
    if not branches:
        return
    tname = str(template.get("name") or "trigger")
    base_name = dns_name(origin.name, tname)
    made = len(out.rules)
    workflow, targets, new_template = _workflow(
        resource, parameters, base_name, action_where, origin=origin, out=out
    )
    for key in ("conditionsReset", "parameters"):
        if template.get(key):
            out.note(
                origin,
                f"{where}.template.{key}",
                "dropped",
                "not converted: trigger rules have no trigger-level parameters or condition resets",
            )
    built = _Built(
        tname,
        base_name,
        workflow,
        targets,
        parameters,
        action_where,
        _policies(trigger, where, origin, out),
        len(branches) > 1,
    )
    for dep_name in branches:
        dep = deps.get(dep_name)
        if dep is None:
            out.note(origin, f"{where}.template.conditions", "dropped", f"no dependency {dep_name}")
            continue
        if dep_name not in plans:
            plans[dep_name] = _plan_for(dep, sources, origin, out)
        found = plans[dep_name]
        rule = None if found is None else _rule(built, dep, found[0], origin, out)
        if rule is not None:
            out.rules.append(rule)
    if new_template is not None and len(out.rules) > made:
        out.templates.append(new_template)


@dataclass
class _Built:
    """What one Sensor trigger makes, before it is split per dependency."""

    name: str
    rule_name: str
    workflow: dict[str, Any]
    targets: dict[int, Target]
    parameters: list[dict[str, Any]]
    where: str
    extra: dict[str, Any]
    several: bool


def _rule(
    built: _Built, dep: dict[str, Any], source_plan: SourcePlan, origin: Origin, out: Conversion
) -> dict[str, Any] | None:
    """The rule for one dependency of a trigger; None when its filters do not carry over."""
    dep_name = str(dep.get("name"))
    filter_, complete = dependency_filter(
        dep, source_plan, f"spec.dependencies[{dep_name}]", origin, out
    )
    if not complete:
        out.note(
            origin,
            f"spec.dependencies[{dep_name}].filters",
            "dropped",
            f"trigger "
            f"{built.name}: not converted for this dependency, because a filter above "
            "could not be carried over and the rule would fire for events the original "
            "skipped; write that condition by hand",
        )
        return None
    name = dns_name(origin.name, built.name, dep_name) if built.several else built.rule_name
    workflow = copy.deepcopy(built.workflow)
    values = values_for(
        built.parameters,
        built.targets,
        dep_name,
        source_plan.data,
        built.where,
        origin=origin,
        out=out,
    )
    if values:
        workflow["parameters"] = {**workflow.get("parameters", {}), **values}
    extra = dict(built.extra)
    if source_plan.rate_limit and "rateLimit" not in extra:
        extra["rateLimit"] = source_plan.rate_limit
    return rule_document(name, source_plan.source, workflow, filter_=filter_, extra=extra)


def _workflow_action(
    template: dict[str, Any], where: str, origin: Origin, out: Conversion
) -> tuple[dict[str, Any], list[dict[str, Any]], str] | None:
    """The Workflow the trigger creates, its parameters and its field path; None if none."""
    if "argoWorkflow" in template:
        action = template["argoWorkflow"] or {}
        where = f"{where}.argoWorkflow"
        operation = action.get("operation", "submit")
        if operation != "submit":
            out.note(
                origin,
                f"{where}.operation",
                "dropped",
                f"{operation}: trigger only creates Workflows",
            )
            return None
        if action.get("args"):
            out.note(origin, f"{where}.args", "dropped", "argo CLI arguments have no equivalent")
    elif "k8s" in template:
        action = template["k8s"] or {}
        where = f"{where}.k8s"
        if action.get("operation", "create") != "create":
            out.note(origin, f"{where}.operation", "dropped", "trigger only creates Workflows")
            return None
    else:
        kinds = ", ".join(k for k in template if k not in ("name", "conditions"))
        out.note(
            origin,
            where,
            "dropped",
            f"{kinds} triggers have no equivalent: trigger creates Argo Workflows",
        )
        return None
    resource = (action.get("source") or {}).get("resource")
    if not isinstance(resource, dict) or resource.get("kind") != "Workflow":
        out.note(
            origin,
            f"{where}.source",
            "dropped",
            "only an inline Workflow resource "
            "converts (not a file, URL, ConfigMap, Git or S3 source, nor other kinds)",
        )
        return None
    return resource, list(action.get("parameters") or []), where


def _branches(
    conditions: Any, names: list[str], where: str, origin: Origin, out: Conversion
) -> list[str]:
    """The dependencies that each fire the trigger alone; [] when several must all happen."""
    if not conditions:
        if len(names) > 1:
            out.note(
                origin,
                where,
                "dropped",
                f"all of {', '.join(names)} must happen (AND): "
                "trigger has no gates to join events yet; not converted",
            )
            return []
        return names
    alternatives = [a.strip().strip("()").strip() for a in str(conditions).split("||")]
    if any(re.search(r"&&|[()]", a) or not a for a in alternatives):
        out.note(
            origin,
            f"{where}.conditions",
            "dropped",
            f"{conditions!r} needs several "
            "dependencies together (AND): trigger has no gates to join events yet; "
            "not converted",
        )
        return []
    return alternatives


def _workflow(
    resource: dict[str, Any],
    parameters: list[dict[str, Any]],
    name: str,
    where: str,
    *,
    origin: Origin,
    out: Conversion,
) -> tuple[dict[str, Any], dict[int, Target], dict[str, Any] | None]:
    """The rule's `workflow` block (making a WorkflowTemplate when the Workflow is inline)
    and, per trigger parameter, the Workflow parameter it sets."""
    meta: dict[str, Any] = resource.get("metadata") or {}
    spec: dict[str, Any] = copy.deepcopy(resource.get("spec") or {})
    namespace = str(
        meta.get("namespace")
        or namespace_of(origin, out, f"{where}.source.resource.metadata.namespace")
    )
    workflow: dict[str, Any] = {"template": name, "namespace": namespace}
    prefix = meta.get("generateName")
    if meta.get("name"):
        prefix = f"{meta['name']}-"
        out.note(
            origin,
            f"{where}.source.resource.metadata.name",
            "changed",
            "a fixed name "
            "let Argo Events create one Workflow, ever; trigger names one per event "
            f"({prefix}<hash>)",
        )
    if isinstance(prefix, str) and DNS1123_SUBDOMAIN.match(f"{prefix[:GENERATE_NAME_MAX]}a"):
        workflow["generateName"] = prefix[:GENERATE_NAME_MAX]
    for key in ("labels", "annotations"):
        if meta.get(key):
            workflow[key] = {str(k): str(v) for k, v in meta[key].items()}
    arguments = list((spec.get("arguments") or {}).get("parameters") or [])
    targets: dict[int, Target] = {}
    for index, parameter in enumerate(parameters):
        dest = str(parameter.get("dest") or "")
        target = target_of(
            dest, arguments, spec, index, f"{where}.parameters[{index}]", origin=origin, out=out
        )
        if target is not None:
            targets[index] = target
    template: dict[str, Any] | None = None
    ref = spec.pop("workflowTemplateRef", None)
    if isinstance(ref, dict) and ref.get("name"):
        workflow["template"] = str(ref["name"])
        if ref.get("clusterScope"):
            workflow["clusterScope"] = True
        spec.pop("arguments", None)
        fixed = {str(p["name"]): literal(p["value"]) for p in arguments if "value" in p}
        if fixed:
            workflow["parameters"] = fixed
        if spec:
            workflow["spec"] = spec
    else:
        if arguments:
            spec.setdefault("arguments", {})["parameters"] = arguments
        template = workflow_template(name, namespace, spec)
    return workflow, targets, template


def _policies(
    trigger: dict[str, Any], where: str, origin: Origin, out: Conversion
) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    rate = trigger.get("rateLimit")
    if isinstance(rate, dict) and rate.get("requestsPerUnit"):
        unit = _UNIT_SECONDS.get(str(rate.get("unit") or "Second"), 1.0)
        extra["rateLimit"] = {"perSecond": float(rate["requestsPerUnit"]) / unit, "burst": 1}
    retry = trigger.get("retryStrategy")
    if isinstance(retry, dict):
        steps = int(retry.get("steps") or 1)
        backoff: dict[str, Any] = {}
        seconds = go_duration_seconds(str(retry.get("duration") or ""))
        if seconds:
            backoff["initial"] = seconds_text(seconds)
        if retry.get("factor"):
            backoff["factor"] = max(float(retry["factor"]), 1.0)
        extra["retry"] = {"limit": max(steps - 1, 0), **({"backoff": backoff} if backoff else {})}
        out.note(
            origin,
            f"{where}.retryStrategy",
            "changed",
            "trigger retries only "
            "temporary failures (5xx, 429, timeouts); a rejected Workflow is dead-lettered",
        )
    for key, why in (
        ("policy", "trigger does not watch the created Workflow's labels"),
        ("dlqTrigger", "failed events go to trigger's dead-letter sink (--dead-letter)"),
    ):
        if trigger.get(key):
            out.note(origin, f"{where}.{key}", "dropped", why)
    if "atLeastOnce" in trigger:
        out.note(
            origin,
            f"{where}.atLeastOnce",
            "changed",
            "trigger is always at least "
            "once, and the Workflow's deterministic name makes it exactly once",
        )
    return extra
