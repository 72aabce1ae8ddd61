"""A Kubernetes API server emulator for tests, served over real HTTP by aiohttp.

The real `kubernetes_asyncio` client talks to it on a loopback port. It keeps objects in
dicts keyed by resource and (namespace, name), and answers like the real server for every
call trigger makes: create (with `generateName`, uid, resourceVersion, creationTimestamp,
generation), get, list (label and field selectors, `limit`/`continue`), replace and patch
with optimistic concurrency, delete (with finalizers), the `/status` subresource, and watch
with replay from a resourceVersion, `timeoutSeconds`, bookmarks and 410 on a compacted
history. Failures are `Status` objects like the server's, including the size limits: 413
for a request body over 3 MiB, 500 "etcdserver: request is too large" for an object over
1.5 MiB. Tests can inject failures for the next N matching requests (before any state
change), make matching requests slow (`delay`: hold the request before it is served, or
serve it and hold the answer, for a fixed or drawn time on an injectable `sleep`, so a
test can slow the API down in virtual time), seed and inspect objects directly, and count
requests.

Known simplifications: every custom resource accepts `/status` (Argo's CRDs do not enable
the subresource, so main-resource writes also change `status`); strategic merge patches on
built-in resources are applied as JSON merge patches; server-side apply, dryRun, and
namespace termination (deletion is immediate and cascades) are not emulated.

Run standalone with `python -m trigger.testing.kubeapi --port 0 --namespaces default,data`;
it prints `READY http://127.0.0.1:PORT` once listening and serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import copy
import json
import math
import re
import secrets
import signal
import sys
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import yaml
from aiohttp import web

from trigger.testing.served import Served

JSON = dict[str, Any]
Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]
_Selector = tuple[tuple[str, str, frozenset[str]], ...]

_REASONS: Final = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
    504: "Timeout",
}  # fmt: skip
_KNOWN: Final = (
    ("argoproj.io", "v1alpha1", "workflows", "Workflow"),
    ("argoproj.io", "v1alpha1", "workflowtemplates", "WorkflowTemplate"),
    ("argoproj.io", "v1alpha1", "clusterworkflowtemplates", "ClusterWorkflowTemplate"),
    ("argoproj.io", "v1alpha1", "cronworkflows", "CronWorkflow"),
    ("coordination.k8s.io", "v1", "leases", "Lease"),
    ("", "v1", "configmaps", "ConfigMap"),
    ("", "v1", "secrets", "Secret"),
    ("", "v1", "events", "Event"),
    ("", "v1", "namespaces", "Namespace"),
)
_KINDS: Final = {plural: kind for _, _, plural, kind in _KNOWN}
_CLUSTER_SCOPED: Final = frozenset(
    {
        "namespaces",
        "clusterworkflowtemplates",
        "nodes",
        "persistentvolumes",
        "customresourcedefinitions",
    }
)
# Built-in groups: updates without a resourceVersion are unconditional, deletes answer with a
# Status, objects carry no generation. Everything else behaves like a custom resource.
_BUILTIN_GROUPS: Final = frozenset({"", "coordination.k8s.io", "apps", "batch"})
_SERVER_FIELDS: Final = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "generation",
    "resourceVersion",
)
_NAME_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"  # the real server's generateName alphabet
_TRUE: Final = frozenset({"1", "t", "T", "true", "True", "TRUE"})  # Go's strconv.ParseBool
_MERGE_PATCH: Final = "application/merge-patch+json"
_JSON_PATCH: Final = "application/json-patch+json"
_STRATEGIC_PATCH: Final = "application/strategic-merge-patch+json"
_DNS_SUBDOMAIN: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_PART: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_REQUIREMENT: Final = re.compile(
    r"\s*(?:!\s*(?P<absent>[\w./-]+)|(?P<key>[\w./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\))?)\s*"
)
_FIELD_REQUIREMENT: Final = re.compile(r"\s*(?P<key>[\w.]+)\s*(?P<op>==|=|!=)\s*(?P<value>.*?)\s*")
_FIELDS: Final = frozenset({"metadata.name", "metadata.namespace"})
# The real limits: the API server refuses request bodies over 3 MiB with 413; etcd stores
# at most 1.5 MiB per object (--max-request-bytes), which reaches clients as a 500.
MAX_REQUEST_BYTES: Final = 3 * 1024 * 1024
MAX_OBJECT_BYTES: Final = 1536 * 1024


class ApiStatusError(Exception):
    """A request the emulated server refuses; `status` is the Status body it answers with."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: JSON | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.headers = dict(headers or {})
        self.status: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason or _REASONS.get(code, "Unknown"),
            "code": code,
        }
        if details:
            self.status["details"] = details


@dataclass(frozen=True)
class _Type:
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def kind(self) -> str:
        return _KINDS.get(self.plural) or self.plural.removesuffix("s").capitalize()

    @property
    def custom(self) -> bool:
        return self.group not in _BUILTIN_GROUPS

    def details(self, name: str) -> JSON:
        found: JSON = {"name": name, "group": self.group, "kind": self.plural}
        return {k: v for k, v in found.items() if v}


_NAMESPACES: Final = _Type("", "v1", "namespaces")


@dataclass(frozen=True)
class _Ref:
    """What a request path names: a collection, an object, or an object's subresource."""

    rtype: _Type
    namespace: str | None
    name: str | None = None
    sub: str | None = None
    all_namespaces: bool = False

    @property
    def shape(self) -> str:
        if self.name is None:
            return "collection"
        return {None: "object", "status": "status"}.get(self.sub, "other")


def _parse_path(path: str, cluster_scoped: frozenset[str]) -> _Ref | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        return None
    rtype = _Type(group, version, rest[0])
    namespaced = rtype.plural not in cluster_scoped
    if namespaced != (namespace is not None) and not (namespaced and len(rest) == 1):
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return _Ref(rtype, namespace, name, sub, all_namespaces=namespaced and namespace is None)


def _key(obj: JSON) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def _now_utc() -> datetime:
    return datetime.now(UTC)


# --- selectors -------------------------------------------------------------------------


def _split_requirements(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str) -> _Selector:
    """Parse a label selector (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`)."""
    requirements = []
    for part in _split_requirements(text):
        found = _LABEL_REQUIREMENT.fullmatch(part)
        if found is None:
            raise ApiStatusError(400, f"unable to parse requirement: {part!r}")
        if found["absent"]:
            requirements.append((found["absent"], "absent", frozenset[str]()))
        elif found["op"]:
            op = "notin" if found["op"] == "!=" else "in"
            requirements.append((found["key"], op, frozenset({found["value"]})))
        elif found["setop"]:
            values = frozenset(v.strip() for v in found["values"].split(","))
            requirements.append((found["key"], found["setop"], values))
        else:
            requirements.append((found["key"], "exists", frozenset()))
    return tuple(requirements)


def parse_field_selector(text: str) -> _Selector:
    """Parse a field selector on `metadata.name` and `metadata.namespace`."""
    requirements = []
    for part in _split_requirements(text):
        found = _FIELD_REQUIREMENT.fullmatch(part)
        if found is None:
            raise ApiStatusError(400, f"invalid field selector: {part!r}")
        if found["key"] not in _FIELDS:
            raise ApiStatusError(400, f"field label not supported: {found['key']}")
        op = "notin" if found["op"] == "!=" else "in"
        requirements.append((found["key"], op, frozenset({found["value"]})))
    return tuple(requirements)


def selector_matches(selector: _Selector, values: dict[str, Any]) -> bool:
    """Whether a label map (or a field map) satisfies every requirement of a selector."""
    for key, op, wanted in selector:
        present = key in values
        if (
            (op == "exists" and not present)
            or (op == "absent" and present)
            or (op == "in" and (not present or values[key] not in wanted))
            or (op == "notin" and present and values[key] in wanted)
        ):
            return False
    return True


def _object_matches(obj: JSON, labels: _Selector, fields: _Selector) -> bool:
    meta = obj["metadata"]
    if labels and not selector_matches(labels, meta.get("labels") or {}):
        return False
    fieldset = {"metadata.name": meta["name"], "metadata.namespace": meta.get("namespace", "")}
    return not fields or selector_matches(fields, fieldset)


# --- patches -----------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch; unchanged subtrees are shared, not copied."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _patch_error(message: str) -> ApiStatusError:
    return ApiStatusError(
        422, f"the server rejected our request due to an error in our request: {message}"
    )


def _pointer(text: Any) -> list[str]:
    if not isinstance(text, str) or (text and not text.startswith("/")):
        raise _patch_error(f"invalid JSON pointer {text!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in text.split("/")[1:]]


def _index(items: list[Any], token: str, *, allow_end: bool) -> int:
    if allow_end and token == "-":  # noqa: S105 (a JSON pointer token, not a secret)
        return len(items)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise _patch_error(f"invalid array index {token!r}")
    if int(token) > len(items) - (0 if allow_end else 1):
        raise _patch_error(f"array index {token} out of bounds")
    return int(token)


def _resolve(doc: Any, tokens: Sequence[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token, allow_end=False)]
        else:
            raise _patch_error(f"missing path /{'/'.join(tokens)}")
    return doc


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1])
    if isinstance(parent, list):
        parent.insert(_index(parent, tokens[-1], allow_end=True), value)
    elif isinstance(parent, dict):
        parent[tokens[-1]] = value
    else:
        raise _patch_error(f"cannot add to /{'/'.join(tokens)}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    parent = _resolve(doc, tokens[:-1]) if tokens else None
    if isinstance(parent, list):
        del parent[_index(parent, tokens[-1], allow_end=False)]
    elif isinstance(parent, dict) and tokens[-1] in parent:
        del parent[tokens[-1]]
    else:
        raise _patch_error(f"missing path /{'/'.join(tokens)}")
    return doc


def _apply_operation(doc: Any, op: Any) -> Any:
    if not isinstance(op, dict):
        raise _patch_error(f"invalid operation {op!r}")
    kind, path = op.get("op"), _pointer(op.get("path"))
    if kind in ("move", "copy"):
        source = _pointer(op.get("from"))
        value = copy.deepcopy(_resolve(doc, source))
        return _add(_remove(doc, source) if kind == "move" else doc, path, value)
    if kind == "remove":
        return _remove(doc, path)
    if "value" not in op:
        raise _patch_error(f"operation {kind!r} needs a value")
    if kind == "test":
        if _resolve(doc, path) != op["value"]:
            raise _patch_error(f"testing value {op.get('path')} failed")
        return doc
    if kind == "replace":
        _resolve(doc, path)  # replace needs an existing target, add does not
        return _add(_remove(doc, path), path, copy.deepcopy(op["value"])) if path else op["value"]
    if kind == "add":
        return _add(doc, path, copy.deepcopy(op["value"]))
    raise _patch_error(f"unexpected operation {kind!r}")


def json_patch(doc: JSON, operations: list[Any]) -> JSON:
    """Apply an RFC 6902 JSON patch (add, remove, replace, move, copy, test) to a copy."""
    result: Any = copy.deepcopy(doc)
    for op in operations:
        result = _apply_operation(result, op)
    if not isinstance(result, dict):
        raise _patch_error("the patched document is not an object")
    return result


def _apply_patch(rtype: _Type, content_type: str, current: JSON, body: Any) -> JSON:
    if content_type == _JSON_PATCH:
        if not isinstance(body, list):
            raise ApiStatusError(
                400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
            )
        return json_patch(current, body)
    if content_type == _MERGE_PATCH or (content_type == _STRATEGIC_PATCH and not rtype.custom):
        if not isinstance(body, dict):
            raise ApiStatusError(
                400, "json: cannot unmarshal array into Go value of type map[string]interface {}"
            )
        patched: JSON = merge_patch(current, body)
        return patched
    raise ApiStatusError(
        415,
        "the body of the request was in an unknown format - accepted media "
        f"types include: {_JSON_PATCH}, {_MERGE_PATCH}",
    )


# --- validation and Status builders -------------------------------------------------------


def _invalid(rtype: _Type, name: str, path: str, value: Any, why: str) -> ApiStatusError:
    cause = f"Invalid value: {json.dumps(value)}: {why}"
    kind = f"{rtype.kind}.{rtype.group}" if rtype.group else rtype.kind
    details = {
        "name": name,
        "group": rtype.group,
        "kind": rtype.kind,
        "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": path}],
    }
    return ApiStatusError(422, f'{kind} "{name}" is invalid: {path}: {cause}', details=details)


def _label_problem(key: Any, value: Any) -> str | None:
    prefix, _, name = key.rpartition("/") if isinstance(key, str) else ("", "", "")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return "a label key prefix must be a lowercase RFC 1123 subdomain"
    if len(name) > 63 or not _LABEL_PART.fullmatch(name):
        return "a label key name must be 63 characters or less, alphanumeric, '-', '_' or '.'"
    if (
        not isinstance(value, str)
        or len(value) > 63
        or not (value == "" or _LABEL_PART.fullmatch(value))
    ):
        return "a label value must be 63 characters or less, alphanumeric, '-', '_' or '.'"
    return None


def _validate(rtype: _Type, meta: JSON) -> None:
    name = meta["name"]
    pattern, limit = (_DNS_LABEL, 63) if rtype == _NAMESPACES else (_DNS_SUBDOMAIN, 253)
    if not isinstance(name, str) or len(name) > limit or not pattern.fullmatch(name):
        raise _invalid(
            rtype,
            str(name),
            "metadata.name",
            name,
            "a lowercase RFC 1123 name must consist of lower case alphanumeric "
            "characters, '-' or '.', and start and end with an alphanumeric character",
        )
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        raise ApiStatusError(400, "metadata.labels must be a map of strings")
    for key, value in labels.items():
        problem = _label_problem(key, value)
        if problem:
            raise _invalid(rtype, name, f"metadata.labels[{key}]", value, problem)


def _not_found(rtype: _Type, name: str) -> ApiStatusError:
    return ApiStatusError(404, f'{rtype.qualified} "{name}" not found', details=rtype.details(name))


def _conflict(rtype: _Type, name: str, why: str | None = None) -> ApiStatusError:
    why = why or (
        "the object has been modified; please apply your changes to the latest "
        "version and try again"
    )
    return ApiStatusError(
        409,
        f'Operation cannot be fulfilled on {rtype.qualified} "{name}": {why}',
        details=rtype.details(name),
    )


def _success(rtype: _Type, obj: JSON) -> JSON:
    details = {**rtype.details(obj["metadata"]["name"]), "uid": obj["metadata"].get("uid")}
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


def _kind_of(rtype: _Type, body: JSON) -> str:
    """The object's kind, refusing a body whose apiVersion or kind contradicts the URL."""
    sent_version, kind = body.get("apiVersion"), body.get("kind") or rtype.kind
    if sent_version not in (None, "", rtype.api_version):
        raise ApiStatusError(
            400,
            f"the API version in the data ({sent_version}) does not "
            f"match the expected API version ({rtype.api_version})",
        )
    if rtype.plural in _KINDS and kind != rtype.kind:
        raise ApiStatusError(
            400, f"the kind in the data ({kind}) does not match the expected kind ({rtype.kind})"
        )
    return str(kind)


def _spec(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _with_status_of(current: JSON, new: JSON) -> JSON:
    result = {k: v for k, v in current.items() if k != "status"}
    if new.get("status") is not None:
        result["status"] = new["status"]
    return result


# --- storage and watch fan-out ---------------------------------------------------------


@dataclass(frozen=True)
class _Change:
    rv: int
    rtype: _Type
    event: str
    obj: JSON
    old: JSON | None


@dataclass(eq=False)
class _Watcher:
    rtype: _Type
    namespace: str | None
    labels: _Selector
    fields: _Selector
    queue: asyncio.Queue[_Change | None] = field(default_factory=asyncio.Queue)

    def _sees(self, obj: JSON | None) -> bool:
        if obj is None:
            return False
        in_namespace = self.namespace is None or obj["metadata"].get("namespace") == self.namespace
        return in_namespace and _object_matches(obj, self.labels, self.fields)

    def translate(self, change: _Change) -> tuple[str, JSON] | None:
        """The event this watcher gets; a selector match that starts or ends is ADDED/DELETED."""
        now, before = self._sees(change.obj), self._sees(change.old)
        if change.event != "MODIFIED":
            return (change.event, change.obj) if now else None
        if now:
            return ("MODIFIED" if before else "ADDED", change.obj)
        return ("DELETED", change.obj) if before else None


class _Store:
    """Objects, the global resourceVersion counter, a bounded change history and watchers."""

    def __init__(
        self,
        namespaces: Iterable[str],
        history: int,
        clock: Clock,
        cluster_scoped: frozenset[str],
        max_object_bytes: int | None = None,
    ) -> None:
        self.cluster_scoped = cluster_scoped
        self.max_object_bytes = max_object_bytes
        self._clock = clock
        self._rv = 0
        self._objects: dict[_Type, dict[tuple[str, str], JSON]] = {}
        self._history: deque[_Change] = deque(maxlen=history)
        self._expired_rv = 0
        self._watchers: dict[_Type, set[_Watcher]] = {}
        self._watchers_changed = asyncio.Event()
        for name in namespaces:
            self.create(_NAMESPACES, None, {"metadata": {"name": name}})

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def _check_size(self, obj: JSON) -> None:
        """etcd refuses an object over its request limit; the API server passes that on
        as a 500 (kubernetes#112152)."""
        limit = self.max_object_bytes
        if limit is not None and len(json.dumps(obj, separators=(",", ":"))) > limit:
            raise ApiStatusError(500, "etcdserver: request is too large")

    def _bucket(self, rtype: _Type) -> dict[tuple[str, str], JSON]:
        return self._objects.setdefault(rtype, {})

    def _timestamp(self) -> str:
        return self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _emit(self, rtype: _Type, event: str, obj: JSON, old: JSON | None) -> None:
        change = _Change(int(obj["metadata"]["resourceVersion"]), rtype, event, obj, old)
        if len(self._history) == self._history.maxlen:
            self._expired_rv = self._history[0].rv
        self._history.append(change)
        for watcher in self._watchers.get(rtype, ()):
            watcher.queue.put_nowait(change)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def find(self, rtype: _Type, namespace: str | None, name: str) -> JSON | None:
        return self._bucket(rtype).get((namespace or "", name))

    def get(self, rtype: _Type, namespace: str | None, name: str) -> JSON:
        found = self.find(rtype, namespace, name)
        if found is None:
            raise _not_found(rtype, name)
        return found

    def select(
        self, rtype: _Type, namespace: str | None, labels: _Selector = (), fields: _Selector = ()
    ) -> list[JSON]:
        bucket = self._bucket(rtype)
        return [
            bucket[k]
            for k in sorted(bucket)
            if (namespace is None or k[0] == namespace)
            and _object_matches(bucket[k], labels, fields)
        ]

    def require_namespace(self, namespace: str) -> None:
        if self.find(_NAMESPACES, None, namespace) is None:
            raise ApiStatusError(
                404,
                f'namespaces "{namespace}" not found',
                details={"name": namespace, "kind": "namespaces"},
            )

    def _generate_name(self, rtype: _Type, namespace: str | None, meta: JSON) -> str:
        prefix = meta.get("generateName")
        if not prefix or not isinstance(prefix, str):
            raise _invalid(rtype, "", "metadata.name", "", "name or generateName is required")
        for _ in range(8):
            name = prefix[:58] + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
            if self.find(rtype, namespace, name) is None:
                return name
        raise ApiStatusError(
            409, f'{rtype.qualified} "{prefix}" already exists', reason="AlreadyExists"
        )

    def create(self, rtype: _Type, namespace: str | None, body: JSON) -> JSON:
        """Store a new object the way the API server fills in its metadata."""
        if namespace is not None:
            self.require_namespace(namespace)
        meta = dict(body.get("metadata") or {})
        if namespace and meta.get("namespace") not in (None, "", namespace):
            raise ApiStatusError(
                400,
                "the namespace of the provided object does not match "
                "the namespace sent on the request",
            )
        meta["name"] = meta.get("name") or self._generate_name(rtype, namespace, meta)
        _validate(rtype, meta)
        if self.find(rtype, namespace, meta["name"]) is not None:
            raise ApiStatusError(
                409,
                f'{rtype.qualified} "{meta["name"]}" already exists',
                reason="AlreadyExists",
                details=rtype.details(meta["name"]),
            )
        meta.pop("deletionTimestamp", None)
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=self._next_rv(),
            creationTimestamp=self._timestamp(),
        )
        if namespace:
            meta["namespace"] = namespace
        if rtype.custom:
            meta["generation"] = 1
        obj = {
            **body,
            "apiVersion": rtype.api_version,
            "kind": _kind_of(rtype, body),
            "metadata": meta,
        }
        if rtype == _NAMESPACES:
            obj.update(spec={"finalizers": ["kubernetes"]}, status={"phase": "Active"})
        self._check_size(obj)
        self._bucket(rtype)[_key(obj)] = obj
        self._emit(rtype, "ADDED", obj, None)
        return obj

    def replace(
        self,
        rtype: _Type,
        namespace: str | None,
        name: str,
        body: JSON,
        *,
        status_only: bool = False,
    ) -> JSON:
        """PUT: optimistic concurrency on metadata.resourceVersion, then commit."""
        current = self.get(rtype, namespace, name)
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise ApiStatusError(
                400,
                f"the name of the object ({meta.get('name')}) does not "
                f"match the name on the URL ({name})",
            )
        sent = meta.get("resourceVersion")
        if not sent and rtype.custom:
            raise _invalid(
                rtype, name, "metadata.resourceVersion", 0, "must be specified for an update"
            )
        return self.commit(rtype, current, body, status_only=status_only, sent_rv=sent)

    def commit(
        self,
        rtype: _Type,
        current: JSON,
        new: JSON,
        *,
        status_only: bool = False,
        sent_rv: str | None = None,
    ) -> JSON:
        """Write an updated object: server fields kept, generation and resourceVersion bumped."""
        old_meta = current["metadata"]
        if sent_rv and sent_rv != old_meta["resourceVersion"]:
            raise _conflict(rtype, old_meta["name"])
        new = _with_status_of(current, new) if status_only else new
        meta = {k: v for k, v in (new.get("metadata") or {}).items() if k not in _SERVER_FIELDS}
        meta.update({k: old_meta[k] for k in _SERVER_FIELDS if k in old_meta})
        new = {
            **new,
            "apiVersion": current["apiVersion"],
            "kind": current["kind"],
            "metadata": meta,
        }
        _validate(rtype, meta)
        if new == current:
            return current  # a no-op write neither bumps resourceVersion nor notifies watchers
        if rtype.custom and _spec(new) != _spec(current):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_rv()
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(rtype, new)
        self._check_size(new)
        self._bucket(rtype)[_key(new)] = new
        self._emit(rtype, "MODIFIED", new, current)
        return new

    def delete(
        self, rtype: _Type, namespace: str | None, name: str, preconditions: JSON | None = None
    ) -> tuple[JSON, bool]:
        """Delete now, or mark for deletion while finalizers remain; True when gone."""
        current = self.get(rtype, namespace, name)
        meta = current["metadata"]
        for field_name, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            wanted = (preconditions or {}).get(field_name)
            if wanted and wanted != meta.get(field_name):
                held = meta.get(field_name)
                raise _conflict(
                    rtype,
                    name,
                    f"Precondition failed: {label} in precondition: "
                    f"{wanted}, {label} in object meta: {held}",
                )
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return current, False
            marked = {
                **current,
                "metadata": {
                    **meta,
                    "deletionTimestamp": self._timestamp(),
                    "resourceVersion": self._next_rv(),
                },
            }
            self._bucket(rtype)[_key(marked)] = marked
            self._emit(rtype, "MODIFIED", marked, current)
            return marked, False
        gone = {**current, "metadata": {**meta, "resourceVersion": self._next_rv()}}
        return self._remove(rtype, gone), True

    def _remove(self, rtype: _Type, obj: JSON) -> JSON:
        del self._bucket(rtype)[_key(obj)]
        self._emit(rtype, "DELETED", obj, None)
        if rtype == _NAMESPACES:
            for other, bucket in list(self._objects.items()):
                for key in [k for k in bucket if k[0] == obj["metadata"]["name"]]:
                    gone = bucket[key]
                    meta = {**gone["metadata"], "resourceVersion": self._next_rv()}
                    self._remove(other, {**gone, "metadata": meta})
        return obj

    def subscribe(self, watcher: _Watcher, since: str | None) -> list[_Change]:
        """Register a watcher and return what it must see before live changes."""
        if since in (None, "", "0"):
            current = self.select(watcher.rtype, watcher.namespace)
            initial = [
                _Change(int(o["metadata"]["resourceVersion"]), watcher.rtype, "ADDED", o, None)
                for o in current
            ]
        else:
            try:
                start = int(since or "")
            except ValueError:
                raise ApiStatusError(400, f"invalid resource version {since!r}") from None
            if start < self._expired_rv:
                raise ApiStatusError(
                    410,
                    f"too old resource version: {start} ({self._expired_rv + 1})",
                    reason="Expired",
                )
            initial = [c for c in self._history if c.rv > start and c.rtype == watcher.rtype]
        self._watchers.setdefault(watcher.rtype, set()).add(watcher)
        self._announce_watchers()
        return initial

    @property
    def watching(self) -> int:
        return sum(len(watchers) for watchers in self._watchers.values())

    def unsubscribe(self, watcher: _Watcher) -> None:
        self._watchers.get(watcher.rtype, set()).discard(watcher)
        self._announce_watchers()

    def _announce_watchers(self) -> None:
        self._watchers_changed.set()
        self._watchers_changed = asyncio.Event()

    async def watchers_changed(self) -> None:
        await self._watchers_changed.wait()

    def close_watchers(self) -> None:
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.queue.put_nowait(None)

    def compact(self) -> None:
        """Forget the change history, as etcd compaction does: older watches get 410."""
        self._history.clear()
        self._expired_rv = self._rv


# --- HTTP ------------------------------------------------------------------------------


@dataclass
class Injection:
    """A failure the emulator answers the next `remaining` matching requests with."""

    status: int
    remaining: int
    method: str | None = None
    path_contains: str | None = None
    retry_after: int | None = None
    message: str | None = None

    def matches(self, method: str, path_qs: str) -> bool:
        return _matches(self.remaining, self.method, self.path_contains, method, path_qs)

    def error(self) -> ApiStatusError:
        headers = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        message = self.message or f"injected failure ({self.status})"
        return ApiStatusError(self.status, message, headers=headers)


def _matches(
    remaining: int, method: str | None, path_contains: str | None, req_method: str, path_qs: str
) -> bool:
    return (
        remaining > 0
        and (method is None or method.upper() == req_method)
        and (path_contains is None or path_contains in path_qs)
    )


@dataclass
class Delay:
    """Slowness the emulator adds to the next `remaining` matching requests.

    `seconds` is a number, or a function drawn once per request (e.g. a seeded random
    choice). `before=False` serves the request at once and holds its answer (the client
    learns of a write late, or reads a state that is old by then); `before=True` holds the
    request before it is served (a write is applied late). `held` counts the requests held
    now; `release()` answers them at once and ends the delay.
    """

    seconds: float | Callable[[], float]
    remaining: int
    method: str | None = None
    path_contains: str | None = None
    before: bool = False
    held: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def matches(self, method: str, path_qs: str) -> bool:
        return _matches(self.remaining, self.method, self.path_contains, method, path_qs)

    def release(self) -> None:
        """Stop delaying: answer every held request now and let later ones through."""
        self.remaining = 0
        self.released.set()

    async def hold(self, sleep: Sleep) -> None:
        """Wait this request's delay on `sleep`, or until released."""
        seconds = self.seconds() if callable(self.seconds) else self.seconds
        self.held += 1
        waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(self.released.wait())}
        if seconds < math.inf:
            waits.add(asyncio.ensure_future(sleep(seconds)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.held -= 1
            for waiting in waits:
                waiting.cancel()


def _json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


async def _read_json(request: web.Request, *, optional: bool = False) -> Any:
    raw = await request.read()
    if optional and not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as err:
        raise ApiStatusError(400, f"couldn't get version/kind; json parse error: {err}") from None


def _require_object(body: Any) -> JSON:
    if not isinstance(body, dict):
        raise ApiStatusError(400, "the body of the request must be a JSON object")
    return body


def _encode_continue(rv: str, key: tuple[str, str]) -> str:
    raw = json.dumps({"rv": rv, "start": list(key)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _paginate(
    items: list[JSON], limit_text: str | None, token: str | None, rv: str
) -> tuple[list[JSON], JSON]:
    meta: JSON = {"resourceVersion": rv}
    if token:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
            meta["resourceVersion"], start = decoded["rv"], tuple(decoded["start"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ApiStatusError(400, "continue key is not valid") from None
        items = [o for o in items if _key(o) > start]
    try:
        limit = int(limit_text or 0)
    except ValueError:
        raise ApiStatusError(400, f"invalid limit {limit_text!r}") from None
    if 0 < limit < len(items):
        meta["continue"] = _encode_continue(meta["resourceVersion"], _key(items[limit - 1]))
        meta["remainingItemCount"] = len(items) - limit
        items = items[:limit]
    return items, meta


_Handler = Callable[[web.Request, _Ref], Awaitable[web.StreamResponse]]


class KubeEmulator(Served):
    """An in-process Kubernetes API server on a loopback port, for tests."""

    def __init__(
        self,
        namespaces: Iterable[str] = ("default",),
        *,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        history: int = 1000,
        cluster_scoped: Iterable[str] = (),
        bookmark_interval: float = 1.0,
        clock: Clock = _now_utc,
        max_request_bytes: int | None = MAX_REQUEST_BYTES,
        max_object_bytes: int | None = MAX_OBJECT_BYTES,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """`clock` stamps objects; `sleep` waits out `delay`s (a VirtualClock's `sleep`
        makes them virtual)."""
        self.token = token
        self.requests: list[tuple[str, str, str]] = []
        self.max_request_bytes = max_request_bytes
        self._namespaces = list(namespaces)
        self._store = _Store(
            self._namespaces,
            history,
            clock,
            _CLUSTER_SCOPED | frozenset(cluster_scoped),
            max_object_bytes,
        )
        self._host, self._port = host, port
        self._bookmark_interval = bookmark_interval
        self._injections: list[Injection] = []
        self._delays: list[Delay] = []
        self._sleep = sleep
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._verbs: dict[tuple[str, str], _Handler] = {
            ("GET", "collection"): self._list,
            ("POST", "collection"): self._create,
            ("DELETE", "collection"): self._delete_collection,
            ("GET", "object"): self._get,
            ("PUT", "object"): self._replace,
            ("PATCH", "object"): self._patch,
            ("DELETE", "object"): self._delete,
            ("GET", "status"): self._get,
            ("PUT", "status"): self._replace,
            ("PATCH", "status"): self._patch,
        }
        self._discovery = self._discovery_documents()
        self.app = web.Application(client_max_size=16 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    # lifecycle

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"

    async def stop(self) -> None:
        self._store.close_watchers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the emulator is not started")
        return self._url

    def client_configuration(self, *, token: str | None = None) -> Any:
        """A kubernetes_asyncio Configuration that points at this emulator."""
        from kubernetes_asyncio.client import Configuration

        config = Configuration(host=self.url)
        token = token if token is not None else self.token
        if token:
            config.api_key = {"BearerToken": token}
            config.api_key_prefix = {"BearerToken": "Bearer"}
        return config

    def kubeconfig(self, path: str | Path, *, token: str | None = None) -> Path:
        """Write a kubeconfig for this emulator (for a daemon running as a subprocess)."""
        token = token if token is not None else self.token
        context = {
            "cluster": "emulator",
            "user": "emulator",
            "namespace": (self._namespaces or ["default"])[0],
        }
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": token} if token else {}}],
            "contexts": [{"name": "emulator", "context": context}],
            "preferences": {},
        }
        target = Path(path)
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
        return target

    # test controls and introspection

    def inject(
        self,
        status: int,
        *,
        count: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
        retry_after: int | None = None,
        body_message: str | None = None,
    ) -> Injection:
        """Fail the next `count` requests matching method and a substring of path?query.

        The failure is answered before any state change, as a Status body with
        `body_message` and, when given, a Retry-After header.
        """
        injection = Injection(status, count, method, path_contains, retry_after, body_message)
        self._injections.append(injection)
        return injection

    def delay(
        self,
        seconds: float | Callable[[], float],
        *,
        count: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
        before: bool = False,
    ) -> Delay:
        """Slow down the next `count` requests matching method and a substring of path?query.

        Each is held `seconds` (a number, `math.inf` until released, or a function drawn
        per request) on the emulator's `sleep`: after it is served (`before=False`, the
        answer is late) or before (`before=True`, the change is late). Injected failures
        are answered after a `before` delay. See `Delay`.
        """
        slow = Delay(seconds, count, method, path_contains, before)
        self._delays.append(slow)
        return slow

    def clear_injections(self) -> None:
        """Drop every pending injected failure: the API server has recovered."""
        self._injections.clear()

    def count(self, *, method: str | None = None, path_contains: str | None = None) -> int:
        """How many requests matched the method and a substring of path?query."""
        return sum(
            1
            for m, path, query in self.requests
            if (method is None or m == method.upper())
            and (path_contains is None or path_contains in f"{path}?{query}")
        )

    def objects(
        self, group: str, version: str, plural: str, namespace: str | None = None
    ) -> list[JSON]:
        """Copies of the stored objects, sorted by namespace and name."""
        return copy.deepcopy(self._store.select(_Type(group, version, plural), namespace))

    def get_object(
        self, group: str, version: str, plural: str, name: str, namespace: str | None = None
    ) -> JSON | None:
        found = self._store.find(_Type(group, version, plural), namespace, name)
        return copy.deepcopy(found)

    def put_object(self, group: str, version: str, plural: str, obj: JSON) -> JSON:
        """Seed an object (create, or overwrite whatever is stored), notifying watchers."""
        rtype, body = _Type(group, version, plural), copy.deepcopy(obj)
        meta = body.setdefault("metadata", {})
        scoped = plural not in self._store.cluster_scoped
        namespace = meta.get("namespace", "default") if scoped else None
        current = self._store.find(rtype, namespace, meta.get("name", ""))
        if current is None:
            return copy.deepcopy(self._store.create(rtype, namespace, body))
        return copy.deepcopy(self._store.commit(rtype, current, body))

    def set_status(
        self,
        group: str,
        version: str,
        plural: str,
        name: str,
        status: JSON,
        *,
        namespace: str | None = None,
    ) -> JSON:
        """Replace an object's status, as a controller would."""
        rtype = _Type(group, version, plural)
        current = self._store.get(rtype, namespace, name)
        new = {**current, "status": copy.deepcopy(status)}
        return copy.deepcopy(self._store.commit(rtype, current, new, status_only=True))

    def delete_object(
        self, group: str, version: str, plural: str, name: str, namespace: str | None = None
    ) -> None:
        self._store.delete(_Type(group, version, plural), namespace, name)

    def add_namespace(self, name: str) -> None:
        self._store.create(_NAMESPACES, None, {"metadata": {"name": name}})

    def compact(self) -> None:
        """Drop the watch history so watches from an older resourceVersion get 410 Gone."""
        self._store.compact()

    @property
    def resource_version(self) -> str:
        """The newest resourceVersion handed out, as the server's string."""
        return self._store.resource_version

    @property
    def watching(self) -> int:
        """How many watch streams are open."""
        return self._store.watching

    async def wait_watching(self, count: int = 1) -> None:
        """Wait until at least `count` watches are open, so later changes reach them live."""
        while self._store.watching < count:
            await self._store.watchers_changed()

    # request handling

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, request.query_string))
        slow = next((d for d in self._delays if d.matches(request.method, request.path_qs)), None)
        if slow is not None:
            slow.remaining -= 1
            if slow.before:
                await slow.hold(self._sleep)
        response = await self._answer(request)
        if slow is not None and not slow.before:
            await slow.hold(self._sleep)
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        try:
            for injection in self._injections:
                if injection.matches(request.method, request.path_qs):
                    injection.remaining -= 1
                    raise injection.error()
            if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiStatusError(401, "Unauthorized")
            limit = self.max_request_bytes
            if limit is not None and (request.content_length or 0) > limit:
                raise ApiStatusError(413, f"Request entity too large: limit is {limit}")
            return await self._route(request)
        except ApiStatusError as err:
            return _json_response(err.status, err.code, err.headers)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        discovery = self._discovery.get(request.path.rstrip("/"))
        if discovery is not None and request.method == "GET":
            return _json_response(discovery)
        ref = _parse_path(request.path, self._store.cluster_scoped)
        if ref is None or ref.shape == "other":
            raise ApiStatusError(404, "the server could not find the requested resource")
        handler = self._verbs.get((request.method, ref.shape))
        if handler is None or (ref.all_namespaces and request.method != "GET"):
            raise ApiStatusError(
                405, "the server does not allow this method on the requested resource"
            )
        return await handler(request, ref)

    def _discovery_documents(self) -> dict[str, JSON]:
        groups = sorted({(g, v) for g, v, _, _ in _KNOWN if g})
        documents: dict[str, JSON] = {
            "/version": {
                "major": "1",
                "minor": "30",
                "gitVersion": "v1.30.0-emulator",
                "platform": "linux/amd64",
            },
            "/api": {"kind": "APIVersions", "versions": ["v1"]},
            "/apis": {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                        "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                    }
                    for g, v in groups
                ],
            },
        }
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        for group, version in [("", "v1"), *groups]:
            api_version = _Type(group, version, "").api_version
            resources = [
                {
                    "name": p,
                    "namespaced": p not in self._store.cluster_scoped,
                    "kind": k,
                    "verbs": verbs,
                }
                for g, v, p, k in _KNOWN
                if (g, v) == (group, version)
            ]
            documents["/api/v1" if not group else f"/apis/{api_version}"] = {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": api_version,
                "resources": resources,
            }
        return documents

    async def _get(self, request: web.Request, ref: _Ref) -> web.StreamResponse:
        return _json_response(self._store.get(ref.rtype, ref.namespace, ref.name or ""))

    async def _create(self, request: web.Request, ref: _Ref) -> web.StreamResponse:
        body = _require_object(await _read_json(request))
        return _json_response(self._store.create(ref.rtype, ref.namespace, body), 201)

    async def _replace(self, request: web.Request, ref: _Ref) -> web.StreamResponse:
        body = _require_object(await _read_json(request))
        obj = self._store.replace(
            ref.rtype, ref.namespace, ref.name or "", body, status_only=ref.sub == "status"
        )
        return _json_response(obj)

    async def _patch(self, request: web.Request, ref: _Ref) -> web.StreamResponse:
        body = await _read_json(request)
        current = self._store.get(ref.rtype, ref.namespace, ref.name or "")
        patched = _apply_patch(ref.rtype, request.content_type, current, body)
        sent_rv = (patched.get("metadata") or {}).get("resourceVersion")
        obj = self._store.commit(
            ref.rtype, current, patched, status_only=ref.sub == "status", sent_rv=sent_rv
        )
        return _json_response(obj)

    async def _delete(self, request: web.Request, ref: _Ref) -> web.StreamResponse:
        options = await _read_json(request, optional=True)
        preconditions = options.get("preconditions") if isinstance(options, dict) else None
        obj, gone = self._store.delete(ref.rtype, ref.namespace, ref.name or "", preconditions)
        return _json_response(_success(ref.rtype, obj) if gone and not ref.rtype.custom else obj)

    async def _delete_collection(self, request: web.Request, ref: _Ref) -> web.StreamResponse:
        labels = parse_label_selector(request.query.get("labelSelector", ""))
        fields = parse_field_selector(request.query.get("fieldSelector", ""))
        items = self._store.select(ref.rtype, ref.namespace, labels, fields)
        deleted = [self._store.delete(ref.rtype, ref.namespace, _key(o)[1])[0] for o in items]
        return _json_response(self._list_body(ref.rtype, deleted, {}))

    def _list_body(self, rtype: _Type, items: list[JSON], meta: JSON) -> JSON:
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version,
            "metadata": meta,
            "items": items,
        }

    async def _list(self, request: web.Request, ref: _Ref) -> web.StreamResponse:
        query = request.query
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""))
        watcher = _Watcher(ref.rtype, ref.namespace, labels, fields)
        if query.get("watch", "") in _TRUE:
            return await self._watch(request, watcher)
        items = self._store.select(ref.rtype, ref.namespace, labels, fields)
        page, meta = _paginate(
            items, query.get("limit"), query.get("continue"), self._store.resource_version
        )
        return _json_response(self._list_body(ref.rtype, page, meta))

    # watch streaming

    async def _watch(self, request: web.Request, watcher: _Watcher) -> web.StreamResponse:
        query = request.query
        try:
            timeout = float(query["timeoutSeconds"]) if "timeoutSeconds" in query else None
        except ValueError:
            raise ApiStatusError(400, "invalid timeoutSeconds") from None
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            initial = self._store.subscribe(watcher, query.get("resourceVersion"))
        except ApiStatusError as err:
            if err.code != 410:
                raise
            # The real server opens the stream and reports an expired version as an event.
            await response.prepare(request)
            await self._write_event(response, "ERROR", err.status)
            return await self._finish(response)
        bookmarks = query.get("allowWatchBookmarks", "") in _TRUE
        try:
            await response.prepare(request)
            async with asyncio.timeout(timeout):
                await self._stream(request, response, watcher, initial, bookmarks)
        except (TimeoutError, ConnectionResetError):
            pass  # timeoutSeconds elapsed, or the client went away
        finally:
            self._store.unsubscribe(watcher)
        return await self._finish(response)

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        watcher: _Watcher,
        initial: list[_Change],
        bookmarks: bool,
    ) -> None:
        for replayed in initial:
            await self._send(response, watcher, replayed)
        while True:
            change: _Change | None
            try:
                async with asyncio.timeout(self._bookmark_interval):
                    change = await watcher.queue.get()
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    return
                if bookmarks:
                    meta = {"resourceVersion": self._store.resource_version}
                    bookmark = {
                        "kind": watcher.rtype.kind,
                        "apiVersion": watcher.rtype.api_version,
                        "metadata": meta,
                    }
                    await self._write_event(response, "BOOKMARK", bookmark)
                continue
            if change is None:
                return
            await self._send(response, watcher, change)

    async def _send(self, response: web.StreamResponse, watcher: _Watcher, change: _Change) -> None:
        event = watcher.translate(change)
        if event is not None:
            await self._write_event(response, *event)

    @staticmethod
    async def _write_event(response: web.StreamResponse, event: str, obj: JSON) -> None:
        line = json.dumps({"type": event, "object": obj}, separators=(",", ":")) + "\n"
        await response.write(line.encode())

    @staticmethod
    async def _finish(response: web.StreamResponse) -> web.StreamResponse:
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


# --- standalone ----------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    namespaces = [n for n in args.namespaces.split(",") if n]
    async with KubeEmulator(namespaces, token=args.token, host=args.host, port=args.port) as kube:
        sys.stdout.write(f"READY {kube.url}\n")
        sys.stdout.flush()
        await stopping.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the emulator until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m trigger.testing.kubeapi",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--namespaces", default="default", help="comma-separated")
    parser.add_argument("--token", default=None, help="require this bearer token")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
