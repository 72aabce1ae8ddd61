"""The fields of each source's event document: what patterns, CEL and templates may name.

`Event.doc` is the common fields and the source's own fields at the top level (DESIGN §2);
the decoders build it, and this table says what they build, so rules can be checked
against it at load time (`trigger.rules.fields`) and tests keep both in step. A field is
`LEAF` (a single value: a string, number, boolean or null), `OPEN` (a payload whose
names the sender chooses: any name below it is allowed) or a table of named fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal

from trigger.events import SourceKind

LEAF: Final = "leaf"
OPEN: Final = "open"
Shape = Literal["leaf", "open"] | Mapping[str, "Shape"]


def _table(*leaves: str, **others: Shape) -> Mapping[str, Shape]:
    return MappingProxyType({**dict.fromkeys(leaves, LEAF), **others})


COMMON: Final = _table("id", "source", "type", "subject", "time", data=OPEN)
_OSS: Final = _table(
    *COMMON,
    "bucket",
    "key",
    "size",
    "etag",
    "region",
    "account",
    "eventName",
    "sourceIp",
    "requestId",
    "contentType",
    data=OPEN,
    userMeta=OPEN,
)
_OSS_POLLED: Final = _table(*_OSS, "storageClass", "polled", data=OPEN, userMeta=OPEN)
_KAFKA: Final = _table(
    *COMMON, "topic", "partition", "offset", "key", "timestamp", data=OPEN, headers=OPEN, value=OPEN
)
_CRON: Final = _table(
    *COMMON, "rule", "schedule", "scheduledTime", "timezone", "fireTime", data=OPEN
)
_WEBHOOK: Final = _table(
    *COMMON, "path", "method", data=OPEN, headers=OPEN, query=OPEN, body=OPEN
)
_WORKFLOW: Final = _table(
    *COMMON,
    "name",
    "namespace",
    "uid",
    "phase",
    "template",
    "startedAt",
    "finishedAt",
    "message",
    "triggeredBy",
    data=OPEN,
    labels=OPEN,
    annotations=OPEN,
    parameters=OPEN,
    outputs=OPEN,
)
_BY_SOURCE: Final[Mapping[SourceKind, Mapping[str, Shape]]] = MappingProxyType(
    {"oss": _OSS, "kafka": _KAFKA, "cron": _CRON, "webhook": _WEBHOOK, "workflow": _WORKFLOW}
)
# What templates and CEL see as `rule` (the loader builds it from the rule document).
RULE_CONTEXT: Final = _table("name", "namespace", "template", labels=OPEN)


def event_fields(
    source: SourceKind, *, polled: bool = False, kafka_format: str = "json"
) -> Mapping[str, Shape]:
    """The fields of `source`'s events: a polled OSS object's also has `storageClass` and
    `polled`; a Kafka value read as `text` or `bytes` is a single value (a string)."""
    if source == "oss" and polled:
        return _OSS_POLLED
    if source == "kafka" and kafka_format != "json":
        return MappingProxyType({**_KAFKA, "value": LEAF})
    return _BY_SOURCE[source]
