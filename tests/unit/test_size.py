"""Workflows too large to store: the size check never lets one through, and the API
server's "too large" answers are permanent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trigger.decoders.kafka import decode_kafka_record
from trigger.errors import PermanentSubmitError, TemporarySubmitError, WorkflowTooLarge
from trigger.rules.loader import load_rules
from trigger.rules.render import build_workflow
from trigger.rules.rule import Rule
from trigger.submit.size import SizeLimit, encoded_size
from trigger.submit.transport import status_error

RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: big}
spec:
  source: {kafka: {topics: [t]}}
  workflow:
    template: t
    labels: {team: data}
    spec: {priority: 3, podGC: {strategy: OnPodSuccess}}
    parameters: {a: "{{ event.value }}", b: "{{ event.value }}", c: "{{ event.value }}"}
"""
EVENT = decode_kafka_record("t", 0, 1, 1735718400000, None, b"{}", [])
# Every kind of character the escaping treats differently: ASCII, control characters
# (six bytes), CJK (six), characters outside the BMP (twelve), quotes and backslashes.
text = st.text(
    alphabet=st.sampled_from(["a", "\x01", "\n", "中", "😀", '"', "\\", "é"]), max_size=3000
)


@pytest.fixture
def rule(write_rules: Callable[..., Path]) -> Rule:
    return load_rules([write_rules(RULE)]).by_name["big"]


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(text, min_size=3, max_size=3), limit=st.integers(4096, 40_000))
def test_the_check_refuses_exactly_what_encodes_over_the_limit(
    rule: Rule, values: list[str], limit: int
) -> None:
    """Whatever the characters, a Workflow is refused if and only if its JSON is larger
    than the limit: the cheap bound never lets an oversized one through."""
    workflow = build_workflow(
        rule, "big-x", dict(zip("abc", values, strict=True)), event=EVENT, key="k" * 50
    )
    size_limit = SizeLimit(limit)
    size_limit.check(rule, build_workflow(rule, "big-x", {}, event=EVENT, key="k"))  # warm
    if encoded_size(workflow) > limit:
        with pytest.raises(WorkflowTooLarge, match=f"over the {limit}-byte limit"):
            size_limit.check(rule, workflow)
    else:
        size_limit.check(rule, workflow)


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (413, "Request entity too large: limit is 3145728", WorkflowTooLarge),
        (500, "etcdserver: request is too large", WorkflowTooLarge),
        (500, "rpc error: code = Unknown desc = etcdserver: request is too large", WorkflowTooLarge),
        (500, "Internal error occurred: etcdserver: leader changed", TemporarySubmitError),
        (422, "spec.arguments: Invalid value", PermanentSubmitError),
    ],
)
def test_too_large_answers_are_permanent(status: int, message: str, kind: type) -> None:
    """413 and etcd's "request is too large" (a 500) are WorkflowTooLarge, not retried;
    other 500s stay temporary."""
    error = status_error(status, message, creating=True)
    assert type(error) is kind
