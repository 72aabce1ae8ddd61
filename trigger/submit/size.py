"""How large a Workflow is on the wire, and the limit it must keep.

etcd stores at most 1.5 MiB per object, and a real API server answers a create between
1.5 and 3 MiB with 500 "etcdserver: request is too large" (kubernetes#112152), one over
3 MiB with 413. A rule with many parameters fed from one large message makes such a
Workflow, and JSON escaping multiplies some payloads (a control character is six bytes,
a character outside the BMP twelve). So the submitter checks the encoded size before it
creates anything, against `submit.max_workflow_bytes` (default 1 MiB: room under etcd's
limit for the status Argo's controller adds), and a Workflow over it is poison.

The check is nearly free for ordinary Workflows: everything in a Workflow but its
parameter values and annotations comes from the rule, so its encoded size is measured
once per rule; the per-event strings are bounded by their length times the widest
escape. Only a Workflow whose bound passes the limit is encoded to be measured exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from trigger.errors import WorkflowTooLarge
from trigger.rules.rule import Rule

DEFAULT_MAX_BYTES: Final = 1024 * 1024
MAX_ESCAPE: Final = 12  # bytes for one character: a surrogate pair as two \uXXXX escapes
SLACK: Final = 4096  # the name and annotation keys that the measured rule shape may lack


def encoded_size(workflow: Mapping[str, Any]) -> int:
    """Bytes of the Workflow as JSON, as the Kubernetes client sends it (ASCII escapes)."""
    return len(json.dumps(workflow, separators=(",", ":")))


def _dynamic(workflow: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any], int]:
    spec = workflow.get("spec") or {}
    parameters = (spec.get("arguments") or {}).get("parameters") or []
    annotations = (workflow.get("metadata") or {}).get("annotations") or {}
    chars = sum(len(p.get("value") or "") for p in parameters)
    chars += sum(len(v) for v in annotations.values() if isinstance(v, str))
    return parameters, annotations, chars


def _shape_size(workflow: Mapping[str, Any]) -> int:
    """The encoded size with every parameter value and annotation value empty."""
    parameters, annotations, _ = _dynamic(workflow)
    spec = dict(workflow.get("spec") or {})
    if parameters:
        blank = [{**p, "value": ""} for p in parameters]
        spec["arguments"] = {**spec["arguments"], "parameters": blank}
    meta = {**(workflow.get("metadata") or {}), "annotations": dict.fromkeys(annotations, "")}
    return encoded_size({**workflow, "metadata": meta, "spec": spec})


class SizeLimit:
    """Refuses Workflows over `max_bytes` (see the module docstring)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._shapes: dict[str, tuple[Rule, int]] = {}

    def check(self, rule: Rule, workflow: Mapping[str, Any]) -> None:
        """Raise WorkflowTooLarge when the Workflow encodes to more than the limit."""
        _, _, chars = _dynamic(workflow)
        if self._shape(rule, workflow) + MAX_ESCAPE * chars + SLACK <= self.max_bytes:
            return
        size = encoded_size(workflow)
        if size > self.max_bytes:
            raise WorkflowTooLarge(
                f"the Workflow is {size} bytes as JSON, over the {self.max_bytes}-byte "
                "limit (submit.max_workflow_bytes; etcd stores at most 1.5 MiB per object)",
                status=413,
            )

    def _shape(self, rule: Rule, workflow: Mapping[str, Any]) -> int:
        cached = self._shapes.get(rule.name)
        if cached is None or cached[0] is not rule:
            cached = self._shapes[rule.name] = (rule, _shape_size(workflow))
        return cached[1]
