"""`trigger convert`: job definitions written for something else → trigger rules.

One reader per kind of input (DESIGN §9) — `cronworkflow` (Argo CronWorkflow), `cronjob`
(Kubernetes CronJob), `sensor` with `eventsources` (Argo Events) — each producing the same
intermediate (`result.Conversion`: WorkflowTemplates, rules, a report), and one writer
(`writer`). Pure: the caller reads the files; nothing here touches a network or a disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

import yaml

from trigger.rules.convert import cronjob, cronworkflow, sensor
from trigger.rules.convert.result import Conversion, Note, Origin, unique_rule_names

__all__ = ["Conversion", "InputError", "Note", "Origin", "convert", "read_objects"]

_PASSED_THROUGH = ("WorkflowTemplate", "ClusterWorkflowTemplate")


class InputError(ValueError):
    """A file that is not YAML, or a document that is not an object."""


def read_objects(text: str, file: str) -> list[tuple[dict[str, Any], Origin]]:
    """The Kubernetes objects in one YAML text (a `List`'s items too), with their origin."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise InputError(f"{file}: not YAML: {exc}") from exc
    objects: list[tuple[dict[str, Any], Origin]] = []
    for document in documents:
        items = (
            document.get("items")
            if isinstance(document, dict) and document.get("kind") == "List"
            else [document]
        )
        for item in items or []:
            if not isinstance(item, dict):
                raise InputError(f"{file}: a document is not a Kubernetes object")
            meta = item.get("metadata") or {}
            origin = Origin(
                file,
                str(item.get("kind")),
                str(meta.get("name") or "unnamed"),
                meta.get("namespace"),
            )
            objects.append((item, origin))
    return objects


# One reader per kind of input; a new kind is a module and a line here.
Reader = Callable[[dict[str, Any], Origin, sensor.Sources], Conversion]
READERS: Final[dict[str, Reader]] = {
    "CronWorkflow": lambda obj, origin, _: cronworkflow.convert(obj, origin),
    "CronJob": lambda obj, origin, _: cronjob.convert(obj, origin),
    "Sensor": sensor.convert,
}


def convert(objects: Iterable[tuple[dict[str, Any], Origin]]) -> Conversion:
    """Convert every object it has a reader for; the others are in the report."""
    objects = list(objects)
    sources: sensor.Sources = {
        (o.namespace or "", o.name): (obj, o) for obj, o in objects if o.kind == "EventSource"
    }
    out = Conversion()
    for obj, origin in objects:
        reader = READERS.get(origin.kind)
        if reader is not None:
            out.extend(reader(obj, origin, sources))
        elif origin.kind in _PASSED_THROUGH:
            out.note(origin, "", "manual", "already a WorkflowTemplate: apply it as it is")
        elif origin.kind != "EventSource":  # read through the Sensors that use them
            out.note(origin, "", "dropped", f"no reader for kind {origin.kind}")
            out.skipped.append(origin)
    used = {
        str(dep.get("eventSourceName"))
        for obj, origin in objects
        if origin.kind == "Sensor"
        for dep in (obj.get("spec") or {}).get("dependencies") or []
    }
    for _, origin in sources.values():
        if origin.name not in used:
            out.note(
                origin,
                "",
                "dropped",
                "no Sensor among the inputs uses it; give the Sensor's file too",
            )
    unique_rule_names(out)
    return out
