"""The rule file schema (DESIGN §3, and §7's `kind: Queue`), as strict pydantic models.

This is the contract users write against: unknown keys are errors, names are DNS-1123,
durations are strings such as `90s`, `15m`, `1h30m`. Models here only check shape; patterns,
expressions, templates and schedules are compiled by the loader.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)

from trigger.events import SourceKind

DNS1123_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
# Argo refuses Workflow names over 63 characters and trigger appends a 20-character hash.
GENERATE_NAME_MAX: Final = 43
_DURATION: Final = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+$")
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Argo's `spec.priority` is an int32; a semaphore's limit is read as one too.
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1


def parse_duration(value: Any) -> float:
    """`90s`, `15m`, `1h30m`, `500ms`, `1d` (or a bare number of seconds) → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 15m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str) or not _DURATION.match(value.strip()):
        raise ValueError(f"expected a duration such as 90s, 15m or 1h, got {value!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Metadata(Strict):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns1123(cls, name: str) -> str:
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            raise ValueError(
                f"name {name!r} must be a DNS-1123 label: at most 63 lower-case letters, "
                "digits and '-', starting and ending with a letter or digit"
            )
        return name


class PollCredentials(Strict):
    """Where the poller's credentials come from; secrets are never written in rule files."""

    accessKeyIdEnv: str | None = None
    accessKeySecretEnv: str | None = None
    accessKeyIdFile: str | None = None
    accessKeySecretFile: str | None = None
    securityTokenEnv: str | None = None
    ecsRamRole: str | None = None


class OssPoll(Strict):
    endpoint: str
    region: str
    interval: Duration = 60.0
    prefix: str | None = None
    existing: Literal["skip", "fire"] = "skip"
    credentials: PollCredentials = Field(default_factory=PollCredentials)


class OssSource(Strict):
    bucket: str
    events: list[str] = Field(default_factory=lambda: ["ObjectCreated:*"], min_length=1)
    key: dict[str, Any] | None = None
    poll: OssPoll | None = None
    fetchMetadata: bool = False


class KafkaSource(Strict):
    topics: list[str] = Field(min_length=1)
    cluster: str = "default"
    group: str | None = None
    format: Literal["json", "text", "bytes"] = "json"


class CronSource(Strict):
    schedules: list[str] = Field(min_length=1)
    timezone: str = "UTC"
    startingDeadline: Duration | None = None
    catchUp: Literal["latest", "all", "none"] = "latest"
    maxCatchUp: int = Field(default=100, ge=1)
    concurrencyPolicy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    suspend: bool = False


class WebhookAuth(Strict):
    hmacSecretEnv: str | None = None
    hmacSecretFile: str | None = None
    hmacHeader: str = "X-Hub-Signature-256"
    bearerTokenEnv: str | None = None
    bearerTokenFile: str | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookAuth:
        given = [
            n
            for n in ("hmacSecretEnv", "hmacSecretFile", "bearerTokenEnv", "bearerTokenFile")
            if getattr(self, n)
        ]
        if len(given) != 1:
            raise ValueError(
                "auth needs exactly one of hmacSecretEnv, hmacSecretFile, bearerTokenEnv, "
                f"bearerTokenFile (got {', '.join(given) or 'none'})"
            )
        return self


class WebhookSource(Strict):
    path: str
    methods: tuple[Literal["POST", "PUT", "GET"], ...] = ("POST",)
    auth: WebhookAuth | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        if not re.match(r"^/[A-Za-z0-9._~/-]*$", path) or "//" in path:
            raise ValueError(f"path {path!r} must start with '/' and use only URL path characters")
        return path


class LabelSelector(Strict):
    matchLabels: dict[str, str] = Field(default_factory=dict)


class WorkflowSource(Strict):
    """Finished Argo Workflows: where (`namespace`, default every namespace), which
    (`selector`, `templates`: WorkflowTemplate names) and how they ended (`phases`)."""

    namespace: str | None = None
    selector: LabelSelector | None = None
    templates: list[str] | None = Field(default=None, min_length=1)
    phases: list[Literal["Succeeded", "Failed", "Error"]] = Field(min_length=1)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, namespace: str | None) -> str | None:
        if namespace is not None and (len(namespace) > 63 or not DNS1123_LABEL.match(namespace)):
            raise ValueError(f"namespace {namespace!r} is not a DNS-1123 label")
        return namespace


SOURCE_KINDS: Final[tuple[SourceKind, ...]] = ("oss", "kafka", "cron", "webhook", "workflow")


class Source(Strict):
    oss: OssSource | None = None
    kafka: KafkaSource | None = None
    cron: CronSource | None = None
    webhook: WebhookSource | None = None
    workflow: WorkflowSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        given = [k for k in SOURCE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"source needs exactly one of {', '.join(SOURCE_KINDS)} "
                f"(got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> SourceKind:
        for kind in SOURCE_KINDS:
            if getattr(self, kind) is not None:
                return kind
        raise AssertionError("validated to have one source")  # pragma: no cover


class Filter(Strict):
    pattern: dict[str, Any] | None = None
    expr: str | None = None


class WorkflowSpec(Strict):
    template: str
    clusterScope: bool = False
    namespace: str = "default"
    generateName: str | None = None
    entrypoint: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)  # scalars; checked by the loader
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    spec: dict[str, Any] | None = None
    # A queue's name (a `kind: Queue` document) and the Workflow's priority in it; both
    # are fixed per rule (see README "Queues").
    queue: str | None = None
    priority: StrictInt | None = Field(default=None, ge=INT32_MIN, le=INT32_MAX)

    @field_validator("queue")
    @classmethod
    def _queue(cls, queue: str | None) -> str | None:
        if queue is not None and (len(queue) > 63 or not DNS1123_LABEL.match(queue)):
            raise ValueError(f"queue {queue!r} is not a queue name (a DNS-1123 label)")
        return queue

    @model_validator(mode="after")
    def _queue_owns_its_fields(self) -> WorkflowSpec:
        """`queue` and `priority` write spec.synchronization.semaphores and spec.priority:
        the same fields in the `spec` overlay would be overwritten or fight them."""
        overlay = self.spec or {}
        sync = overlay.get("synchronization")
        if self.queue is not None and isinstance(sync, dict) and "semaphores" in sync:
            raise ValueError(
                "spec.synchronization.semaphores is set by workflow.queue; declare the "
                "limit as a `kind: Queue` document, or drop workflow.queue"
            )
        if self.priority is not None and "priority" in overlay:
            raise ValueError("spec.priority and workflow.priority are both set; keep one")
        return self

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, namespace: str) -> str:
        if len(namespace) > 63 or not DNS1123_LABEL.match(namespace):
            raise ValueError(f"namespace {namespace!r} is not a DNS-1123 label")
        return namespace

    @field_validator("template")
    @classmethod
    def _template(cls, template: str) -> str:
        if len(template) > 253 or not DNS1123_SUBDOMAIN.match(template):
            raise ValueError(f"template {template!r} is not a valid Kubernetes object name")
        return template

    @field_validator("generateName")
    @classmethod
    def _generate_name(cls, prefix: str | None) -> str | None:
        if prefix is None:
            return None
        if len(prefix) > GENERATE_NAME_MAX:
            raise ValueError(
                f"generateName is limited to {GENERATE_NAME_MAX} characters (Argo allows 63 "
                "for a Workflow name, and trigger adds a 20-character hash)"
            )
        # The rendered name is the prefix and a hash of [a-z2-7]: it must be a DNS-1123
        # subdomain, or the API server refuses every Workflow of the rule.
        if not DNS1123_SUBDOMAIN.match(f"{prefix}a"):
            raise ValueError(
                f"generateName {prefix!r} would make invalid Workflow names: use lower-case "
                "letters, digits, '-' and '.', starting with a letter or digit, with a letter "
                "or digit on each side of every '.'"
            )
        return prefix

    @field_validator("spec")
    @classmethod
    def _overlay(cls, spec: dict[str, Any] | None) -> dict[str, Any] | None:
        for owned in ("workflowTemplateRef", "arguments"):
            if spec and owned in spec:
                raise ValueError(
                    f"spec.{owned} is set by trigger; use workflow.template and "
                    "workflow.parameters instead"
                )
        return spec


class RateLimit(Strict):
    perSecond: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)


class Backoff(Strict):
    initial: Duration = 1.0
    factor: float = Field(default=2.0, ge=1.0)
    max: Duration = 120.0


class Retry(Strict):
    limit: int = Field(default=8, ge=0, le=1000)
    backoff: Backoff = Field(default_factory=Backoff)


SOURCE_OR_GATE: Final = "a rule needs exactly one of source and gate"
GATE_MEMBER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# A gate's state holds its members' events: bounded so one key stays far below 1 MiB.
GATE_COUNT_MAX: Final = 1000


class GateMember(Strict):
    """One kind of event a gate waits for: where it comes from, which, and how many."""

    source: Source
    filter: Filter | None = None
    count: int = Field(default=1, ge=1, le=GATE_COUNT_MAX)


class Gate(Strict):
    """Fire once every member has `count` distinct events with the same rendered `key`,
    within `window` of the first; `onTimeout` says what an incomplete gate becomes."""

    key: str
    members: dict[str, GateMember] = Field(min_length=1)
    window: Duration
    onTimeout: Literal["dead-letter", "fire", "drop"] = "dead-letter"

    @field_validator("members")
    @classmethod
    def _names(cls, members: dict[str, GateMember]) -> dict[str, GateMember]:
        for name in members:
            if not GATE_MEMBER.match(name):
                raise ValueError(
                    f"member name {name!r} must be a template name: letters, digits and '_', "
                    "not starting with a digit, at most 63 characters (templates write "
                    "gate.members.NAME)"
                )
        return members

    @field_validator("window")
    @classmethod
    def _window(cls, window: float) -> float:
        if window <= 0:
            raise ValueError("window must be longer than zero")
        return window


class Spec(Strict):
    source: Source | None = None
    gate: Gate | None = None
    filter: Filter | None = None
    workflow: WorkflowSpec
    idempotencyKey: str | None = None
    rateLimit: RateLimit | None = None
    retry: Retry | None = None

    @model_validator(mode="after")
    def _source_or_gate(self) -> Spec:
        if (self.source is None) == (self.gate is None):
            raise ValueError(SOURCE_OR_GATE)
        if self.gate is not None and self.filter is not None:
            raise ValueError("a gate rule has no filter of its own: filter each gate member")
        if self.gate is not None and self.idempotencyKey is not None:
            raise ValueError(
                "a gate rule has no idempotencyKey: its Workflow is named after the gate's key "
                "and first event"
            )
        return self

    @property
    def origin(self) -> Source:
        """The source of a plain rule (gate rules have theirs per member)."""
        assert self.source is not None, "a gate rule's sources are its members'"
        return self.source


class RuleDocument(Strict):
    apiVersion: Literal["trigger/v1"]
    kind: Literal["Rule"]
    metadata: Metadata
    spec: Spec


class QueueSpec(Strict):
    """A job queue: at most `limit` of its Workflows run at once in each namespace."""

    limit: StrictInt = Field(ge=1, le=INT32_MAX)
    namespaces: list[str] | None = Field(default=None, min_length=1)
    description: str | None = None

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, namespaces: list[str] | None) -> list[str] | None:
        for namespace in namespaces or ():
            if len(namespace) > 63 or not DNS1123_LABEL.match(namespace):
                raise ValueError(f"namespace {namespace!r} is not a DNS-1123 label")
        if namespaces is not None and len(set(namespaces)) != len(namespaces):
            raise ValueError("a namespace is listed twice")
        return namespaces


class QueueDocument(Strict):
    apiVersion: Literal["trigger/v1"]
    kind: Literal["Queue"]
    metadata: Metadata
    spec: QueueSpec
