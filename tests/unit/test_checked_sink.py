"""CheckedSink: enum checks before submission and a bounded grace for missing templates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from trigger.clock import VirtualClock
from trigger.errors import PermanentSubmitError, TemporarySubmitError
from trigger.submit.base import Created
from trigger.submit.checked import CheckedSink
from trigger.submit.templates import TemplateCatalog

TEMPLATE = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "ingest", "namespace": "data"},
    "spec": {"arguments": {"parameters": [{"name": "mode", "enum": ["full", "delta"]}]}},
}


class Recorder:
    kind = "recorder"

    def __init__(self) -> None:
        self.created: list[str] = []

    async def create(self, workflow: Mapping[str, Any]) -> Created:
        self.created.append(workflow["metadata"]["name"])
        return Created(workflow["metadata"]["name"], workflow["metadata"]["namespace"])

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None


def workflow(
    template: str = "ingest", mode: str = "full", namespace: str = "data"
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"wf-{template}-{mode}", "namespace": namespace},
        "spec": {
            "workflowTemplateRef": {"name": template},
            "arguments": {"parameters": [{"name": "mode", "value": mode}]},
        },
    }


def sink(clock: VirtualClock) -> tuple[CheckedSink, Recorder]:
    catalog = TemplateCatalog.from_objects([TEMPLATE])
    catalog.namespaces = ("data",)
    catalog.cluster_templates = False
    inner = Recorder()
    return CheckedSink(inner, catalog, clock, grace=300), inner


async def test_allowed_value_is_created() -> None:
    """A Workflow whose values fit the template goes through."""
    checked, inner = sink(VirtualClock())
    await checked.create(workflow())
    assert inner.created == ["wf-ingest-full"]


async def test_enum_violation_is_permanent() -> None:
    """A rendered value outside the template's enum is refused before submission."""
    checked, inner = sink(VirtualClock())
    with pytest.raises(PermanentSubmitError, match="mode"):
        await checked.create(workflow(mode="weekly"))
    assert inner.created == []


async def test_missing_template_is_temporary_then_permanent() -> None:
    """A missing template is temporary during the grace period, permanent after it."""
    clock = VirtualClock()
    checked, inner = sink(clock)
    with pytest.raises(TemporarySubmitError):
        await checked.create(workflow(template="later"))
    await clock.advance(299)
    with pytest.raises(TemporarySubmitError):
        await checked.create(workflow(template="later"))
    await clock.advance(2)
    with pytest.raises(PermanentSubmitError, match="not found for 300 s"):
        await checked.create(workflow(template="later"))
    assert inner.created == []


async def test_unwatched_namespace_is_not_checked() -> None:
    """A template in a namespace the catalog does not watch is not held up."""
    checked, inner = sink(VirtualClock())
    await checked.create(workflow(template="elsewhere", namespace="other"))
    assert inner.created == ["wf-elsewhere-full"]
