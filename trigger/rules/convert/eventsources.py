"""Argo Events `EventSource` entries → a rule's `source`, and how their payloads translate.

One function per kind trigger has a source for: calendar → cron, webhook → webhook,
kafka → kafka, minio → OSS (the same bucket name, events and key filter, delivered to
trigger by EventBridge, MNS or polling), resource on Argo Workflows → `workflow`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from trigger.rules.convert.eventdata import Constant, DataMap, FieldPath, Mapped, Translation
from trigger.rules.convert.result import Conversion, Origin, go_duration_seconds, seconds_text

_URL_PATH: Final = re.compile(r"^/[A-Za-z0-9._~/-]*$")  # what a webhook rule's path allows


@dataclass
class SourcePlan:
    """What an EventSource entry becomes: the rule's source, its payload map, and what it
    adds to every rule that uses it (CEL conditions, a rate limit)."""

    source: dict[str, Any]
    data: DataMap
    conditions: list[str] = field(default_factory=list)
    rate_limit: dict[str, Any] | None = None


Reader = Callable[[str, dict[str, Any], Conversion, Origin], SourcePlan | None]


def plan(
    kind: str, event: str, entry: dict[str, Any], out: Conversion, origin: Origin
) -> SourcePlan | None:
    reader = READERS.get(kind)
    if reader is None:
        out.note(
            origin,
            f"spec.{kind}.{event}",
            "dropped",
            f"{kind} event sources have no trigger source (trigger has oss, kafka, cron, "
            "webhook and workflow)",
        )
        return None
    where = f"spec.{kind}.{event}"
    if isinstance(entry.get("filter"), dict) and entry["filter"].get("expression"):
        out.note(
            origin,
            f"{where}.filter",
            "dropped",
            "source-side expr-lang filters are not "
            "converted, and a rule without it would fire for events the original "
            "skipped: not converted; write the condition as the rule's filter.expr (CEL)",
        )
        return None
    for key in sorted(set(entry) - _KNOWN[kind]):
        out.note(origin, f"{where}.{key}", "dropped", "has no equivalent in a rule")
    return reader(event, entry, out, origin)


# What each reader reads (or reports itself); any other field is reported as dropped.
_KNOWN: Final = {
    "calendar": {
        "schedule",
        "interval",
        "timezone",
        "persistence",
        "exclusionDates",
        "metadata",
        "filter",
    },
    "webhook": {
        "endpoint",
        "method",
        "port",
        "authSecret",
        "serverCertSecret",
        "serverKeySecret",
        "filter",
    },
    "kafka": {
        "url",
        "topic",
        "partition",
        "consumerGroup",
        "jsonBody",
        "limitEventsPerSecond",
        "sasl",
        "tls",
        "schemaRegistry",
        "config",
        "version",
        "awsMskIamAuth",
        "filter",
    },
    "minio": {"bucket", "endpoint", "events", "filter", "insecure", "accessKey", "secretKey"},
    "resource": {"namespace", "group", "version", "resource", "eventTypes", "filter"},
}


# -- calendar ---------------------------------------------------------------------------------


def _calendar(
    event: str, entry: dict[str, Any], out: Conversion, origin: Origin
) -> SourcePlan | None:
    where = f"spec.calendar.{event}"
    cron: dict[str, Any] = {}
    if entry.get("schedule"):
        cron["schedules"] = [str(entry["schedule"])]
    elif entry.get("interval"):
        schedule = interval_schedule(entry["interval"])
        if schedule is None:
            out.note(
                origin,
                f"{where}.interval",
                "dropped",
                f"{entry['interval']!r} does not "
                "divide a minute, hour or day evenly: write it as a cron schedule",
            )
            return None
        cron["schedules"] = [schedule]
        out.note(
            origin,
            f"{where}.interval",
            "changed",
            f"{entry['interval']} became "
            f"{schedule!r}: ticks fall on the clock's boundaries, not every interval "
            "after the event source started",
        )
    else:
        out.note(origin, where, "dropped", "neither schedule nor interval: not converted")
        return None
    cron["timezone"] = str(entry.get("timezone") or "UTC")
    catchup = (entry.get("persistence") or {}).get("catchup") or {}
    if catchup.get("enabled"):
        cron["catchUp"] = "all"
        seconds = go_duration_seconds(catchup.get("maxDuration"))
        if seconds:
            cron["startingDeadline"] = seconds_text(seconds)
    else:
        cron["catchUp"] = "none"  # without persistence, missed ticks are gone
    conditions = []
    excluded = [str(d).removeprefix("EXDATE:")[:8] for d in entry.get("exclusionDates") or []]
    if excluded:
        days = [f"{d[:4]}-{d[4:6]}-{d[6:8]}" for d in excluded]
        conditions.append(
            "!(" + " || ".join(f"event.scheduledTime.startsWith('{d}')" for d in days) + ")"
        )
        out.note(
            origin, f"{where}.exclusionDates", "changed", "became a filter on the tick's UTC date"
        )
    metadata = entry.get("metadata") or {}

    def translate(path: FieldPath) -> Translation:
        if path == ("eventTime",):
            return Mapped(
                ("scheduledTime",),
                "eventTime was Go's time.String() "
                "('2006-01-02 15:04:05 +0000 UTC'); scheduledTime is RFC 3339 UTC",
            )
        if len(path) == 2 and path[0] == "metadata" and path[1] in metadata:
            return Constant(metadata[path[1]])
        return None

    return SourcePlan(
        {"cron": cron}, DataMap(translate, "calendar data is eventTime and metadata"), conditions
    )


def interval_schedule(interval: Any) -> str | None:
    """A Go duration that divides a minute, an hour or a day → the cron schedule."""
    seconds = go_duration_seconds(interval)
    if not seconds or seconds != int(seconds):
        return None
    whole = int(seconds)
    minutes, hours = whole // 60, whole // 3600
    if whole < 60 and 60 % whole == 0:
        return "* * * * * *" if whole == 1 else f"*/{whole} * * * * *"
    if whole % 60 == 0 and whole < 3600 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    if whole % 3600 == 0 and whole < 86400 and 24 % hours == 0:
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    return "0 0 * * *" if whole == 86400 else None


# -- webhook ----------------------------------------------------------------------------------


def _webhook(
    event: str, entry: dict[str, Any], out: Conversion, origin: Origin
) -> SourcePlan | None:
    where = f"spec.webhook.{event}"
    endpoint = str(entry.get("endpoint") or f"/{event}")
    path = endpoint if endpoint.startswith("/") else f"/{endpoint}"
    if not _URL_PATH.match(path) or "//" in path:
        out.note(
            origin,
            f"{where}.endpoint",
            "dropped",
            f"{endpoint!r}: a webhook rule's "
            "path uses only URL path characters (A-Z a-z 0-9 . _ ~ / -): not converted",
        )
        return None
    source: dict[str, Any] = {"path": path}
    method = str(entry.get("method") or "POST").upper()
    if method in ("POST", "PUT", "GET"):
        source["methods"] = [method]
    else:
        out.note(
            origin,
            f"{where}.method",
            "changed",
            f"{method}: trigger takes POST, PUT and GET; the rule takes POST",
        )
    if entry.get("port"):
        out.note(
            origin,
            f"{where}.port",
            "changed",
            f"trigger serves every webhook path on "
            f"its own listen address, not on port {entry['port']}",
        )
    secret = entry.get("authSecret")
    if isinstance(secret, dict):
        env = re.sub(
            r"[^A-Z0-9]+", "_", f"{secret.get('name', '')}_{secret.get('key', '')}".upper()
        ).strip("_")
        source["auth"] = {"bearerTokenEnv": env}
        out.note(
            origin,
            f"{where}.authSecret",
            "manual",
            f"set the daemon's environment "
            f"variable {env} from Secret {secret.get('name')} key {secret.get('key')}",
        )
    for key in ("serverCertSecret", "serverKeySecret"):
        if key in entry:
            out.note(
                origin,
                f"{where}.{key}",
                "manual",
                "terminate TLS in front of trigger (the chart's Ingress)",
            )

    def translate(path: FieldPath) -> Translation:
        if path[:1] == ("body",):
            return Mapped(path)
        if path[:1] == ("header",) and len(path) >= 2 and isinstance(path[1], str):
            caveat = (
                None
                if path[2:] == (0,)
                else ("Argo Events' header values were lists; trigger's are the first value")
            )
            if len(path) > 3 or (len(path) == 3 and path[2] != 0):
                return None
            return Mapped(("headers", path[1].lower()), caveat)
        return None

    return SourcePlan(
        {"webhook": source},
        DataMap(translate, "webhook data is header and body", whole="event.body"),
    )


# -- kafka ------------------------------------------------------------------------------------


def _kafka(event: str, entry: dict[str, Any], out: Conversion, origin: Origin) -> SourcePlan | None:
    where = f"spec.kafka.{event}"
    if not entry.get("topic"):
        out.note(origin, where, "dropped", "no topic: not converted")
        return None
    source: dict[str, Any] = {"topics": [str(entry["topic"])]}
    group = (entry.get("consumerGroup") or {}).get("groupName")
    if group:
        source["group"] = str(group)
    elif "partition" in entry:
        out.note(
            origin,
            f"{where}.partition",
            "changed",
            "trigger reads every partition of "
            "the topic in a consumer group (default: its own group), with committed "
            "offsets; Argo Events read one partition from its newest offset",
        )
    source["format"] = "json" if entry.get("jsonBody") else "bytes"
    if not entry.get("jsonBody"):
        out.note(
            origin,
            f"{where}.jsonBody",
            "changed",
            "not set: the value is base64 "
            "text as in Argo Events (format: bytes); set format: text for UTF-8 text",
        )
    out.note(
        origin,
        f"{where}.url",
        "manual",
        f"configure the brokers {entry.get('url')} "
        "as trigger's Kafka cluster `default` (kafka settings)",
    )
    for key in ("sasl", "tls", "schemaRegistry", "config", "version", "awsMskIamAuth"):
        if key in entry:
            out.note(
                origin,
                f"{where}.{key}",
                "manual",
                "connection settings belong to trigger's kafka settings, not to rules",
            )
    rate = None
    if entry.get("limitEventsPerSecond"):
        rate = {"perSecond": float(entry["limitEventsPerSecond"]), "burst": 1}
    same = ("topic", "key", "partition", "headers", "timestamp")

    def translate(path: FieldPath) -> Translation:
        if path[:1] == ("body",):
            return Mapped(("value", *path[1:]))
        if path[:1] and path[0] in same:
            caveat = (
                "Go's time text became milliseconds since the epoch"
                if path[0] == "timestamp"
                else None
            )
            return Mapped(path, caveat)
        return None

    return SourcePlan(
        {"kafka": source},
        DataMap(
            translate,
            "Kafka data is topic, key, partition, body, headers, timestamp",
            whole="event.value",
        ),
        [],
        rate,
    )


# -- minio → OSS ------------------------------------------------------------------------------

_MINIO_EVENTS: Final = {
    "s3:ObjectCreated:Put": "ObjectCreated:PutObject",
    "s3:ObjectCreated:Post": "ObjectCreated:PostObject",
    "s3:ObjectCreated:Copy": "ObjectCreated:CopyObject",
    "s3:ObjectCreated:CompleteMultipartUpload": "ObjectCreated:CompleteMultipartUpload",
    "s3:ObjectCreated:*": "ObjectCreated:*",
    "s3:ObjectRemoved:Delete": "ObjectRemoved:DeleteObject",
    "s3:ObjectRemoved:*": "ObjectRemoved:*",
}
_MINIO_RECORD: Final = {
    ("s3", "bucket", "name"): ("bucket",),
    ("s3", "object", "key"): ("key",),
    ("s3", "object", "size"): ("size",),
    ("s3", "object", "eTag"): ("etag",),
    ("eventName",): ("eventName",),
    ("eventTime",): ("time",),
}


def _minio(event: str, entry: dict[str, Any], out: Conversion, origin: Origin) -> SourcePlan | None:
    where = f"spec.minio.{event}"
    bucket = (entry.get("bucket") or {}).get("name")
    if not bucket:
        out.note(origin, where, "dropped", "no bucket: not converted")
        return None
    events: list[str] = []
    for index, name in enumerate(entry.get("events") or ["s3:ObjectCreated:*"]):
        if name in _MINIO_EVENTS:
            events.append(_MINIO_EVENTS[name])
        else:
            out.note(
                origin, f"{where}.events[{index}]", "dropped", f"{name}: OSS sends no such event"
            )
    if not events:
        return None
    source: dict[str, Any] = {"bucket": str(bucket), "events": events}
    key = {
        k: str(v) for k, v in (entry.get("filter") or {}).items() if k in ("prefix", "suffix") and v
    }
    if key:
        source["key"] = key
    out.note(
        origin,
        f"{where}.endpoint",
        "manual",
        f"the rule watches the OSS bucket "
        f"{bucket!r}: deliver its events to trigger with EventBridge or MNS, or add "
        "source.oss.poll (README: OSS events); MinIO's endpoint and keys do not carry over",
    )

    def translate(path: FieldPath) -> Translation:
        if path[:2] != ("notification", 0):
            return None
        target = _MINIO_RECORD.get(tuple(path[2:]))  # type: ignore[arg-type]
        if target is None:
            return None
        caveat = (
            "OSS names events like ObjectCreated:PutObject" if target == ("eventName",) else None
        )
        return Mapped(target, caveat)

    return SourcePlan(
        {"oss": source},
        DataMap(
            translate,
            "MinIO data converts at notification.0.s3.bucket.name, "
            ".s3.object.key, .s3.object.size, .s3.object.eTag, .eventName, .eventTime",
        ),
    )


# -- resource on workflows → workflow ---------------------------------------------------------

_PHASES: Final = ("Succeeded", "Failed", "Error")
_WORKFLOW_FIELDS: Final = {
    ("metadata", "name"): ("name",),
    ("metadata", "namespace"): ("namespace",),
    ("metadata", "uid"): ("uid",),
    ("status", "phase"): ("phase",),
    ("status", "message"): ("message",),
}


def _resource(
    event: str, entry: dict[str, Any], out: Conversion, origin: Origin
) -> SourcePlan | None:
    where = f"spec.resource.{event}"
    if entry.get("group") != "argoproj.io" or entry.get("resource") != "workflows":
        out.note(
            origin,
            where,
            "dropped",
            "trigger watches only Argo Workflows finishing "
            "(the workflow source), not other resources",
        )
        return None
    labels = ((entry.get("filter") or {}).get("labels")) or []
    phases, selector, completion = _label_filters(labels, out, origin, f"{where}.filter.labels")
    if not completion or "UPDATE" not in (entry.get("eventTypes") or []):
        out.note(
            origin,
            where,
            "dropped",
            "only completions (UPDATE with the label "
            "workflows.argoproj.io/completed=true or a final phase) convert: trigger's "
            "workflow source fires once when a Workflow finishes",
        )
        return None
    source: dict[str, Any] = {"phases": phases or list(_PHASES)}
    if entry.get("namespace"):
        source["namespace"] = str(entry["namespace"])
    if selector:
        source["selector"] = {"matchLabels": selector}
    for key in ("fields", "afterStart", "createdBy", "prefix"):
        if key in (entry.get("filter") or {}):
            out.note(origin, f"{where}.filter.{key}", "dropped", "not converted")
    out.note(
        origin,
        where,
        "changed",
        "fires once per Workflow and phase, exactly once "
        "across restarts; Argo Events fired on every UPDATE that passed the filter",
    )

    def translate(path: FieldPath) -> Translation:
        if path[:1] != ("body",):
            return None
        inner = tuple(path[1:])
        if inner in _WORKFLOW_FIELDS:
            return Mapped(_WORKFLOW_FIELDS[inner])
        if inner[:2] in (("metadata", "labels"), ("metadata", "annotations")) and len(inner) == 3:
            return Mapped((str(inner[1]), inner[2]))
        return Mapped(("data", *inner))

    return SourcePlan(
        {"workflow": source},
        DataMap(translate, "resource data converts below body", whole="event.data"),
    )


def _label_filters(
    labels: list[dict[str, Any]], out: Conversion, origin: Origin, where: str
) -> tuple[list[str], dict[str, str], bool]:
    phases: list[str] = []
    selector: dict[str, str] = {}
    completion = False
    for index, label in enumerate(labels):
        key, op, value = label.get("key"), label.get("operation", "=="), str(label.get("value", ""))
        if op not in ("=", "=="):
            out.note(
                origin, f"{where}[{index}]", "dropped", f"operation {op!r}: only equality converts"
            )
        elif key == "workflows.argoproj.io/completed" and value == "true":
            completion = True
        elif key == "workflows.argoproj.io/phase" and value in _PHASES:
            phases.append(value)
            completion = True
        else:
            selector[str(key)] = value
    return phases, selector, completion


READERS: Final[dict[str, Reader]] = {
    "calendar": _calendar,
    "webhook": _webhook,
    "kafka": _kafka,
    "minio": _minio,
    "resource": _resource,
}
