"""Which sources run: one registry table, started and stopped as rules and leadership change.

`MODULES` lists each kind of source and the module whose `KIND` says when it is wanted (a
predicate over the rule set) and how to build it. Adding a kind of source means adding a
module and one line here — never an if-chain in the daemon.

Singleton sources (cron, OSS polling, finished Workflows) run only while this replica leads
(`follow`). When leadership is lost they are cancelled at once, not drained: a successor
may be about to start, and a tick, poll page or completion cut short is submitted again by
whoever leads next, under the same Workflow names. A graceful stop (shutdown, a rule
removed) drains them instead.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import structlog

from trigger.daemon.leader import Leadership
from trigger.daemon.supervisor import Supervisor
from trigger.rules.router import RuleSet
from trigger.sources.base import ReportsProblems, Source, SourceContext, SourceType

log = structlog.get_logger("trigger.sources")


# One line per kind of source: its name and the module that defines `KIND: SourceType`.
# Modules are imported when the daemon starts, not when the CLI does.
MODULES: Final[tuple[tuple[str, str], ...]] = (
    ("cron", "trigger.sources.cron"),
    ("oss-poll", "trigger.sources.oss.poll"),
    ("kafka", "trigger.sources.kafka.source"),
    ("workflow", "trigger.sources.workflow.source"),
    ("gates", "trigger.sources.gates"),
)


def registry() -> Mapping[str, SourceType]:
    table = {name: importlib.import_module(module).KIND for name, module in MODULES}
    return MappingProxyType(table)


@dataclass
class SourceManager:
    """Keeps the running sources in line with the rules and with leadership."""

    context: SourceContext
    supervisor: Supervisor
    registry: Mapping[str, SourceType] = field(default_factory=registry)
    leader: bool = True
    running: dict[str, Source] = field(default_factory=dict)
    # One sync at a time (a reload and a leadership change may ask at once): a source
    # being stopped is out of `running` but its task is not yet gone.
    _syncing: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def health(self) -> dict[str, bool]:
        tasks = self.supervisor.running("source:")
        return {name: tasks.get(f"source:{name}", False) for name in self.running}

    def problems(self) -> dict[str, list[str]]:
        """The running sources' problems, by source name (only those that have some)."""
        found = {
            name: source.problems()
            for name, source in self.running.items()
            if isinstance(source, ReportsProblems)
        }
        return {name: lines for name, lines in found.items() if lines}

    async def sync(self, rules: RuleSet, deadline: float) -> None:
        """Start the sources the rules need (and leadership allows); stop the others.
        `rules` are the active rules (trigger.daemon.verdicts): a source whose rules are
        all idle does not run, and /readyz does not list it."""
        async with self._syncing:
            self.context.active = rules
            for name in sorted(set(self.running) - self._wanted(rules)):
                await self._stop(name, deadline)
            for source in self.running.values():
                source.rules_changed(rules)
            # Decided again after the awaits above: leadership may have been lost meanwhile.
            for name in sorted(self._wanted(rules) - set(self.running)):
                source = self.registry[name].build(self.context)
                self.running[name] = source
                self.supervisor.start(f"source:{name}", source.run, "source")
                log.info("source started", source=name)

    async def follow(
        self, leadership: Leadership, deadline: float, synced: Callable[[], None] = lambda: None
    ) -> None:
        """Run the singleton sources exactly while `leadership` leads; call `synced` after
        every change. A long-lived task: runs until cancelled.

        Loss is handled inside the change callback, which the elector calls as it clears
        `leading`: the singleton sources' tasks are cancelled there, before any of them
        runs again, so none of their next steps (a submission, a checkpoint or watermark
        write) begins after leadership is lost. (A task of theirs that was already
        scheduled may still run to its next await — microseconds, far inside the
        lease_duration − renew_deadline margin before a successor can start.)
        """
        unsubscribe = leadership.on_change(self._leadership_changed)
        self.leader = leadership.is_leader
        try:
            while True:
                await leadership.wait_leader()
                log.info("leading: singleton sources may run")
                await self.sync(self.context.rules, deadline)
                synced()
                await leadership.wait_not_leader()
                await self.sync(self.context.rules, deadline)  # reaps the cancelled ones
                synced()
        finally:
            unsubscribe()

    def _leadership_changed(self, leader: bool) -> None:
        self.leader = leader
        if leader:
            return
        log.warning("leadership lost: cancelling singleton sources")
        for name, kind in self.registry.items():
            if kind.singleton:
                self.supervisor.cancel(f"source:{name}")

    def _wanted(self, rules: RuleSet) -> set[str]:
        return {
            name
            for name, kind in self.registry.items()
            if kind.wanted(rules) and (self.leader or not kind.singleton)
        }

    async def stop_all(self, deadline: float) -> None:
        await asyncio.gather(*(self._stop(name, deadline) for name in list(self.running)))

    async def _stop(self, name: str, deadline: float) -> None:
        """Drain the source within `deadline`; a singleton without leadership is cancelled
        first (its `stop` then only releases what it holds)."""
        source = self.running.pop(name, None)
        if source is None:  # a concurrent sync (a reload, a leadership change) stopped it
            return
        if source.singleton and not self.leader:
            await self.supervisor.stop_task(f"source:{name}")
        self.supervisor.ending(f"source:{name}")  # its run may now return: no restart
        try:
            async with asyncio.timeout(deadline):
                await source.stop(deadline)
        except TimeoutError:
            log.error("source did not stop within the deadline", source=name)
        await self.supervisor.stop_task(f"source:{name}")
        log.info("source stopped", source=name)
