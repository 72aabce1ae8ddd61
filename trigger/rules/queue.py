"""Job queues (`kind: Queue` documents) as Argo's own mechanisms, and what names them.

A queue is an Argo semaphore: each Workflow of a rule with `workflow.queue: NAME` carries
`spec.synchronization.semaphores[0].configMapKeyRef {name: trigger-queues, key: NAME}`
and the label `trigger.dev/queue: NAME`; the daemon keeps the key equal to the queue's
`limit` in the ConfigMap `trigger-queues` of each of the queue's namespaces (a semaphore's
ConfigMap lives beside the Workflow). Argo's controller then runs at most `limit` of them
at once per namespace and starts the waiting ones by `spec.priority`, higher first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

QUEUE_CONFIGMAP: Final = "trigger-queues"
LABEL_QUEUE: Final = "trigger.dev/queue"


@dataclass(frozen=True)
class Queue:
    """One loaded queue. `namespaces` as declared; None: those of the rules that use it."""

    name: str
    limit: int
    namespaces: tuple[str, ...] | None
    description: str | None
    file: str
    index: int  # the document's number in its file, from 0


def semaphore(queue: str) -> dict[str, Any]:
    """The `spec.synchronization` of a Workflow in `queue`."""
    return {"semaphores": [{"configMapKeyRef": {"name": QUEUE_CONFIGMAP, "key": queue}}]}


def queue_namespaces(queue: Queue, rule_namespaces: Iterable[str]) -> tuple[str, ...]:
    """Where the queue's semaphore ConfigMap must exist: its declared namespaces, or the
    namespaces its rules' Workflows run in."""
    if queue.namespaces is not None:
        return queue.namespaces
    return tuple(sorted(set(rule_namespaces)))
