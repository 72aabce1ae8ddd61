"""The queue keeper: the leader keeps the semaphore ConfigMaps equal to the declared queues.

While this replica leads, `QueueKeeper.run` writes the declared limits
(trigger.core.queues.SemaphoreConfigMaps) at once, again whenever the rules are
reloaded (`rules_changed`), and every `RESYNC` seconds (a ConfigMap deleted by hand comes
back). A failure is logged, counted (`trigger_queue_sync_errors_total`), shown in /status
and tried again with capped backoff; it never stops the daemon. Followers write nothing:
two replicas of different versions (a rollout) would otherwise take turns. Without the
kubernetes sink there is no connection to write with: the queues are then shown with what
the sink can tell, and the problem says who must create the ConfigMaps.

`QueueStatus.describe` is the `queues` section of /status: per queue, its limit,
namespaces, Workflows running and waiting, and the keeper's problems.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from trigger.clock import Clock
from trigger.core.metrics import Metrics
from trigger.core.queues import (
    Foreign,
    QueueSyncError,
    SemaphoreConfigMaps,
    declared_limits,
    describe_queues,
)
from trigger.daemon.leader import Leadership
from trigger.rules.queue import QUEUE_CONFIGMAP
from trigger.rules.router import RuleSet

log = structlog.get_logger("trigger.queues")

RESYNC: Final = 60.0  # seconds between two writes of unchanged limits (a deleted ConfigMap)
BACKOFF_INITIAL: Final = 1.0
BACKOFF_MAX: Final = 60.0
COUNT_TIMEOUT: Final = 5.0  # seconds /status waits for the Workflow lists


@dataclass
class QueueKeeper:
    """Keeps the semaphore ConfigMaps while leading (module doc)."""

    configmaps: SemaphoreConfigMaps | None  # None: the sink has no Kubernetes connection
    leadership: Leadership
    clock: Clock
    rules: RuleSet
    sink_kind: str = "kubernetes"
    metrics: Metrics | None = None
    problems: list[str] = field(default_factory=list)
    synced: bool = False  # the declared limits are in place (as far as the last write knows)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def rules_changed(self, rules: RuleSet) -> None:
        self.rules = rules
        self._changed.set()

    async def run(self) -> None:
        """Keep the ConfigMaps while leading; a long-lived task, until cancelled."""
        while True:
            await self.leadership.wait_leader()
            keeping = asyncio.ensure_future(self._keep())
            lost = asyncio.ensure_future(self.leadership.wait_not_leader())
            try:
                await asyncio.wait({keeping, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (keeping, lost):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            self.synced = False

    async def _keep(self) -> None:
        backoff = BACKOFF_INITIAL
        while True:
            self._changed.clear()
            wait = RESYNC
            if await self.apply():
                backoff = BACKOFF_INITIAL
            else:
                wait, backoff = backoff, min(backoff * 2, BACKOFF_MAX)
            await self._until_changed(wait)

    async def apply(self) -> bool:
        """Write the limits of the current rules once; whether that worked."""
        limits = declared_limits(self.rules)
        if self.configmaps is None:
            self.problems = self._unmanaged(limits)
            return True
        try:
            foreign = await self.configmaps.apply(limits)
        except QueueSyncError as err:
            log.warning("cannot keep the queue semaphores; trying again", error=str(err))
            self.problems, self.synced = [str(err)], False
            self._count("failed")
            return False
        except Exception as err:  # a surprise from the client: tried again, never fatal
            log.exception("cannot keep the queue semaphores; trying again")
            self.problems = [f"queue semaphores: {type(err).__name__}: {err}"]
            self.synced = False
            self._count("failed")
            return False
        self.problems = [str(f) for f in foreign]
        self._report(foreign)
        self.synced = True
        return True

    def _unmanaged(self, limits: dict[str, dict[str, int]]) -> list[str]:
        if not limits or self.sink_kind == "local":
            return []  # the local sink runs nothing: no semaphore to keep (README "Queues")
        places = ", ".join(f"{ns}/{QUEUE_CONFIGMAP}" for ns in sorted(limits))
        return [
            f"the {self.sink_kind} sink has no Kubernetes connection to keep the queue "
            f"semaphores: create ConfigMap(s) {places} with one key per queue (its limit)"
        ]

    def _report(self, foreign: list[Foreign]) -> None:
        for found in foreign:
            log.warning("queue semaphore key written by another owner", problem=str(found))
        if foreign:
            self._count("foreign")

    def _count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.queue_sync_errors.labels(reason).inc()

    async def _until_changed(self, seconds: float) -> None:
        changed = asyncio.ensure_future(self._changed.wait())
        timer = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            await asyncio.wait({changed, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (changed, timer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


@dataclass
class QueueStatus:
    """The `queues` section of /status: counts from the sink, problems from the keeper."""

    sink: Any
    rules: Callable[[], RuleSet]
    keeper: QueueKeeper | None = None

    async def describe(self) -> dict[str, Any]:
        problems = self.keeper.problems if self.keeper is not None else []
        return await describe_queues(self.sink, self.rules(), problems, within=COUNT_TIMEOUT)
