"""The Sink protocol: the one seam between trigger and whatever stores Workflows.

A sink creates one Workflow object (already rendered, with a deterministic name) and maps
every backend failure at its boundary onto trigger's error tree:

- `AlreadyExists`: the name exists and holds this Workflow's (rule, idempotency key) —
  the idempotent outcome of a redelivery, a success;
- `NameTaken`: the name exists but holds another (rule, idempotency key): a collision,
  never a success (`same_origin` decides, from the labels and annotations);
- `TemporarySubmitError` (429, 5xx, timeouts, connection errors; `retry_after` when the
  backend said so): the submitter retries with backoff;
- `PermanentSubmitError` (400, 401, 403, 404, 422): retrying cannot help; dead-letter it
  with the backend's message.

No client library exception ever leaves a sink.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from trigger.errors import AlreadyExists, NameTaken, PermanentSubmitError, TemporarySubmitError
from trigger.rules.render import ANNOTATION_IDEMPOTENCY_KEY, LABEL_RULE


@dataclass(frozen=True)
class Created:
    """What the backend answered for a created Workflow."""

    name: str
    namespace: str
    uid: str | None = None


@runtime_checkable
class Sink(Protocol):
    """Creates Workflows somewhere."""

    kind: str

    async def create(self, workflow: Mapping[str, Any]) -> Created:
        """Create the Workflow; raise AlreadyExists / Temporary / PermanentSubmitError."""
        ...

    async def check(self) -> None:
        """Readiness probe: raise TemporarySubmitError when the backend is unreachable."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...


@runtime_checkable
class BatchSink(Sink, Protocol):
    """A sink that also creates many Workflows in one call (local, stdout); the submitter's
    `create_batch` uses it."""

    async def create_many(
        self, workflows: Sequence[Mapping[str, Any]]
    ) -> Sequence[Created | Exception]:
        """Per Workflow, in order: Created, or the error `create` would raise for it."""
        ...


async def create_one(sink: BatchSink, workflow: Mapping[str, Any]) -> Created:
    """`create` for a batch sink: a batch of one."""
    (result,) = await sink.create_many([workflow])
    if isinstance(result, Exception):
        raise result
    return result


def identity(workflow: Mapping[str, Any]) -> tuple[str, str]:
    """The Workflow's name and namespace ("default" when unset); a Workflow without a
    name is refused, since idempotency needs one."""
    meta = workflow.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise PermanentSubmitError("workflow has no metadata.name (idempotency needs one)")
    return str(name), meta.get("namespace") or "default"


def origin(workflow: Mapping[str, Any]) -> tuple[Any, Any]:
    """What makes a Workflow the one for its name: its rule and its idempotency key."""
    meta = workflow.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return labels.get(LABEL_RULE), annotations.get(ANNOTATION_IDEMPOTENCY_KEY)


def same_origin(existing: Mapping[str, Any], ours: Mapping[str, Any]) -> bool:
    """Whether the stored Workflow was made for the same (rule, key) as ours."""
    return origin(existing) == origin(ours)


def conflict(existing: Mapping[str, Any] | None, ours: Mapping[str, Any], what: str) -> Exception:
    """What a create that met an existing name amounts to: AlreadyExists when the stored
    object is ours (a redelivery), NameTaken when it is another's. `existing` None means
    it vanished between the create and the read: a temporary error, to be tried again."""
    if existing is None:
        return TemporarySubmitError(f"{what}: exists, then vanished before it was read")
    if same_origin(existing, ours):
        return AlreadyExists(f"{what} already exists")
    rule, key = origin(existing)
    return NameTaken(f"{what} is taken by rule {rule!r}, key {key!r}")
