"""Queues in rule files: `kind: Queue`, workflow.queue and workflow.priority, and what they
compile to (Argo's semaphore and priority)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.conftest import SHARED_SCHEMA, WorkflowChecker
from trigger.core.queues import declared_limits
from trigger.decoders.cron import cron_tick
from trigger.errors import RuleError
from trigger.events import Event
from trigger.rules.loader import load_rules
from trigger.rules.model import WorkflowSpec
from trigger.rules.queue import LABEL_QUEUE, QUEUE_CONFIGMAP
from trigger.rules.render import build_workflow, render
from trigger.rules.rule import Rule

QUEUE = """\
apiVersion: trigger/v1
kind: Queue
metadata:
  name: nightly
spec:
  limit: 2
  namespaces: [data, reports]
  description: the nightly batch
"""
RULE = """\
apiVersion: trigger/v1
kind: Rule
metadata:
  name: nightly-report
spec:
  source:
    cron:
      schedules: ["0 2 * * *"]
  workflow:
    template: daily-report
    namespace: data
    queue: nightly
    priority: 10
    parameters:
      day: "{{ event.scheduledTime }}"
"""


def _loaded() -> Rule:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "rules.yaml"
        path.write_text(QUEUE + "---\n" + RULE)
        return load_rules([path]).by_name["nightly-report"]


LOADED = _loaded()


def problems(write: Callable[..., Path], text: str) -> list[str]:
    path = write(text)
    with pytest.raises(RuleError) as caught:
        load_rules([path])
    return [str(p).replace(str(path), "F") for p in caught.value.problems]


def tick(rule: str = "nightly-report") -> Event:
    return cron_tick(rule, "0 2 * * *", datetime(2026, 1, 1, 2, tzinfo=UTC), "UTC")


def test_queue_and_rule_load(write_rules: Callable[..., Path]) -> None:
    """A Queue document beside a rule loads; the rule set knows the queue and its spread."""
    rules = load_rules([write_rules(QUEUE + "---\n" + RULE)])
    queue = rules.queues["nightly"]
    assert (queue.limit, queue.namespaces, queue.description) == (
        2,
        ("data", "reports"),
        "the nightly batch",
    )
    assert len(rules) == 1 and rules.by_name["nightly-report"].workflow.priority == 10
    assert declared_limits(rules) == {"data": {"nightly": 2}, "reports": {"nightly": 2}}


def test_queue_without_namespaces_spans_its_rules(write_rules: Callable[..., Path]) -> None:
    """A queue that names no namespaces applies where its rules' Workflows run."""
    queue = QUEUE.replace("  namespaces: [data, reports]\n", "")
    other = RULE.replace("nightly-report", "other").replace("namespace: data", "namespace: ml")
    rules = load_rules([write_rules(queue + "---\n" + RULE + "---\n" + other)])
    assert rules.queue_namespaces() == {"nightly": ("data", "ml")}


def test_workflow_carries_semaphore_priority_and_label(
    write_rules: Callable[..., Path], valid_workflow: WorkflowChecker
) -> None:
    """The Workflow names the queue's semaphore key and priority, and validates for Argo."""
    rules = load_rules([write_rules(QUEUE + "---\n" + RULE)])
    workflow = render(rules.by_name["nightly-report"], tick())
    valid_workflow(workflow)
    assert workflow["spec"]["synchronization"] == {
        "semaphores": [{"configMapKeyRef": {"name": QUEUE_CONFIGMAP, "key": "nightly"}}]
    }
    assert workflow["spec"]["priority"] == 10
    assert workflow["metadata"]["labels"][LABEL_QUEUE] == "nightly"


def undeclared_fields(value: Any, definition: str, definitions: dict[str, Any]) -> list[str]:
    """The keys of `value` the schema's `definition` does not declare, recursively (Argo's
    schema allows unknown fields, so validation alone would accept `semaphore` for
    `semaphores`)."""
    schema = definitions[definition.removeprefix("#/definitions/")]
    found = []
    for key, item in value.items():
        declared = schema.get("properties", {}).get(key)
        if declared is None:
            found.append(f"{definition}: {key}")
            continue
        ref = declared.get("$ref") or declared.get("items", {}).get("$ref")
        for element in item if isinstance(item, list) else [item]:
            if ref and isinstance(element, dict):
                found += undeclared_fields(element, ref, definitions)
    return found


@pytest.mark.skipif(not SHARED_SCHEMA.exists(), reason="../shared/argo/schema.json is absent")
def test_semaphore_and_priority_are_fields_argo_declares() -> None:
    """spec.synchronization and spec.priority use only fields Argo's schema declares."""
    definitions = json.loads(SHARED_SCHEMA.read_text())["definitions"]
    spec = render(LOADED, tick())["spec"]
    queued = {"synchronization": spec["synchronization"], "priority": spec["priority"]}
    assert (
        undeclared_fields(queued, "io.argoproj.workflow.v1alpha1.WorkflowSpec", definitions) == []
    )


def test_queue_keeps_the_overlay_mutexes(
    write_rules: Callable[..., Path], valid_workflow: WorkflowChecker
) -> None:
    """A mutex in the rule's spec overlay stays beside the queue's semaphore."""
    rule = RULE + "    spec:\n      synchronization:\n        mutexes: [{name: one-at-a-time}]\n"
    rules = load_rules([write_rules(QUEUE + "---\n" + rule)])
    workflow = render(rules.by_name["nightly-report"], tick())
    valid_workflow(workflow)
    sync = workflow["spec"]["synchronization"]
    assert sync["mutexes"] == [{"name": "one-at-a-time"}] and len(sync["semaphores"]) == 1


def test_no_queue_no_synchronization(write_rules: Callable[..., Path]) -> None:
    """A rule without queue or priority gets neither field nor the queue label."""
    rule = RULE.replace("    queue: nightly\n", "").replace("    priority: 10\n", "")
    workflow = render(load_rules([write_rules(rule)]).by_name["nightly-report"], tick())
    assert "synchronization" not in workflow["spec"] and "priority" not in workflow["spec"]
    assert LABEL_QUEUE not in workflow["metadata"]["labels"]


@given(st.integers(min_value=-(2**40), max_value=2**40))
def test_priority_is_any_int32(priority: int) -> None:
    """workflow.priority takes exactly the int32 range (Argo's spec.priority) and lands
    unchanged in the Workflow."""
    raw = {"template": "daily-report", "queue": "nightly", "priority": priority}
    if not -(2**31) <= priority < 2**31:
        with pytest.raises(ValidationError):
            WorkflowSpec.model_validate(raw)
        return
    spec = WorkflowSpec.model_validate(raw)
    document = LOADED.document.model_copy(
        update={"spec": LOADED.document.spec.model_copy(update={"workflow": spec})}
    )
    rule = dataclasses.replace(LOADED, document=document)
    assert render(rule, tick())["spec"]["priority"] == priority


MISTAKES = {
    "unknown queue": (
        RULE.replace("queue: nightly", "queue: nigthly"),
        [
            "F:21:12: rule nightly-report: workflow.queue: unknown queue 'nigthly'; "
            "did you mean 'nightly'?"
        ],
    ),
    "namespace outside the queue's": (
        RULE.replace("namespace: data", "namespace: ml"),
        [
            "F:21:12: rule nightly-report: workflow.queue: queue 'nightly' takes Workflows in "
            "namespace(s) data, reports, not 'ml' (workflow.namespace): its semaphore lives "
            "beside the Workflow"
        ],
    ),
    "priority is a string": (
        RULE.replace("priority: 10", 'priority: "10"'),
        ["F:22:15: rule nightly-report: workflow.priority: Input should be a valid integer"],
    ),
    "priority beyond int32": (
        RULE.replace("priority: 10", "priority: 2147483648"),
        [
            "F:22:15: rule nightly-report: workflow.priority: Input should be less than or "
            "equal to 2147483647"
        ],
    ),
    "semaphore in the overlay": (
        RULE + "    spec:\n      synchronization:\n        semaphores: []\n",
        [
            "F:19:5: rule nightly-report: workflow: spec.synchronization.semaphores is set by "
            "workflow.queue; declare the limit as a `kind: Queue` document, or drop "
            "workflow.queue"
        ],
    ),
}


@pytest.mark.parametrize(("rule", "expected"), MISTAKES.values(), ids=MISTAKES.keys())
def test_rule_mistakes(write_rules: Callable[..., Path], rule: str, expected: list[str]) -> None:
    """Each queue mistake in a rule is one problem at its place."""
    assert problems(write_rules, QUEUE + "---\n" + rule) == expected


QUEUE_MISTAKES = {
    "limit zero": (QUEUE.replace("limit: 2", "limit: 0"),
                   ["F:6:10: queue nightly: limit: Input should be greater than or equal to 1"]),
    "limit a boolean": (QUEUE.replace("limit: 2", "limit: true"),
                        ["F:6:10: queue nightly: limit: Input should be a valid integer"]),
    "limit missing": (QUEUE.replace("  limit: 2\n", ""),
                      ["F:5:1: queue nightly: limit: required field is missing"]),
    "misspelt field": (QUEUE.replace("limit: 2", "limit: 2\n  limt: 3"),
                       ["F:7:3: queue nightly: limt: unknown field; did you mean 'limit'?"]),
    "bad namespace": (QUEUE.replace("[data, reports]", "[Data]"),
                      ["F:7:15: queue nightly: namespaces: namespace 'Data' is not a "
                       "DNS-1123 label"]),
}  # fmt: skip


@pytest.mark.parametrize(("queue", "expected"), QUEUE_MISTAKES.values(), ids=QUEUE_MISTAKES.keys())
def test_queue_mistakes(write_rules: Callable[..., Path], queue: str, expected: list[str]) -> None:
    """Each mistake in a Queue document is reported at its place, naming the queue; a rule
    that uses the broken queue is not also told the queue is unknown."""
    assert problems(write_rules, queue + "---\n" + RULE) == expected


def test_misspelt_kind_names_both_kinds(write_rules: Callable[..., Path]) -> None:
    """A document whose kind is neither Rule nor Queue is told which kinds there are."""
    found = problems(write_rules, QUEUE.replace("kind: Queue", "kind: queue"))
    assert found[0] == (
        "F:2:7: rule nightly: kind: a document is a Rule or a Queue (kind: Rule, kind: Queue)"
    )


def test_duplicate_queue_names(write_rules: Callable[..., Path]) -> None:
    """A queue name declared twice is an error at the second, pointing at the first."""
    second = QUEUE.replace("limit: 2", "limit: 5")
    assert problems(write_rules, QUEUE + "---\n" + second) == [
        "F:13:9: queue nightly: metadata.name: duplicate queue name (first defined at F:4:9)"
    ]


def test_queue_only_file_is_not_empty(write_rules: Callable[..., Path]) -> None:
    """A file of Queue documents alone loads without the empty-file warning."""
    rules = load_rules([write_rules(QUEUE, name="queues.yaml"), write_rules(RULE)])
    assert rules.warnings == () and set(rules.queues) == {"nightly"}


def test_readme_queue_example_loads_and_queues(tmp_path: Path) -> None:
    """The README's Queue and rule example load together; the rule's Workflows carry the
    queue's semaphore and priority."""
    from tests.unit.test_readme import blocks

    documents = [
        block for block in blocks("yaml") if re.search(r"^kind: (Queue|Rule)$", block, re.M)
    ]
    queue = next(d for d in documents if re.search(r"^kind: Queue$", d, re.M))
    # The queued nightly-load, not the gate of that name in "Gates".
    rule = next(d for d in documents if re.search(r"^ +queue: nightly-batch", d, re.M))
    (tmp_path / "rules.yaml").write_text(queue + "---\n" + rule)
    rules = load_rules([tmp_path])
    (loaded,) = rules.rules
    assert rules.queues["nightly-batch"].limit == 4
    spec = build_workflow(loaded, "x", {}, event=None, key="k")["spec"]
    assert spec["synchronization"]["semaphores"][0]["configMapKeyRef"]["key"] == "nightly-batch"
    assert spec["priority"] == 100
