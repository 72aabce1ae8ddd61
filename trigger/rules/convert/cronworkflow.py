"""Argo `CronWorkflow` → a WorkflowTemplate (its `workflowSpec`) and a cron rule.

A `workflowSpec` that only refers to a WorkflowTemplate needs no new one: the rule refers
to the same template and passes the same arguments.
"""

from __future__ import annotations

from typing import Any, Final

from trigger.rules.convert.cron import (
    SCHEDULED_PARAMETER,
    cron_source,
    schedules_of,
    uses_scheduled_time,
    with_scheduled_parameter,
)
from trigger.rules.convert.result import (
    Conversion,
    Origin,
    dns_name,
    literal,
    namespace_of,
    rule_document,
    workflow_template,
)

_NO_EQUIVALENT: Final = {
    "successfulJobsHistoryLimit": "trigger keeps no Workflow history of its own; bound it "
    "with the template's spec.ttlStrategy or podGC, or Argo's workflow archive",
    "failedJobsHistoryLimit": "trigger keeps no Workflow history of its own; bound it "
    "with the template's spec.ttlStrategy or podGC, or Argo's workflow archive",
    "when": "trigger has no per-tick condition; the daylight-saving double run it usually "
    "guards against does not happen in trigger, which fires a fixed-time schedule once "
    "per day (README: Daylight-saving time)",
    "stopStrategy": "trigger does not stop a schedule after some runs failed or succeeded; "
    "set source.cron.suspend by hand",
}
_HANDLED: Final = frozenset(
    {
        "schedule",
        "schedules",
        "timezone",
        "concurrencyPolicy",
        "startingDeadlineSeconds",
        "suspend",
        "workflowSpec",
        "workflowMetadata",
    }
)


def convert(obj: dict[str, Any], origin: Origin) -> Conversion:
    out = Conversion()
    spec: dict[str, Any] = obj.get("spec") or {}
    schedules = schedules_of(spec, out, origin)
    if not schedules:
        out.note(origin, "spec.schedules", "dropped", "no schedule trigger can run: not converted")
        out.skipped.append(origin)
        return out
    name = dns_name(origin.name)
    namespace = namespace_of(origin, out)
    cron = cron_source(spec, schedules, out, origin, timezone_key="timezone", missed_default="none")
    workflow: dict[str, Any] = {"template": name, "namespace": namespace}
    _metadata(spec.get("workflowMetadata") or {}, workflow, out, origin)
    _workflow_spec(
        dict(spec.get("workflowSpec") or {}), name, namespace, workflow, out=out, origin=origin
    )
    for key, why in _NO_EQUIVALENT.items():
        if key in spec:
            out.note(origin, f"spec.{key}", "dropped", why)
    for key in sorted(set(spec) - _HANDLED - set(_NO_EQUIVALENT)):
        out.note(origin, f"spec.{key}", "dropped", "not a CronWorkflow field trigger knows")
    out.rules.append(rule_document(name, {"cron": cron}, workflow))
    out.converted.append(origin)
    return out


def _metadata(
    meta: dict[str, Any], workflow: dict[str, Any], out: Conversion, origin: Origin
) -> None:
    for key in ("labels", "annotations"):
        if meta.get(key):
            workflow[key] = {str(k): str(v) for k, v in meta[key].items()}
    for key in sorted(set(meta) - {"labels", "annotations"}):
        out.note(
            origin,
            f"spec.workflowMetadata.{key}",
            "dropped",
            "rule labels and annotations are fixed values",
        )


def _workflow_spec(
    wf_spec: dict[str, Any],
    name: str,
    namespace: str,
    workflow: dict[str, Any],
    *,
    out: Conversion,
    origin: Origin,
) -> None:
    ref = wf_spec.pop("workflowTemplateRef", None)
    if not isinstance(ref, dict) or not ref.get("name"):
        if uses_scheduled_time(wf_spec):
            wf_spec = with_scheduled_parameter(wf_spec)
            workflow["parameters"] = {SCHEDULED_PARAMETER: "{{ event.scheduledTime }}"}
            out.note(
                origin,
                "spec.workflowSpec",
                "changed",
                "{{workflow.scheduledTime}} became the parameter scheduledTime, the tick's "
                "time in RFC 3339 UTC (Argo wrote it with the CronWorkflow zone's offset; "
                "the same instant)",
            )
        out.templates.append(workflow_template(name, namespace, wf_spec))
        return
    workflow["template"] = str(ref["name"])
    if ref.get("clusterScope"):
        workflow["clusterScope"] = True
    arguments = wf_spec.pop("arguments", None) or {}
    parameters: dict[str, str] = {}
    for index, parameter in enumerate(arguments.get("parameters") or []):
        where = f"spec.workflowSpec.arguments.parameters[{index}]"
        if "value" in parameter:
            parameters[str(parameter["name"])] = literal(parameter["value"])
        else:
            out.note(origin, where, "dropped", "only literal parameter values carry over")
    if parameters:
        workflow["parameters"] = parameters
    if arguments.get("artifacts"):
        out.note(
            origin,
            "spec.workflowSpec.arguments.artifacts",
            "dropped",
            "rules pass parameters only; give the artifacts defaults in the template",
        )
    if uses_scheduled_time(wf_spec) or uses_scheduled_time(arguments):
        out.note(
            origin,
            "spec.workflowSpec",
            "manual",
            "{{workflow.scheduledTime}} is set only for Workflows of a CronWorkflow; pass "
            "the tick as a parameter: '{{ event.scheduledTime }}'",
        )
    if wf_spec:
        workflow["spec"] = wf_spec
