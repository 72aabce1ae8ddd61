"""Argo Events `Sensor` (with its `EventSource`s) → rules, and the WorkflowTemplates they need.

Each trigger that creates an Argo Workflow (`argoWorkflow` with `operation: submit`, or
`k8s` creating a `Workflow`) becomes one rule per way its `conditions` can fire it
(`conditions.py`): a dependency that fires it alone becomes a plain rule; dependencies
that must all have happened (`&&`, the default for several) become one gate rule with a
member per dependency. The inline Workflow's spec becomes a WorkflowTemplate; the
trigger's `parameters` become the rule's templated parameters.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from trigger.rules.convert.conditions import Alternative, ConditionError, alternatives
from trigger.rules.convert.eventdata import DataMap
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
# Argo Events waits for an AND's missing dependencies forever; a gate needs a window.
GATE_WINDOW: Final = "24h"


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
    _reported_trigger_fields(
        template, f"{where}.template", any(len(b) > 1 for b in branches), origin, out
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
        f"{where}.template" + (".conditions" if template.get("conditions") else ""),
    )
    for branch in branches:
        missing = [d for d in branch if d not in deps]
        if missing:
            out.note(
                origin,
                f"{where}.template.conditions",
                "dropped",
                f"no dependency {', '.join(missing)}",
            )
            continue
        for dep_name in branch:
            if dep_name not in plans:
                plans[dep_name] = _plan_for(deps[dep_name], sources, origin, out)
        if len(branch) == 1:
            found = plans[branch[0]]
            rule = None if found is None else _rule(built, deps[branch[0]], found[0], origin, out)
        else:
            rule = _gate_rule(built, [deps[d] for d in branch], plans, origin, out)
        if rule is not None:
            out.rules.append(rule)
    if new_template is not None and len(out.rules) > made:
        out.templates.append(new_template)


def _reported_trigger_fields(
    template: dict[str, Any], where: str, gated: bool, origin: Origin, out: Conversion
) -> None:
    """Say what becomes of a trigger's own `parameters` and `conditionsReset`."""
    if template.get("parameters"):
        out.note(
            origin,
            f"{where}.parameters",
            "dropped",
            "not converted: trigger rules have no trigger-level parameters",
        )
    resets = template.get("conditionsReset")
    if resets:
        crons = [str((r.get("byTime") or {}).get("cron")) for r in resets if isinstance(r, dict)]
        instead = (
            f"an open gate is forgotten {GATE_WINDOW} after its first event instead (gate.window)"
            if gated
            else "trigger rules have no condition resets"
        )
        out.note(
            origin,
            f"{where}.conditionsReset",
            "dropped",
            f"resetting the waiting dependencies by cron ({', '.join(crons)}) is not "
            f"converted: {instead}",
        )


@dataclass
class _Built:
    """What one Sensor trigger makes, before it is split per way of firing it."""

    name: str
    rule_name: str
    workflow: dict[str, Any]
    targets: dict[int, Target]
    parameters: list[dict[str, Any]]
    where: str
    extra: dict[str, Any]
    several: bool
    conditions: str  # the field path the ways to fire it come from


def _rule(
    built: _Built, dep: dict[str, Any], source_plan: SourcePlan, origin: Origin, out: Conversion
) -> dict[str, Any] | None:
    """The rule for one dependency of a trigger; None when its filters do not carry over."""
    dep_name = str(dep.get("name"))
    filter_ = _filter(built, dep, source_plan, origin, out)
    if filter_ is False:
        return None
    name = dns_name(origin.name, built.name, dep_name) if built.several else built.rule_name
    workflow = _with_values(built, {dep_name: (source_plan.data, "event")}, origin, out)
    extra = dict(built.extra)
    if source_plan.rate_limit and "rateLimit" not in extra:
        extra["rateLimit"] = source_plan.rate_limit
    return rule_document(name, source_plan.source, workflow, filter_=filter_ or None, extra=extra)


def _gate_rule(
    built: _Built,
    deps: list[dict[str, Any]],
    plans: dict[str, tuple[SourcePlan, Origin] | None],
    origin: Origin,
    out: Conversion,
) -> dict[str, Any] | None:
    """The gate rule for dependencies that must all happen: one member per dependency
    (count 1, as Argo Events keeps one slot each), a constant key, GATE_WINDOW, drop.
    None when a dependency's source or filters do not carry over."""
    names = [str(d.get("name")) for d in deps]
    where = built.conditions  # `template` itself when all dependencies are implied
    members: dict[str, Any] = {}
    events: dict[str, tuple[DataMap, str]] = {}
    for dep, member in zip(deps, _member_names(names, where, origin, out), strict=True):
        found = plans[str(dep.get("name"))]
        filter_ = None if found is None else _filter(built, dep, found[0], origin, out)
        if found is None or filter_ is False:
            out.note(
                origin,
                where,
                "dropped",
                f"trigger {built.name}: the gate for {' && '.join(names)} is not written, "
                f"because dependency {dep.get('name')} does not carry over (above)",
            )
            return None
        members[member] = {"source": found[0].source, **({"filter": filter_} if filter_ else {})}
        events[str(dep.get("name"))] = (found[0].data, f"gate.members.{member}[0]")
        if found[0].rate_limit:
            out.note(
                origin,
                f"spec.dependencies[{dep.get('name')}]",
                "dropped",
                f"its EventSource's rate limit is not carried over to the gate member "
                f"{member}: gate members have no rate limit of their own",
            )
    name = dns_name(origin.name, built.name, *names) if built.several else built.rule_name
    key = dns_name(origin.name, built.name)
    _gate_notes(names, key, where, origin, out)
    gate = {"key": key, "window": GATE_WINDOW, "onTimeout": "drop", "members": members}
    workflow = _with_values(built, events, origin, out)
    return rule_document(name, None, workflow, gate=gate, extra=built.extra)


def _gate_notes(names: list[str], key: str, where: str, origin: Origin, out: Conversion) -> None:
    together = " && ".join(names)
    out.note(
        origin,
        where,
        "changed",
        f"{together} became one gate rule, one member each: Argo Events keeps one slot per "
        "dependency and fires when all are filled; there is no correlation key, so the "
        f"gate key is the constant {key!r} and events of different batches are grouped by "
        "arrival, as in Argo Events (set gate.key to a field the events share to join them "
        "by batch). A second event of a dependency before the others come is not kept: "
        "the gate keeps the first, where Argo Events' JetStream bus keeps the latest",
    )
    out.note(
        origin,
        where,
        "changed",
        f"Argo Events waits for the missing dependencies forever (unless conditionsReset); "
        f"the gate waits {GATE_WINDOW} after its first event and then drops what came "
        "(gate.window, onTimeout: drop): set them to what your batches need",
    )


def _member_names(names: list[str], where: str, origin: Origin, out: Conversion) -> list[str]:
    """Each dependency's gate member name: a template name (letters, digits, `_`)."""
    members: list[str] = []
    for name in names:
        member = re.sub(r"[^A-Za-z0-9_]", "_", name)
        member = (member if re.match(r"[A-Za-z_]", member) else f"d_{member}")[:63]
        number = 2
        while member in members:
            member = f"{member[:60]}_{number}"
            number += 1
        if member != name:
            out.note(
                origin,
                where,
                "changed",
                f"dependency {name} is the gate member {member} (member names are "
                "template names: gate.members.NAME)",
            )
        members.append(member)
    return members


def _filter(
    built: _Built, dep: dict[str, Any], source_plan: SourcePlan, origin: Origin, out: Conversion
) -> dict[str, Any] | Literal[False] | None:
    """The dependency's filter (None: none); False when one of its filters does not carry
    over, which keeps the dependency's rule or gate member back."""
    dep_name = str(dep.get("name"))
    filter_, complete = dependency_filter(
        dep, source_plan, f"spec.dependencies[{dep_name}]", origin, out
    )
    if complete:
        return filter_
    out.note(
        origin,
        f"spec.dependencies[{dep_name}].filters",
        "dropped",
        f"trigger "
        f"{built.name}: not converted for this dependency, because a filter above "
        "could not be carried over and the rule would fire for events the original "
        "skipped; write that condition by hand",
    )
    return False


def _with_values(
    built: _Built, events: dict[str, tuple[DataMap, str]], origin: Origin, out: Conversion
) -> dict[str, Any]:
    """The rule's `workflow` with the trigger's parameters from these dependencies' events."""
    workflow = copy.deepcopy(built.workflow)
    values = values_for(
        built.parameters, built.targets, events, built.where, origin=origin, out=out
    )
    if values:
        workflow["parameters"] = {**workflow.get("parameters", {}), **values}
    return workflow


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
) -> list[Alternative]:
    """The ways to fire the trigger: each the dependencies that must all have happened
    (several: a gate); [] when `conditions` cannot be written as rules."""
    if not conditions:
        return [tuple(names)] if names else []
    try:
        found = alternatives(str(conditions))
    except ConditionError as exc:
        out.note(
            origin,
            f"{where}.conditions",
            "dropped",
            f"{conditions!r}: {exc}; not converted",
        )
        return []
    if len(found) > 1 and any(len(a) > 1 for a in found):
        out.note(
            origin,
            f"{where}.conditions",
            "changed",
            f"{conditions!r} became one rule per alternative "
            f"({' | '.join(' && '.join(a) for a in found)}), each waiting on its own: "
            "Argo Events resets every dependency when the trigger fires, so an event "
            "that waited for one alternative no longer counts after another fired; here "
            "it still does, until its gate's window ends",
        )
    return found


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
