"""The emulator's state: objects, resourceVersions, the change history, and the watchers.

Every write goes through `Store`: it fills in server-owned metadata, checks optimistic
concurrency and size, bumps the one global resourceVersion, records the change in a bounded
history (so a watch can replay from a version, or get 410 once it is compacted away) and
hands it to every open watch of that resource.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from trigger.testing.kubeapi.errors import ApiStatusError, conflict, invalid, not_found
from trigger.testing.kubeapi.resources import JSON, NAMESPACES, Resource, key_of
from trigger.testing.kubeapi.selectors import Selector, object_matches
from trigger.testing.kubeapi.validation import kind_of, validate, validate_content

Clock = Callable[[], datetime]

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


def _spec(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _with_status_of(current: JSON, new: JSON) -> JSON:
    result = {k: v for k, v in current.items() if k != "status"}
    if new.get("status") is not None:
        result["status"] = new["status"]
    return result


@dataclass(frozen=True)
class Change:
    """One write, as the history keeps it and every watch of its resource receives it."""

    rv: int
    rtype: Resource
    event: str
    obj: JSON
    old: JSON | None


@dataclass(eq=False)
class Watcher:
    """One open watch: what it selects, and the queue its changes arrive on (None ends it)."""

    rtype: Resource
    namespace: str | None
    labels: Selector
    fields: Selector
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)

    def _sees(self, obj: JSON | None) -> bool:
        if obj is None:
            return False
        in_namespace = self.namespace is None or obj["metadata"].get("namespace") == self.namespace
        return in_namespace and object_matches(obj, self.labels, self.fields)

    def translate(self, change: Change) -> tuple[str, JSON] | None:
        """The event this watcher gets; a selector match that starts or ends is ADDED/DELETED."""
        now, before = self._sees(change.obj), self._sees(change.old)
        if change.event != "MODIFIED":
            return (change.event, change.obj) if now else None
        if now:
            return ("MODIFIED" if before else "ADDED", change.obj)
        return ("DELETED", change.obj) if before else None


class Store:
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
        self._objects: dict[Resource, dict[tuple[str, str], JSON]] = {}
        self._history: deque[Change] = deque(maxlen=history)
        self._expired_rv = 0
        self._watchers: dict[Resource, set[Watcher]] = {}
        self._watchers_changed = asyncio.Event()
        for name in namespaces:
            self.create(NAMESPACES, None, {"metadata": {"name": name}})

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def _check_size(self, obj: JSON) -> None:
        """etcd refuses an object over its request limit; the API server passes that on
        as a 500 (kubernetes#112152)."""
        limit = self.max_object_bytes
        if limit is not None and len(json.dumps(obj, separators=(",", ":"))) > limit:
            raise ApiStatusError(500, "etcdserver: request is too large")

    def _bucket(self, rtype: Resource) -> dict[tuple[str, str], JSON]:
        return self._objects.setdefault(rtype, {})

    def timestamp(self) -> str:
        """Now, as the server writes times (whole seconds, UTC)."""
        return self._timestamp()

    def _timestamp(self) -> str:
        return self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _emit(self, rtype: Resource, event: str, obj: JSON, old: JSON | None) -> None:
        change = Change(int(obj["metadata"]["resourceVersion"]), rtype, event, obj, old)
        if len(self._history) == self._history.maxlen:
            self._expired_rv = self._history[0].rv
        self._history.append(change)
        for watcher in self._watchers.get(rtype, ()):
            watcher.queue.put_nowait(change)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def find(self, rtype: Resource, namespace: str | None, name: str) -> JSON | None:
        return self._bucket(rtype).get((namespace or "", name))

    def get(self, rtype: Resource, namespace: str | None, name: str) -> JSON:
        found = self.find(rtype, namespace, name)
        if found is None:
            raise not_found(rtype, name)
        return found

    def select(
        self, rtype: Resource, namespace: str | None, labels: Selector = (), fields: Selector = ()
    ) -> list[JSON]:
        bucket = self._bucket(rtype)
        return [
            bucket[k]
            for k in sorted(bucket)
            if (namespace is None or k[0] == namespace)
            and object_matches(bucket[k], labels, fields)
        ]

    def require_namespace(self, namespace: str) -> None:
        if self.find(NAMESPACES, None, namespace) is None:
            raise ApiStatusError(
                404,
                f'namespaces "{namespace}" not found',
                details={"name": namespace, "kind": "namespaces"},
            )

    def _generate_name(self, rtype: Resource, namespace: str | None, meta: JSON) -> str:
        prefix = meta.get("generateName")
        if not prefix or not isinstance(prefix, str):
            raise invalid(rtype, "", "metadata.name", "", "name or generateName is required")
        for _ in range(8):
            name = prefix[:58] + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
            if self.find(rtype, namespace, name) is None:
                return name
        raise ApiStatusError(
            409, f'{rtype.qualified} "{prefix}" already exists', reason="AlreadyExists"
        )

    def create(self, rtype: Resource, namespace: str | None, body: JSON) -> JSON:
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
        validate(rtype, meta)
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
            "kind": kind_of(rtype, body),
            "metadata": meta,
        }
        if rtype == NAMESPACES:
            obj.update(spec={"finalizers": ["kubernetes"]}, status={"phase": "Active"})
        validate_content(rtype, obj)
        self._check_size(obj)
        self._bucket(rtype)[key_of(obj)] = obj
        self._emit(rtype, "ADDED", obj, None)
        return obj

    def replace(
        self,
        rtype: Resource,
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
            raise invalid(
                rtype, name, "metadata.resourceVersion", 0, "must be specified for an update"
            )
        return self.commit(rtype, current, body, status_only=status_only, sent_rv=sent)

    def commit(
        self,
        rtype: Resource,
        current: JSON,
        new: JSON,
        *,
        status_only: bool = False,
        sent_rv: str | None = None,
    ) -> JSON:
        """Write an updated object: server fields kept, generation and resourceVersion bumped."""
        old_meta = current["metadata"]
        if sent_rv and sent_rv != old_meta["resourceVersion"]:
            raise conflict(rtype, old_meta["name"])
        new = _with_status_of(current, new) if status_only else new
        meta = {k: v for k, v in (new.get("metadata") or {}).items() if k not in _SERVER_FIELDS}
        meta.update({k: old_meta[k] for k in _SERVER_FIELDS if k in old_meta})
        new = {
            **new,
            "apiVersion": current["apiVersion"],
            "kind": current["kind"],
            "metadata": meta,
        }
        validate(rtype, meta)
        validate_content(rtype, new)
        if new == current:
            return current  # a no-op write neither bumps resourceVersion nor notifies watchers
        if rtype.custom and _spec(new) != _spec(current):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_rv()
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(rtype, new)
        self._check_size(new)
        self._bucket(rtype)[key_of(new)] = new
        self._emit(rtype, "MODIFIED", new, current)
        return new

    def delete(
        self, rtype: Resource, namespace: str | None, name: str, preconditions: JSON | None = None
    ) -> tuple[JSON, bool]:
        """Delete now, or mark for deletion while finalizers remain; True when gone."""
        current = self.get(rtype, namespace, name)
        meta = current["metadata"]
        for field_name, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            wanted = (preconditions or {}).get(field_name)
            if wanted and wanted != meta.get(field_name):
                held = meta.get(field_name)
                raise conflict(
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
            self._bucket(rtype)[key_of(marked)] = marked
            self._emit(rtype, "MODIFIED", marked, current)
            return marked, False
        gone = {**current, "metadata": {**meta, "resourceVersion": self._next_rv()}}
        return self._remove(rtype, gone), True

    def _remove(self, rtype: Resource, obj: JSON) -> JSON:
        del self._bucket(rtype)[key_of(obj)]
        self._emit(rtype, "DELETED", obj, None)
        if rtype == NAMESPACES:
            for other, bucket in list(self._objects.items()):
                for key in [k for k in bucket if k[0] == obj["metadata"]["name"]]:
                    gone = bucket[key]
                    meta = {**gone["metadata"], "resourceVersion": self._next_rv()}
                    self._remove(other, {**gone, "metadata": meta})
        return obj

    def subscribe(self, watcher: Watcher, since: str | None) -> list[Change]:
        """Register a watcher and return what it must see before live changes."""
        if since in (None, "", "0"):
            current = self.select(watcher.rtype, watcher.namespace)
            initial = [
                Change(int(o["metadata"]["resourceVersion"]), watcher.rtype, "ADDED", o, None)
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

    def unsubscribe(self, watcher: Watcher) -> None:
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
