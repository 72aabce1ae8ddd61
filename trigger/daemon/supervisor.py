"""One owner for every long-lived task, named and guarded (the kopf way).

A `core` task that fails or ends ends the daemon; a `source` task that fails, or ends on
its own, is logged and restarted with capped exponential backoff (its transport may come
back) — unless it was told it is `ending` (a graceful stop), when returning is its job.
Every task is cancelled and awaited on stop, in reverse order of start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import structlog

from trigger.clock import Clock
from trigger.core.metrics import Metrics

log = structlog.get_logger("trigger.supervisor")
TaskKind = Literal["core", "source"]


@dataclass
class Supervisor:
    clock: Clock
    metrics: Metrics
    max_backoff: float = 60.0
    failed: asyncio.Future[BaseException] = field(init=False)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _ending: set[str] = field(default_factory=set)  # source tasks asked to finish

    def __post_init__(self) -> None:
        self.failed = asyncio.get_running_loop().create_future()

    def start(self, name: str, factory: Callable[[], Awaitable[None]], kind: TaskKind) -> None:
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"task {name} is already running")
        self._ending.discard(name)
        guard = self._core(name, factory) if kind == "core" else self._source(name, factory)
        self._tasks[name] = asyncio.create_task(guard, name=name)

    def cancel(self, name: str) -> None:
        """Cancel the task now, without waiting for it (`stop_task` reaps it)."""
        task = self._tasks.get(name)
        if task is not None:
            task.cancel()

    def ending(self, name: str) -> None:
        """The source task is being stopped on purpose: when it returns, it is done."""
        self._ending.add(name)

    async def stop_task(self, name: str) -> None:
        self._ending.discard(name)
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def running(self, prefix: str = "") -> dict[str, bool]:
        return {n: not t.done() for n, t in self._tasks.items() if n.startswith(prefix)}

    async def stop(self) -> None:
        for name in reversed(list(self._tasks)):
            await self.stop_task(name)

    async def _core(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        try:
            await factory()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("core task failed", task=name)
            if not self.failed.done():
                self.failed.set_result(exc)
            return
        log.error("core task ended unexpectedly", task=name)
        if not self.failed.done():
            self.failed.set_result(RuntimeError(f"core task {name} ended"))

    async def _source(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        delay = 1.0
        label = name.removeprefix("source:")  # the metrics say `cron`, as /readyz and logs do
        while True:
            self.metrics.source_up.labels(label).set(1)
            started = self.clock.monotonic()
            try:
                await factory()
                if name in self._ending:
                    self.metrics.source_up.labels(label).set(0)
                    return
                log.warning("source task ended; restarting", task=name)
            except asyncio.CancelledError:
                self.metrics.source_up.labels(label).set(0)
                raise
            except Exception:
                log.exception("source task failed; restarting", task=name, delay=delay)
            self.metrics.source_up.labels(label).set(0)
            self.metrics.source_restarts.labels(label).inc()
            if self.clock.monotonic() - started > self.max_backoff:
                delay = 1.0  # it ran for a good while: the next failure starts afresh
            await self.clock.sleep(delay)
            delay = min(delay * 2, self.max_backoff)
