"""The compiled Rule: everything the hot path needs, built once at load."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trigger.events import SourceKind
from trigger.rules.expressions import Expression
from trigger.rules.gates import GateShape
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
    # Set on the rules of a gate's members (named `RULE.MEMBER`): their events are recorded
    # in the gate rather than each creating a Workflow.
    gate: GatePlan | None = None

    @property
    def oss(self) -> OssSource:
        assert self.document.spec.origin.oss is not None
        return self.document.spec.origin.oss

    @property
    def kafka(self) -> KafkaSource:
        assert self.document.spec.origin.kafka is not None
        return self.document.spec.origin.kafka

    @property
    def cron(self) -> CronSource:
        assert self.document.spec.origin.cron is not None
        return self.document.spec.origin.cron

    @property
    def webhook(self) -> WebhookSource:
        assert self.document.spec.origin.webhook is not None
        return self.document.spec.origin.webhook

    @property
    def finished(self) -> WorkflowSource:
        """The `workflow` source (`workflow` is the Workflow the rule creates)."""
        assert self.document.spec.origin.workflow is not None
        return self.document.spec.origin.workflow

    @property
    def workflow(self) -> WorkflowSpec:
        return self.document.spec.workflow

    def __repr__(self) -> str:
        return f"Rule({self.name!r} from {self.file}, document {self.index + 1})"


@dataclass(frozen=True, eq=False)
class GatePlan:
    """What a gate member's rule records into: the gate rule as it fires (its name,
    Workflow and parameters, which see `gate` and `rule`), the member, the key template."""

    rule: Rule
    member: str
    key: Template
    shape: GateShape

    def state_key(self, key: str) -> str:
        """The state store key of one rendered gate key (hashed: keys are free text)."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"gate/{self.rule.name}/{digest}"
