"""The one writer: a Conversion → YAML documents, a directory layout and the report."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import yaml

from trigger.rules.convert.result import Conversion, Note, Origin

_SEVERITY = {
    "dropped": "not carried over",
    "changed": "carried over differently",
    "manual": "to do by hand",
}


_ORDER = ("dropped", "manual", "changed")  # what is lost first, what differs last


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (scripts, podSpecPatch) as literal blocks, as people write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def documents(conversion: Conversion) -> str:
    """Every WorkflowTemplate, then every rule, as one multi-document YAML text."""
    return "".join(f"---\n{dump(d)}" for d in (*conversion.templates, *conversion.rules))


def files(conversion: Conversion) -> dict[str, str]:
    """`-o DIR`'s content: `workflowtemplates/NAME.yaml`, `rules/NAME.yaml`, `REPORT.md`."""
    out: dict[str, str] = {}
    for template in conversion.templates:
        meta = template["metadata"]
        out[f"workflowtemplates/{meta['namespace']}-{meta['name']}.yaml"] = dump(template)
    for rule in conversion.rules:
        out[f"rules/{rule['metadata']['name']}.yaml"] = dump(rule)
    out["REPORT.md"] = report(conversion)
    return out


def _by_origin(notes: list[Note]) -> dict[Origin, list[Note]]:
    grouped: dict[Origin, list[Note]] = defaultdict(list)
    for note in notes:
        grouped[note.origin].append(note)
    return grouped


def report(conversion: Conversion) -> str:
    """Markdown: per source object, what was not carried over, what differs, what to do."""
    lines = [
        "# trigger convert report",
        "",
        f"{len(conversion.converted)} object(s) converted into {len(conversion.rules)} "
        f"rule(s) and {len(conversion.templates)} WorkflowTemplate(s); "
        f"{len(conversion.skipped)} not converted.",
    ]
    for origin, notes in _by_origin(conversion.notes).items():
        lines += ["", f"## {origin}", ""]
        for note in sorted(notes, key=lambda n: _ORDER.index(n.severity)):
            where = f"`{note.path}`: " if note.path else ""
            lines.append(f"- {_SEVERITY[note.severity]}: {where}{note.message}")
    return "\n".join(lines) + "\n"


def summary_lines(conversion: Conversion) -> list[str]:
    """The report for stderr: one `file: Kind name: path: severity: message` line each."""
    return [
        f"{n.origin.file}: {n.origin.kind} {n.origin.name}: "
        f"{n.path + ': ' if n.path else ''}{_SEVERITY[n.severity]}: {n.message}"
        for n in conversion.notes
    ]
