"""An Argo Events dependency's `filters` → a rule's `filter` (pattern and CEL).

Data filters go into the EventBridge pattern where they map exactly and everything is
ANDed; the rest, and the `exprs`, become one CEL expression that keeps Argo Events'
`and`/`or` operators. A filter that cannot be carried over is reported, and the caller
keeps the rule back: without it the rule would fire for events the original skipped.
"""

from __future__ import annotations

from typing import Any

from trigger.rules.convert.eventdata import (
    Condition,
    DataMap,
    Mapped,
    cel_path,
    data_condition,
    gjson_path,
    govaluate_to_cel,
)
from trigger.rules.convert.eventsources import SourcePlan
from trigger.rules.convert.result import Conversion, Origin


def dependency_filter(
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
