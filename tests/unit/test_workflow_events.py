"""Finished Workflows as events: fields, id and type, routing, and load-time field checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trigger.decoders.detect import decode_file
from trigger.decoders.workflow import workflow_event
from trigger.errors import DecodeError, RuleError
from trigger.rules.loader import load_rules

FINISHED: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Workflow",
    "metadata": {
        "name": "load-x",
        "namespace": "data",
        "uid": "u-1",
        "creationTimestamp": "2025-06-01T02:00:00Z",
        "labels": {"team": "data", "workflows.argoproj.io/completed": "true"},
        "annotations": {"trigger.dev/event-id": "nightly@2025-06-01T02:00:00Z"},
    },
    "spec": {
        "workflowTemplateRef": {"name": "load"},
        "arguments": {"parameters": [{"name": "day", "value": "2025-06-01"}]},
    },
    "status": {
        "phase": "Succeeded",
        "startedAt": "2025-06-01T02:00:01Z",
        "finishedAt": "2025-06-01T02:10:00Z",
        "message": "",
        "outputs": {"parameters": [{"name": "table", "value": "sales_20250601"}]},
    },
}

RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: report}
spec:
  source:
    workflow: {namespace: data, selector: {matchLabels: {team: data}}, templates: [load],
               phases: [Succeeded]}
  workflow:
    template: report
    parameters: {table: "{{ event.outputs.table }}", by: "{{ event.triggeredBy }}"}
"""


def test_fields_id_and_type() -> None:
    """A finished Workflow's event carries DESIGN §7's fields, id uid:phase, type workflow.*."""
    event = workflow_event(FINISHED)
    assert (event.id, event.source, event.type) == (
        "u-1:Succeeded",
        "workflow",
        "workflow.Succeeded",
    )
    assert event.subject == "data/load-x"
    doc = event.doc
    assert doc["template"] == "load"
    assert doc["parameters"] == {"day": "2025-06-01"}
    assert doc["outputs"] == {"table": "sales_20250601"}
    assert doc["triggeredBy"] == "nightly@2025-06-01T02:00:00Z"
    assert (doc["startedAt"], doc["finishedAt"]) == ("2025-06-01T02:00:01Z", "2025-06-01T02:10:00Z")
    assert doc["labels"]["team"] == "data"
    assert doc["time"] == "2025-06-01T02:10:00Z"


def test_a_running_workflow_is_not_an_event() -> None:
    """Only Succeeded, Failed and Error are final: a Running Workflow is refused."""
    running = {**FINISHED, "status": {"phase": "Running"}}
    with pytest.raises(DecodeError, match="not a final phase"):
        workflow_event(running)


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), st.text(max_size=30), max_size=8
    )
)
def test_parameters_become_a_map(values: dict[str, str]) -> None:
    """Whatever arguments and outputs a Workflow has, the event maps each name to its value."""
    listed = [{"name": k, "value": v} for k, v in values.items()]
    obj = {
        **FINISHED,
        "spec": {"arguments": {"parameters": listed}},
        "status": {**FINISHED["status"], "outputs": {"parameters": listed}},
    }
    event = workflow_event(obj)
    assert event.doc["parameters"] == values == event.doc["outputs"]


def test_rule_routes_by_phase_template_namespace_and_labels(tmp_path: Path) -> None:
    """The rule takes its own finished Workflows and explains why it skips the others."""
    path = tmp_path / "r.yaml"
    path.write_text(RULE)
    rules = load_rules([path])
    (rule,) = rules.rules
    assert [m.rule.name for m in rules.route(workflow_event(FINISHED)).matches] == ["report"]
    others = {
        "phase": {**FINISHED, "status": {**FINISHED["status"], "phase": "Failed"}},
        "template": {**FINISHED, "spec": {"workflowTemplateRef": {"name": "other"}}},
        "namespace": {**FINISHED, "metadata": {**FINISHED["metadata"], "namespace": "x"}},
        "label": {**FINISHED, "metadata": {**FINISHED["metadata"], "labels": {}}},
    }
    for what, obj in others.items():
        event = workflow_event(obj)
        assert rules.route(event).matches == ()
        reason = rules.explain(rule, event)
        assert reason is not None and what in reason


def test_validate_checks_the_fields_a_rule_uses(tmp_path: Path) -> None:
    """A template naming a field workflow events do not have is a load error."""
    path = tmp_path / "r.yaml"
    path.write_text(RULE.replace("event.outputs.table", "event.output.table"))
    with pytest.raises(RuleError, match="did you mean 'outputs'"):
        load_rules([path])


def test_phases_are_checked(tmp_path: Path) -> None:
    """Only final phases may be named."""
    path = tmp_path / "r.yaml"
    path.write_text(RULE.replace("phases: [Succeeded]", "phases: [Running]"))
    with pytest.raises(RuleError, match="phases"):
        load_rules([path])


def test_event_file_for_match(tmp_path: Path) -> None:
    """`trigger match` reads a finished Workflow from `{"workflow": WORKFLOW}`."""
    path = tmp_path / "done.json"
    path.write_text(json.dumps({"workflow": FINISHED}))
    (event,) = decode_file(path)
    assert event.id == "u-1:Succeeded"
