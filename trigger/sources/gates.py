"""The gate sweeper: on the leader, time out gates and finish what their outboxes hold.

Gates fire when their last member arrives (`trigger.core.gatekeeper`); this singleton
ends the others — a gate whose window passed with no further event for its key — per its
`onTimeout`, and retries any firing or dead letter a crash or an outage left undone. It
runs while some rule has a gate and this replica leads, every `gates.sweep_interval`
seconds (default 10) on the injected clock; a sweep cut short by lost leadership is
redone by the next leader (the names are deterministic, so nothing happens twice).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import structlog
from aiohttp import web

from trigger.errors import TriggerError
from trigger.rules.router import RuleSet
from trigger.sources.base import Source, SourceContext, SourceType

log = structlog.get_logger("trigger.sources.gates")
DEFAULT_INTERVAL: Final = 10.0  # when the context has no settings (tests)


class GateSweeper:
    """Sweeps the gates' state every `gates.sweep_interval` seconds while it runs."""

    name = "gates"
    singleton = True

    def __init__(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        self._stopping = asyncio.Event()
        settings = ctx.settings
        self.interval = DEFAULT_INTERVAL if settings is None else settings.gates.sweep_interval

    def routes(self) -> list[web.RouteDef]:
        return []

    async def run(self) -> None:
        while not self._stopping.is_set():
            await self.sweep()
            pause = asyncio.ensure_future(self._ctx.clock.sleep(self.interval))
            stopping = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait([pause, stopping], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (pause, stopping):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def sweep(self) -> None:
        """One sweep; a failure is logged and the next sweep tries again."""
        gates = self._ctx.pipeline.gates
        if gates is None:
            return
        try:
            await gates.sweep(self._ctx.rules)
        except TriggerError as exc:
            log.warning("gate sweep failed; retrying at the next one", error=str(exc))

    async def stop(self, deadline: float) -> None:
        self._stopping.set()

    def rules_changed(self, rules: RuleSet) -> None:
        """Each sweep reads the rules afresh: nothing to adjust."""


def _wanted(rules: RuleSet) -> bool:
    return any(rule.gate is not None for rule in rules.rules)


def _build(ctx: SourceContext) -> Source:
    return GateSweeper(ctx)


KIND: Final = SourceType(wanted=_wanted, build=_build, singleton=True)
