"""Job queues at run time: the semaphore ConfigMaps, and how many Workflows each queue holds.

`SemaphoreConfigMaps.apply` makes the ConfigMap `trigger-queues` of each namespace hold
every declared queue's limit under the queue's name — the key Argo's semaphores read
(trigger.rules.queue). It creates the ConfigMap when missing and otherwise changes only
the keys it owns: those listed in the annotation `trigger.dev/queues` (a JSON list),
written with them. A key someone else wrote (not listed there) is never changed or
removed; it is reported instead, with the limit it holds, since that is the limit Argo
uses. Nothing is ever deleted: the key of a queue no longer declared stays (Workflows
still waiting on it need it: Argo cannot admit a Workflow whose key is missing). Every
write carries the resourceVersion it read: a concurrent writer makes it fail with 409, and
the read-modify-write is tried again.

`queue_counts` tells, per queue, its limit and how many of its unfinished Workflows are
Running and how many are waiting (phase Pending, or no phase yet: a Workflow waiting on
its semaphore stays Pending) — one list per namespace, by the `trigger.dev/queue` label.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from trigger.clock import Clock, SystemClock
from trigger.errors import SubmitError, TriggerError
from trigger.rules.queue import LABEL_QUEUE, QUEUE_CONFIGMAP
from trigger.rules.router import RuleSet

T = TypeVar("T")
ANNOTATION_OWNED: Final = "trigger.dev/queues"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_COMPLETED: Final = "workflows.argoproj.io/completed"
_CONFLICT: Final = 409
_NOT_FOUND: Final = 404

Limits = Mapping[str, Mapping[str, int]]  # namespace → queue → limit


class QueueSyncError(TriggerError):
    """The semaphore ConfigMaps could not be brought to the declared limits (this time)."""


class _Conflict(Exception):
    """Another writer changed (or created) the ConfigMap between our read and our write."""


@dataclass(frozen=True)
class Foreign:
    """A queue's key that another owner wrote: left alone, and what it holds."""

    namespace: str
    queue: str
    value: str

    def __str__(self) -> str:
        return (
            f"queue {self.queue}: {self.namespace}/{QUEUE_CONFIGMAP} key {self.queue} was "
            f"written by another owner (it holds {self.value!r}, which Argo uses); trigger "
            f"leaves it alone: remove it to let trigger keep the declared limit"
        )


def declared_limits(rules: RuleSet) -> dict[str, dict[str, int]]:
    """namespace → queue → limit, for every declared queue in every one of its namespaces."""
    limits: dict[str, dict[str, int]] = defaultdict(dict)
    for name, namespaces in rules.queue_namespaces().items():
        for namespace in namespaces:
            limits[namespace][name] = rules.queues[name].limit
    return dict(limits)


def owned_keys(configmap: Mapping[str, Any]) -> set[str]:
    """The keys the annotation says trigger wrote (none when it is absent or unreadable)."""
    text = ((configmap.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_OWNED)
    try:
        found = json.loads(text) if text else []
    except ValueError:
        return set()
    return {k for k in found if isinstance(k, str)} if isinstance(found, list) else set()


class SemaphoreConfigMaps:
    """Keeps the `trigger-queues` ConfigMaps equal to the declared limits (module doc)."""

    def __init__(
        self,
        api_client: Any,
        *,
        clock: Clock | None = None,
        timeout: float = 10.0,
        attempts: int = 10,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        from kubernetes_asyncio import client

        self._api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._clock = clock or SystemClock()
        self._timeout = timeout
        self._attempts, self._backoff, self._max_backoff = attempts, backoff, max_backoff
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)

    async def apply(self, limits: Limits) -> list[Foreign]:
        """Write the limits, namespace by namespace; the keys left to another owner."""
        foreign: list[Foreign] = []
        for namespace in sorted(limits):
            foreign += await self._retrying(
                namespace, functools.partial(self._apply_once, namespace, dict(limits[namespace]))
            )
        return foreign

    async def _apply_once(self, namespace: str, wanted: dict[str, int]) -> list[Foreign]:
        obj = await self._read(namespace)
        if obj is None:
            await self._write(self._create(namespace, wanted))
            return []
        data = dict(obj.get("data") or {})
        owned = owned_keys(obj)
        foreign = [
            Foreign(namespace, q, data[q]) for q in sorted(wanted) if q in data and q not in owned
        ]
        mine = {q: str(limit) for q, limit in wanted.items() if q in owned or q not in data}
        if all(data.get(q) == v for q, v in mine.items()) and set(mine) <= owned:
            return foreign
        meta = dict(obj["metadata"])
        listed = json.dumps(sorted(owned | set(mine)))
        meta["annotations"] = {**(meta.get("annotations") or {}), ANNOTATION_OWNED: listed}
        # The read object goes back whole, with its resourceVersion: what others put in it
        # survives, and a write between our read and ours makes this one fail with 409.
        body: Any = {**obj, "metadata": meta, "data": {**data, **mine}}
        await self._write(
            self._core.replace_namespaced_config_map(
                QUEUE_CONFIGMAP, namespace, body, _request_timeout=self._timeout
            )
        )
        return foreign

    def _create(self, namespace: str, wanted: Mapping[str, int]) -> Awaitable[Any]:
        body: Any = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": QUEUE_CONFIGMAP,
                "namespace": namespace,
                "labels": {LABEL_MANAGED_BY: "trigger"},
                "annotations": {ANNOTATION_OWNED: json.dumps(sorted(wanted))},
            },
            "data": {q: str(limit) for q, limit in sorted(wanted.items())},
        }
        return self._core.create_namespaced_config_map(
            namespace, body, _request_timeout=self._timeout
        )

    async def _read(self, namespace: str) -> dict[str, Any] | None:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            found = await self._core.read_namespaced_config_map(
                QUEUE_CONFIGMAP, namespace, _request_timeout=self._timeout
            )
        except ApiException as err:
            if err.status == _NOT_FOUND:
                return None
            raise
        obj: dict[str, Any] = self._api_client.sanitize_for_serialization(found)
        return obj

    @staticmethod
    async def _write(call: Awaitable[Any]) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            await call
        except ApiException as err:
            if err.status == _CONFLICT:  # changed since read, or created since (AlreadyExists)
                raise _Conflict from err
            raise

    async def _retrying(self, namespace: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Conflicts are tried again (a fresh read each time), with jittered backoff; any
        other failure ends this apply (the caller tries again later)."""
        import aiohttp
        from kubernetes_asyncio.client.exceptions import ApiException

        what = f"queue configmap {namespace}/{QUEUE_CONFIGMAP}"
        for number in range(1, self._attempts + 1):
            try:
                return await attempt()
            except _Conflict:
                if number == self._attempts:
                    raise QueueSyncError(
                        f"{what}: still conflicting after {number} attempts"
                    ) from None
            except ApiException as err:
                raise QueueSyncError(f"{what}: {err.status} {err.reason}") from err
            except (aiohttp.ClientError, TimeoutError, OSError) as err:
                raise QueueSyncError(f"{what}: {type(err).__name__}: {err}") from err
            delay = min(self._max_backoff, self._backoff * 2 ** (number - 1))
            await self._clock.sleep(delay * self._rng.uniform(0.5, 1.5))
        raise AssertionError("unreachable")  # the loop returns or raises


# --- counting --------------------------------------------------------------------------


@dataclass
class QueueCount:
    """One queue now: its limit and where it applies; its Workflows by phase."""

    limit: int
    namespaces: list[str]
    running: int = 0
    waiting: int = 0
    description: str | None = None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "limit": self.limit,
            "namespaces": self.namespaces,
            "running": self.running,
            "waiting": self.waiting,
        }
        if self.description:
            found["description"] = self.description
        if self.problems:
            found["problems"] = self.problems
        return found


# Unfinished only: Argo keeps finished Workflows until their TTL, and they count for nothing.
SELECTOR: Final = f"{LABEL_QUEUE},{LABEL_COMPLETED}!=true"


async def queue_counts(sink: Any, rules: RuleSet) -> dict[str, QueueCount]:
    """Per declared queue, its limit and its unfinished Workflows by phase (raises the
    sink's SubmitError when it cannot list)."""
    spread = rules.queue_namespaces()
    counts = {
        name: QueueCount(queue.limit, list(spread[name]), description=queue.description)
        for name, queue in sorted(rules.queues.items())
    }
    for namespace in sorted({ns for found in spread.values() for ns in found}):
        for workflow in await sink.list_workflows(namespace, SELECTOR):
            meta = workflow.get("metadata") or {}
            count = counts.get((meta.get("labels") or {}).get(LABEL_QUEUE, ""))
            if count is None or namespace not in count.namespaces:
                continue  # a queue no longer declared, or declared elsewhere now
            phase = (workflow.get("status") or {}).get("phase") or ""
            if phase == "Running":
                count.running += 1
            elif phase in ("", "Pending"):
                count.waiting += 1
            # a finished phase whose completed label is not there yet counts for nothing
    return counts


LOCAL_NOTE: Final = (
    "local sink: no controller runs these manifests and the limit is not enforced; "
    "waiting counts the manifests not yet marked finished (trigger finish)"
)


async def describe_queues(
    sink: Any, rules: RuleSet, problems: Sequence[str] = (), *, within: float = 10.0
) -> dict[str, dict[str, Any]]:
    """Per declared queue: limit, namespaces, running and waiting (None when the sink
    cannot tell, or not `within` seconds), `problems` (the keeper's: those naming this
    queue or none), and a note on what the local sink's counts mean."""

    def mine(name: str) -> list[str]:
        return [p for p in problems if not p.startswith("queue ") or p.startswith(f"queue {name}:")]

    if not rules.queues:
        return {}
    failure = None
    counts: dict[str, QueueCount] = {}
    if not hasattr(sink, "list_workflows"):
        failure = f"the {sink.kind} sink cannot list Workflows"
    else:
        try:
            async with asyncio.timeout(within):
                counts = await queue_counts(sink, rules)
        except (SubmitError, TimeoutError) as err:
            failure = f"cannot count Workflows: {err or 'timed out'}"
    spread = rules.queue_namespaces()
    found: dict[str, dict[str, Any]] = {}
    for name, queue in sorted(rules.queues.items()):
        count = counts.get(name) or QueueCount(queue.limit, list(spread[name]))
        count.description = queue.description
        count.problems = [*mine(name), *([failure] if failure else [])]
        entry = count.as_dict()
        if failure:
            entry["running"] = entry["waiting"] = None
        if getattr(sink, "kind", None) == "local":
            entry["note"] = LOCAL_NOTE
        found[name] = entry
    return found
