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

from trigger.rules.convert.eventdata import (
    Condition,
    DataMap,
    Mapped,
    cel_path,
    data_condition,
    gjson_path,
    go_template_to_jinja,
    govaluate_to_cel,
    value_of,
)
from trigger.rules.convert.eventsources import SourcePlan, plan
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
_ARGUMENT_DEST: Final = re.compile(r"^spec\.arguments\.parameters\.(\d+)\.value$")
_UNIT_SECONDS: Final = {"Second": 1.0, "Minute": 60.0, "Hour": 3600.0}
_CONTEXT: Final = ("id", "type", "source", "subject", "time")


@dataclass
class _Target:
    """Where one trigger parameter lands: a Workflow parameter, with its original value."""

    parameter: str
    original: str


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
    targets: dict[int, _Target]
    parameters: list[dict[str, Any]]
    where: str
    extra: dict[str, Any]
    several: bool


def _rule(
    built: _Built, dep: dict[str, Any], source_plan: SourcePlan, origin: Origin, out: Conversion
) -> dict[str, Any] | None:
    """The rule for one dependency of a trigger; None when its filters do not carry over."""
    dep_name = str(dep.get("name"))
    filter_, complete = _filter(dep, source_plan, f"spec.dependencies[{dep_name}]", origin, out)
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
    values = _values(
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
) -> tuple[dict[str, Any], dict[int, _Target], dict[str, Any] | None]:
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
    targets: dict[int, _Target] = {}
    for index, parameter in enumerate(parameters):
        dest = str(parameter.get("dest") or "")
        target = _target(
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


def _target(
    dest: str,
    arguments: list[dict[str, Any]],
    spec: dict[str, Any],
    index: int,
    where: str,
    *,
    origin: Origin,
    out: Conversion,
) -> _Target | None:
    match = _ARGUMENT_DEST.match(dest)
    if match and int(match[1]) < len(arguments):
        argument = arguments[int(match[1])]
        return _Target(str(argument["name"]), str(argument.get("value", "")))
    path = gjson_path(dest)
    if path and path[:2] == ("spec", "templates") and "workflowTemplateRef" not in spec:
        parent: Any = spec
        for seg in path[1:-1]:
            try:
                parent = parent[seg]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        leaf: Any = path[-1]
        if (isinstance(parent, dict) and isinstance(leaf, str)) or (
            isinstance(parent, list) and isinstance(leaf, int) and leaf < len(parent)
        ):
            slot: Any = str(leaf) if isinstance(parent, dict) else int(leaf)
            original = parent.get(slot, "") if isinstance(parent, dict) else parent[slot]
            if not isinstance(original, dict | list):
                name = f"param-{index}"
                parent[slot] = "{{workflow.parameters." + name + "}}"
                arguments.append({"name": name, "value": str(original)})
                out.note(
                    origin,
                    f"{where}.dest",
                    "changed",
                    f"{dest} is set through the new Workflow parameter {name}",
                )
                return _Target(name, str(original))
    out.note(
        origin,
        f"{where}.dest",
        "dropped",
        f"{dest}: only Workflow arguments and "
        "values inside an inline spec.templates convert (trigger names Workflows itself "
        "and its labels are fixed)",
    )
    return None


def _values(
    parameters: list[dict[str, Any]],
    targets: dict[int, _Target],
    dep: str,
    data: DataMap,
    where: str,
    *,
    origin: Origin,
    out: Conversion,
) -> dict[str, str]:
    # Argo Events applies the parameters in order onto the resource, so two that name
    # the same destination build on each other.
    values: dict[str, str] = {}
    for index, parameter in enumerate(parameters):
        target = targets.get(index)
        if target is None:
            continue
        src: dict[str, Any] = parameter.get("src") or {}
        if src.get("dependencyName") == dep:
            value = _value(src, data, f"{where}.parameters[{index}].src", origin, out)
        elif "value" in src:  # Argo Events' default when the dependency did not fire
            value = literal(src["value"])
        else:
            continue
        if value is None:
            continue
        current = values.get(target.parameter, literal(target.original))
        operation = parameter.get("operation", "overwrite")
        if operation == "append":
            value = current + value
        elif operation == "prepend":
            value = value + current
        values[target.parameter] = value
    return values


def _value(
    src: dict[str, Any], data: DataMap, where: str, origin: Origin, out: Conversion
) -> str | None:
    if src.get("useRawData"):
        out.note(
            origin,
            f"{where}.useRawData",
            "changed",
            "objects render as compact JSON, strings as their text",
        )
    if src.get("dataTemplate"):
        rendered, why = go_template_to_jinja(str(src["dataTemplate"]), data)
        key = "dataTemplate"
    elif src.get("dataKey"):
        rendered, why = value_of(str(src["dataKey"]), data)
        key = "dataKey"
        if rendered is not None and "value" in src and rendered.startswith("{{ "):
            rendered = rendered[:-3] + f" | default({_jinja_string(src['value'])}) }}}}"
    elif src.get("contextKey") in _CONTEXT:
        rendered, key = "{{ event." + str(src["contextKey"]) + " }}", "contextKey"
        why = (
            "the CloudEvent context is trigger's own event's (its id, type, source, subject, time)"
        )
    elif "value" in src:
        return literal(src["value"])
    elif src.get("contextKey") or src.get("contextTemplate"):
        rendered, why, key = None, "this context field has no equivalent", "contextKey"
    else:
        rendered, key = "{{ " + data.whole + " | tojson }}", "dependencyName"
        why = f"the whole event became {data.whole} as JSON"
    if rendered is None:
        out.note(
            origin, f"{where}.{key}", "dropped", f"{why}; the Workflow keeps the original value"
        )
        return None
    if why:
        out.note(origin, f"{where}.{key}", "changed", why)
    return rendered


def _jinja_string(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _filter(
    dep: dict[str, Any], source_plan: SourcePlan, base: str, origin: Origin, out: Conversion
) -> tuple[dict[str, Any] | None, bool]:
    """The rule's filter, and whether every filter of the dependency was carried over."""
    filters: dict[str, Any] = dep.get("filters") or {}
    where = f"{base}.filters"
    complete = True
    for key in ("context", "time", "script"):
        if filters.get(key):
            complete = False
            out.note(origin, f"{where}.{key}", "dropped", f"{key} filters are not converted")
    if dep.get("transform"):
        out.note(
            origin,
            f"{base}.transform",
            "dropped",
            "jq and Lua transforms have no "
            "equivalent; filters and parameters see the event as it arrived",
        )
    data = source_plan.data
    conditions: list[Condition] = []
    for index, spec in enumerate(filters.get("data") or []):
        condition, why = _data_condition(spec, data)
        if condition is None:
            complete = False
            out.note(origin, f"{where}.data[{index}]", "dropped", str(why))
        else:
            conditions.append(condition)
    exprs: list[str] = []
    for index, spec in enumerate(filters.get("exprs") or []):
        cel, why = _expr_condition(spec, data)
        if cel is None:
            complete = False
            out.note(origin, f"{where}.exprs[{index}]", "dropped", str(why))
        else:
            exprs.append(cel)
    operators = {
        k: str(v or "and").lower() == "or"
        for k, v in (
            ("filters", dep.get("filtersLogicalOperator")),
            ("data", filters.get("dataLogicalOperator")),
            ("exprs", filters.get("exprLogicalOperator")),
        )
    }
    return _combine(conditions, exprs, operators, source_plan.conditions), complete


def _combine(
    conditions: list[Condition], exprs: list[str], either: dict[str, bool], always: list[str]
) -> dict[str, Any] | None:
    """Data conditions in the pattern where they map and everything is ANDed; the rest,
    and the expressions, in one CEL expression with Argo Events' operators."""
    pattern: dict[str, Any] = {}
    conjunctive = not either["filters"] and not either["data"]
    cel_data = [c.cel for c in conditions if not conjunctive or not _add_to_pattern(pattern, c)]
    groups = []
    if cel_data:
        groups.append(_join(cel_data, either["data"]))
    if exprs:
        groups.append(_join(exprs, either["exprs"]))
    parts = [*always, _join(groups, either["filters"])] if groups else list(always)
    result: dict[str, Any] = {}
    if pattern:
        result["pattern"] = pattern
    if parts:
        result["expr"] = _join(parts, False)
    return result or None


def _join(parts: list[str], either: bool) -> str:
    if len(parts) == 1:
        return parts[0]
    return (" || " if either else " && ").join(
        p if p.startswith("(") and p.endswith(")") else f"({p})" for p in parts
    )


def _add_to_pattern(pattern: dict[str, Any], condition: Condition) -> bool:
    """Put the condition in the pattern when it maps exactly and its leaf is still free."""
    if condition.path is None or condition.alternatives is None:
        return False
    if any(isinstance(seg, int) for seg in condition.path):
        return False
    node = pattern
    for seg in condition.path[:-1]:
        child = node.setdefault(str(seg), {})
        if not isinstance(child, dict):
            return False
        node = child
    leaf = str(condition.path[-1])
    if leaf in node:
        return False
    node[leaf] = condition.alternatives
    return True


def _data_condition(spec: dict[str, Any], data: DataMap) -> tuple[Condition | None, str | None]:
    path = gjson_path(str(spec.get("path") or ""))
    mapped = data.translate(path) if path else None
    if not isinstance(mapped, Mapped):
        return None, (
            f"path {spec.get('path')!r} has no equivalent in trigger's event ({data.shape})"
        )
    return data_condition(spec, mapped.path)


def _expr_condition(spec: dict[str, Any], data: DataMap) -> tuple[str | None, str | None]:
    fields: dict[str, str] = {}
    for field in spec.get("fields") or []:
        path = gjson_path(str(field.get("path") or ""))
        mapped = data.translate(path) if path else None
        if not isinstance(mapped, Mapped):
            return None, (
                f"field {field.get('name')}: path {field.get('path')!r} has no equivalent in "
                f"trigger's event ({data.shape})"
            )
        fields[str(field.get("name"))] = cel_path(mapped.path)
    return govaluate_to_cel(str(spec.get("expr") or ""), fields)


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
