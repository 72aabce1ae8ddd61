"""Label and field selectors: parsed as the API server parses them, matched on objects."""

from __future__ import annotations

import re
from typing import Any, Final

from trigger.testing.kubeapi.errors import ApiStatusError
from trigger.testing.kubeapi.resources import JSON

Selector = tuple[tuple[str, str, frozenset[str]], ...]

_LABEL_REQUIREMENT: Final = re.compile(
    r"\s*(?:!\s*(?P<absent>[\w./-]+)|(?P<key>[\w./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)\s*"
)
_FIELD_REQUIREMENT: Final = re.compile(r"\s*(?P<key>[\w.]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*?)\s*")
_FIELDS: Final = frozenset({"metadata.name", "metadata.namespace"})


def _split_requirements(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str) -> Selector:
    """Parse a label selector (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`)."""
    requirements = []
    for part in _split_requirements(text):
        found = _LABEL_REQUIREMENT.fullmatch(part)
        if found is None:
            raise ApiStatusError(400, f"unable to parse requirement: {part!r}")
        if found["absent"]:
            requirements.append((found["absent"], "absent", frozenset[str]()))
        elif found["op"]:
            op = "notin" if found["op"] == "!=" else "in"
            requirements.append((found["key"], op, frozenset({found["value"]})))
        elif found["setop"]:
            values = frozenset(v.strip() for v in found["values"].split(","))
            requirements.append((found["key"], found["setop"], values))
        else:
            requirements.append((found["key"], "exists", frozenset()))
    return tuple(requirements)


def parse_field_selector(text: str) -> Selector:
    """Parse a field selector on `metadata.name` and `metadata.namespace`."""
    requirements = []
    for part in _split_requirements(text):
        found = _FIELD_REQUIREMENT.fullmatch(part)
        if found is None:
            raise ApiStatusError(400, f"invalid field selector: {part!r}")
        if found["key"] not in _FIELDS:
            raise ApiStatusError(400, f"field label not supported: {found['key']}")
        op = "notin" if found["op"] == "!=" else "in"
        requirements.append((found["key"], op, frozenset({found["value"]})))
    return tuple(requirements)


def selector_matches(selector: Selector, values: dict[str, Any]) -> bool:
    """Whether a label map (or a field map) satisfies every requirement of a selector."""
    for key, op, wanted in selector:
        present = key in values
        if (
            (op == "exists" and not present)
            or (op == "absent" and present)
            or (op == "in" and (not present or values[key] not in wanted))
            or (op == "notin" and present and values[key] in wanted)
        ):
            return False
    return True


def object_matches(obj: JSON, labels: Selector, fields: Selector) -> bool:
    meta = obj["metadata"]
    if labels and not selector_matches(labels, meta.get("labels") or {}):
        return False
    fieldset = {"metadata.name": meta["name"], "metadata.namespace": meta.get("namespace", "")}
    return not fields or selector_matches(fields, fieldset)
