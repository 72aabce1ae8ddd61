"""The compiled Rule: everything the hot path needs, built once at load."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trigger.events import SourceKind
from trigger.rules.expressions import Expression
from trigger.rules.model import (
    CronSource,
    KafkaSource,
    OssSource,
    RuleDocument,
    WebhookSource,
    WorkflowSource,
    WorkflowSpec,
)
from trigger.rules.patterns import Pattern
from trigger.rules.schedules import Schedule
from trigger.rules.templating import Template

Predicate = Callable[[Any], bool]


@dataclass(frozen=True, eq=False)
class Rule:
    """One loaded rule. Identity is the name; two loads of one file give equal names."""

    name: str
    file: str
    index: int  # the rule's document number in its file, from 0
    kind: SourceKind
    document: RuleDocument
    pattern: Pattern | None = None
    expr: Expression | None = None
    parameters: tuple[tuple[str, Template], ...] = ()
    idempotency_key: Template | None = None
    generate_name: str = ""
    # OSS: event-name and key predicates, and the literal key prefix used by the router index.
    event_types: Predicate | None = None
    key_filter: Predicate | None = None
    key_prefix: str = ""
    schedules: tuple[Schedule, ...] = ()
    # What CEL and templates see as `rule`.
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def oss(self) -> OssSource:
        assert self.document.spec.source.oss is not None
        return self.document.spec.source.oss

    @property
    def kafka(self) -> KafkaSource:
        assert self.document.spec.source.kafka is not None
        return self.document.spec.source.kafka

    @property
    def cron(self) -> CronSource:
        assert self.document.spec.source.cron is not None
        return self.document.spec.source.cron

    @property
    def webhook(self) -> WebhookSource:
        assert self.document.spec.source.webhook is not None
        return self.document.spec.source.webhook

    @property
    def finished(self) -> WorkflowSource:
        """The `workflow` source (`workflow` is the Workflow the rule creates)."""
        assert self.document.spec.source.workflow is not None
        return self.document.spec.source.workflow

    @property
    def workflow(self) -> WorkflowSpec:
        return self.document.spec.workflow

    def __repr__(self) -> str:
        return f"Rule({self.name!r} from {self.file}, document {self.index + 1})"
