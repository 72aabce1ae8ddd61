"""A Sensor trigger's `parameters` → the rule's templated Workflow parameters.

Each parameter's `dest` names a Workflow argument (`spec.arguments.parameters.N.value`)
or, in an inline spec, a value inside `spec.templates`, which then reads a new Workflow
parameter. Its `src` (`dataKey`, `dataTemplate`, `contextKey`, `value`) becomes a Jinja
template over trigger's event, applied with its `operation` in order, as Argo Events
applies them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from trigger.rules.convert.eventdata import DataMap, gjson_path, go_template_to_jinja, value_of
from trigger.rules.convert.result import Conversion, Origin, literal

_ARGUMENT_DEST: Final = re.compile(r"^spec\.arguments\.parameters\.(\d+)\.value$")
_CONTEXT: Final = ("id", "type", "source", "subject", "time")


@dataclass
class Target:
    """Where one trigger parameter lands: a Workflow parameter, with its original value."""

    parameter: str
    original: str


def target_of(
    dest: str,
    arguments: list[dict[str, Any]],
    spec: dict[str, Any],
    index: int,
    where: str,
    *,
    origin: Origin,
    out: Conversion,
) -> Target | None:
    match = _ARGUMENT_DEST.match(dest)
    if match and int(match[1]) < len(arguments):
        argument = arguments[int(match[1])]
        return Target(str(argument["name"]), str(argument.get("value", "")))
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
                return Target(name, str(original))
    out.note(
        origin,
        f"{where}.dest",
        "dropped",
        f"{dest}: only Workflow arguments and "
        "values inside an inline spec.templates convert (trigger names Workflows itself "
        "and its labels are fixed)",
    )
    return None


def values_for(
    parameters: list[dict[str, Any]],
    targets: dict[int, Target],
    events: dict[str, tuple[DataMap, str]],
    where: str,
    *,
    origin: Origin,
    out: Conversion,
) -> dict[str, str]:
    """The rule's Workflow parameters, for the dependencies in `events`: each with its
    payload map and where the rule's templates see its event (`event`, or a gate
    member's `gate.members.NAME[0]`)."""
    # Argo Events applies the parameters in order onto the resource, so two that name
    # the same destination build on each other.
    values: dict[str, str] = {}
    for index, parameter in enumerate(parameters):
        target = targets.get(index)
        if target is None:
            continue
        src: dict[str, Any] = parameter.get("src") or {}
        dep = src.get("dependencyName")
        if dep in events:
            data, root = events[dep]
            value = _value(
                src, data, root, f"{where}.parameters[{index}].src", origin=origin, out=out
            )
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
    src: dict[str, Any], data: DataMap, root: str, where: str, *, origin: Origin, out: Conversion
) -> str | None:
    if src.get("useRawData"):
        out.note(
            origin,
            f"{where}.useRawData",
            "changed",
            "objects render as compact JSON, strings as their text",
        )
    if src.get("dataTemplate"):
        rendered, why = go_template_to_jinja(str(src["dataTemplate"]), data, root)
        key = "dataTemplate"
    elif src.get("dataKey"):
        rendered, why = value_of(str(src["dataKey"]), data, root)
        key = "dataKey"
        if rendered is not None and "value" in src and rendered.startswith("{{ "):
            rendered = rendered[:-3] + f" | default({_jinja_string(src['value'])}) }}}}"
    elif src.get("contextKey") in _CONTEXT:
        rendered, key = "{{ " + root + "." + str(src["contextKey"]) + " }}", "contextKey"
        why = (
            "the CloudEvent context is trigger's own event's (its id, type, source, subject, time)"
        )
    elif "value" in src:
        return literal(src["value"])
    elif src.get("contextKey") or src.get("contextTemplate"):
        rendered, why, key = None, "this context field has no equivalent", "contextKey"
    else:
        rendered, key = "{{ " + data.whole_at(root) + " | tojson }}", "dependencyName"
        why = f"the whole event became {data.whole_at(root)} as JSON"
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
