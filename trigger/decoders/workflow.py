"""Finished Argo Workflows as Events: built by the `workflow` source from the objects it
lists and watches, or read from a `{"workflow": WORKFLOW}` event file.

A finished Workflow's id is `uid:phase`, so the same completion seen twice (a re-list, a
restart, a second replica) is the same event and names the same Workflows. Arguments and
output parameters become maps from name to value; `triggeredBy` is the event id trigger
wrote on the Workflow when it created it ("" for a Workflow trigger did not create).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from trigger.decoders._common import as_mapping, at, req_mapping
from trigger.errors import DecodeError
from trigger.events import ANNOTATION_EVENT_ID, Event, parse_time, workflow_event_id

FINAL_PHASES: Final = frozenset({"Succeeded", "Failed", "Error"})
LABEL_COMPLETED: Final = "workflows.argoproj.io/completed"  # "true" once a Workflow finished
LABEL_PHASE: Final = "workflows.argoproj.io/phase"
LABEL_TEMPLATE: Final = "workflows.argoproj.io/workflow-template"


def phase_of(obj: Mapping[str, Any]) -> str:
    status = obj.get("status")
    phase = status.get("phase") if isinstance(status, Mapping) else None
    return phase if isinstance(phase, str) else ""


def is_finished(obj: Mapping[str, Any]) -> bool:
    return phase_of(obj) in FINAL_PHASES


def _parameters(holder: Any) -> dict[str, str]:
    """`{parameters: [{name, value}]}` → `{name: value}`; a value-less parameter is ""."""
    params = holder.get("parameters") if isinstance(holder, Mapping) else None
    found: dict[str, str] = {}
    for param in params if isinstance(params, list) else []:
        if isinstance(param, Mapping) and isinstance(param.get("name"), str):
            value = param.get("value")
            found[param["name"]] = "" if value is None else str(value)
    return found


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _template(spec: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    ref = spec.get("workflowTemplateRef")
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return name if isinstance(name, str) else labels.get(LABEL_TEMPLATE, "")


def workflow_event(obj: Mapping[str, Any], *, where: str = "workflow") -> Event:
    """The Event for a finished Workflow object (DecodeError when it has not finished or
    lacks its identity)."""
    meta = req_mapping(obj, "metadata", where)
    name, namespace, uid = (_text(meta.get(k)) for k in ("name", "namespace", "uid"))
    if not (name and namespace and uid):
        raise DecodeError("a Workflow needs metadata.name, namespace and uid", where=where)
    phase = phase_of(obj)
    if phase not in FINAL_PHASES:
        raise DecodeError(
            f"status.phase {phase!r} is not a final phase ({', '.join(sorted(FINAL_PHASES))})",
            where=at(where, "status"),
        )
    status = as_mapping(obj.get("status"), at(where, "status"))
    found = obj.get("spec")
    spec: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    labels, annotations = _strings(meta.get("labels")), _strings(meta.get("annotations"))
    finished = _text(status.get("finishedAt"))
    fields: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": uid,
        "phase": phase,
        "template": _template(spec, labels),
        "labels": labels,
        "annotations": annotations,
        "parameters": _parameters(spec.get("arguments")),
        "outputs": _parameters(status.get("outputs")),
        "startedAt": _text(status.get("startedAt")),
        "finishedAt": finished,
        "message": _text(status.get("message")),
        "triggeredBy": annotations.get(ANNOTATION_EVENT_ID, ""),
    }
    return Event(
        id=workflow_event_id(uid, phase),
        source="workflow",
        type=f"workflow.{phase}",
        subject=f"{namespace}/{name}",
        time=_time(finished, meta, where),
        data=dict(obj),
        fields=fields,
    )


def _time(finished: str, meta: Mapping[str, Any], where: str) -> datetime:
    """When it finished; a Workflow without `finishedAt` counts from its creation."""
    text = finished or _text(meta.get("creationTimestamp"))
    if not text:
        raise DecodeError("a finished Workflow needs status.finishedAt", where=where)
    return parse_time(text, where=at(where, "status.finishedAt"))


def decode_workflow_file(obj: Mapping[str, Any]) -> Event:
    """Decode `{"workflow": WORKFLOW}`: a finished Workflow object as the API returns it."""
    return workflow_event(req_mapping(as_mapping(obj, "$"), "workflow", ""), where="workflow")
