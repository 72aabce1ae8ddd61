"""A sink wrapper that checks each Workflow against the WorkflowTemplate catalog first.

Rendered parameter values that break a template's `enum` are permanent errors (Argo would
reject the Workflow). A template that is missing is a temporary error for a grace period
counted from the first time that template was found missing — templates and rules are
often deployed together — and a permanent one after it, so the event is dead-lettered
instead of holding its source for ever. While the catalog has not synced, nothing is
held up: the check passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trigger.clock import Clock
from trigger.errors import PermanentSubmitError
from trigger.submit.base import Created, Sink
from trigger.submit.templates import TemplateKey, TemplateLookup, TemplateMissing, check_rendered


@dataclass
class CheckedSink:
    """Delegates to `sink` after `check_rendered`; see the module docstring."""

    sink: Sink
    catalog: TemplateLookup
    clock: Clock
    grace: float
    missing_since: dict[TemplateKey, float] = field(default_factory=dict)
    kind: str = field(init=False)

    def __post_init__(self) -> None:
        self.kind = self.sink.kind

    def __getattr__(self, name: str) -> Any:
        # list_workflows, stop_workflow, api_client...: the wrapped sink's own extras.
        return getattr(self.sink, name)

    async def create(self, workflow: Mapping[str, Any]) -> Created:
        if not self._watched(workflow):
            return await self.sink.create(workflow)
        try:
            refusal = check_rendered(workflow, self.catalog)
        except TemplateMissing as exc:
            first = self.missing_since.setdefault(exc.key, self.clock.monotonic())
            if self.clock.monotonic() - first >= self.grace:
                raise PermanentSubmitError(
                    f"{exc.key} not found for {self.grace:.0f} s: dead-lettered"
                ) from exc
            raise
        self._forget_found()
        if refusal is not None:
            raise PermanentSubmitError(f"rejected before submission: {refusal}", status=422)
        return await self.sink.create(workflow)

    def _watched(self, workflow: Mapping[str, Any]) -> bool:
        """Whether the catalog watches the scope of this Workflow's template."""
        ref = (workflow.get("spec") or {}).get("workflowTemplateRef") or {}
        if ref.get("clusterScope"):
            return bool(getattr(self.catalog, "cluster_templates", True))
        namespaces = getattr(self.catalog, "namespaces", None)
        namespace = (workflow.get("metadata") or {}).get("namespace")
        return namespaces is None or namespace in namespaces

    def _forget_found(self) -> None:
        """A template that appeared starts a fresh grace period if it ever goes missing."""
        for key in [k for k in self.missing_since if self.catalog.get(*k)]:
            del self.missing_since[key]

    async def check(self) -> None:
        await self.sink.check()

    async def close(self) -> None:
        await self.sink.close()
