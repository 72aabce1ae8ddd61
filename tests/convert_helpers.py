"""Helpers for the `trigger convert` tests: convert fixtures, load the rules, run an event
through them and resolve the Workflow against the converted WorkflowTemplates as Argo does."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from tests.conftest import FIXTURES
from trigger.core.gatekeeper import GateReplay
from trigger.decoders.detect import decode_document
from trigger.rules.convert import Conversion, convert, read_objects
from trigger.rules.convert.writer import files
from trigger.rules.loader import load_rules
from trigger.rules.render import render
from trigger.rules.router import RuleSet

CONVERT = FIXTURES / "convert"


def convert_fixtures(*names: str) -> Conversion:
    objects = []
    for name in names:
        objects.extend(read_objects((CONVERT / name).read_text(), name))
    return convert(objects)


def load(conversion: Conversion, directory: Path) -> RuleSet:
    """Write the conversion as `-o DIR` does and load its rules as `trigger validate` does."""
    for name, text in files(conversion).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return load_rules([directory / "rules"])


def workflows(rules: RuleSet, event: dict[str, Any]) -> list[dict[str, Any]]:
    """The Workflows the rules create for one event (as `trigger match` renders them)."""
    (decoded,) = decode_document(json.dumps(event), where="event")
    routed = rules.route(decoded)
    assert not routed.failures, routed.failures
    return [render(m.rule, m.event) for m in routed.matches]


def gate_workflows(rules: RuleSet, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Workflows the rules create over these events in order, gates played as
    `trigger match` plays them (each event's own time as the clock)."""
    replay, created = GateReplay(), []
    for event in events:
        (decoded,) = decode_document(json.dumps(event), where="event")
        routed = rules.route(decoded)
        assert not routed.failures, routed.failures
        for match in routed.matches:
            if match.rule.gate is None:
                created.append(render(match.rule, match.event))
                continue
            firings, _ = replay.add(match.rule, match.event)
            created += [render(match.rule.gate.rule, firing) for firing in firings]
    return created


def resolve(workflow: dict[str, Any], conversion: Conversion) -> dict[str, Any]:
    """The Workflow as Argo runs it: its WorkflowTemplate's spec under the Workflow's own
    fields, the given arguments over the template's, `{{workflow.parameters.X}}` filled."""
    spec = copy.deepcopy(workflow["spec"])
    ref = spec.pop("workflowTemplateRef")
    (template,) = [t for t in conversion.templates if t["metadata"]["name"] == ref["name"]]
    merged: dict[str, Any] = {**copy.deepcopy(template["spec"]), **spec}
    given = {p["name"]: p["value"] for p in spec.get("arguments", {}).get("parameters", [])}
    declared = template["spec"].get("arguments", {}).get("parameters", [])
    merged["arguments"] = {
        "parameters": [
            {"name": p["name"], "value": given.get(p["name"], p.get("value"))} for p in declared
        ]
    }
    values = {p["name"]: p["value"] for p in merged["arguments"]["parameters"]}
    text = re.sub(
        r"\{\{workflow\.parameters\.([A-Za-z0-9_-]+)\}\}",
        lambda m: json.dumps(values[m[1]])[1:-1],
        json.dumps(merged),
    )
    return {**workflow, "spec": json.loads(text)}


def original(name: str, index: int = 0) -> dict[str, Any]:
    """The `index`th object of a fixture file, as the user wrote it."""
    return read_objects((CONVERT / name).read_text(), name)[index][0]


def notes(conversion: Conversion) -> list[tuple[str, str, str]]:
    return [(n.path, n.severity, n.message) for n in conversion.notes]
