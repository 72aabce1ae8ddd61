"""Which sources run: one registry table, started and stopped as rules and leadership change.

`MODULES` lists each kind of source and the module whose `KIND` says when it is wanted (a
predicate over the rule set) and how to build it. Adding a kind of source means adding a
module and one line here — never an if-chain in the daemon. Singleton sources run only
while this replica is the leader.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import structlog

from trigger.rules.router import RuleSet
from trigger.runtime.supervisor import Supervisor
from trigger.sources.base import ReportsProblems, Source, SourceContext

log = structlog.get_logger("trigger.sources")


@dataclass(frozen=True)
class SourceKind:
    wanted: Callable[[RuleSet], bool]
    build: Callable[[SourceContext], Source]
    singleton: bool


# One line per kind of source: its name and the module that defines `KIND: SourceKind`.
# Modules are imported when the daemon starts, not when the CLI does.
MODULES: Final[tuple[tuple[str, str], ...]] = (
    ("cron", "trigger.sources.cron"),
    ("oss-poll", "trigger.sources.oss_poll"),
    ("kafka", "trigger.sources.kafka"),
)


def registry() -> Mapping[str, SourceKind]:
    table = {name: importlib.import_module(module).KIND for name, module in MODULES}
    return MappingProxyType(table)


@dataclass
class SourceManager:
    """Keeps the running sources in line with the rules and with leadership."""

    context: SourceContext
    supervisor: Supervisor
    registry: Mapping[str, SourceKind] = field(default_factory=registry)
    leader: bool = True
    running: dict[str, Source] = field(default_factory=dict)

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
        """Start the sources the rules need (and leadership allows); stop the others."""
        wanted = {
            name
            for name, kind in self.registry.items()
            if kind.wanted(rules) and (self.leader or not kind.singleton)
        }
        for name in sorted(set(self.running) - wanted):
            await self._stop(name, deadline)
        for source in self.running.values():
            source.rules_changed(rules)
        for name in sorted(wanted - set(self.running)):
            source = self.registry[name].build(self.context)
            self.running[name] = source
            self.supervisor.start(f"source:{name}", source.run, "source")
            log.info("source started", source=name)

    async def set_leader(self, leader: bool, deadline: float) -> None:
        self.leader = leader
        await self.sync(self.context.rules, deadline)

    async def stop_all(self, deadline: float) -> None:
        await asyncio.gather(*(self._stop(name, deadline) for name in list(self.running)))

    async def _stop(self, name: str, deadline: float) -> None:
        source = self.running.pop(name)
        try:
            async with asyncio.timeout(deadline):
                await source.stop(deadline)
        except TimeoutError:
            log.error("source did not stop within the deadline", source=name)
        await self.supervisor.stop_task(f"source:{name}")
        log.info("source stopped", source=name)
