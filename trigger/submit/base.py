"""The Sink protocol: the one seam between trigger and whatever stores Workflows.

A sink creates one Workflow object (already rendered, with a deterministic name) and maps
every backend failure at its boundary onto trigger's error tree:

- `AlreadyExists`: the name exists — the idempotent outcome of a redelivery, a success;
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

from trigger.errors import PermanentSubmitError


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
