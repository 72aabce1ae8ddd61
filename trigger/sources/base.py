"""The Source protocol: what the daemon needs from every kind of event source.

A source turns its transport's deliveries into Events and hands each to
`SourceContext.pipeline.handle`, acknowledging (committing an offset, advancing a
checkpoint or a watermark, answering 2xx) only after `handle` returned. Sources are
registered by kind in the daemon's one table (`trigger.daemon.sources.MODULES`), each module
saying through its `KIND` when it is wanted; the daemon starts a source only while the
loaded rules use its kind, and a `singleton` source only while this replica leads (cron,
OSS polling).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aiohttp import web

from trigger.clock import Clock
from trigger.core.metrics import Metrics
from trigger.core.pipeline import Pipeline
from trigger.rules.router import RuleSet
from trigger.submit.base import Sink


@dataclass
class SourceContext:
    """What a source may use. `state` is a trigger.core.state.StateStore."""

    pipeline: Pipeline
    metrics: Metrics
    clock: Clock
    sink: Sink
    state: Any
    settings: Any  # trigger.settings.Settings (Any: sources must not import the CLI layer)
    environ: Mapping[str, str] = field(default_factory=dict)
    # The rules the sources run: the active ones, which the daemon sets with every sync
    # (idle rules are routed but not consumed for). None: the pipeline's (tests).
    active: RuleSet | None = None

    @property
    def rules(self) -> RuleSet:
        return self.pipeline.rules if self.active is None else self.active


class Source(Protocol):
    """One running source. `run` is owned by the daemon's supervisor."""

    name: str
    singleton: bool

    def routes(self) -> list[web.RouteDef]:
        """HTTP routes this source serves on the daemon's port (push receivers)."""
        ...

    async def run(self) -> None:
        """Consume until `stop` finishes or the task is cancelled."""
        ...

    async def stop(self, deadline: float) -> None:
        """Stop intake, finish in-flight work within `deadline` seconds, acknowledge it."""
        ...

    def rules_changed(self, rules: RuleSet) -> None:
        """The rule set was swapped: adjust subscriptions (topics, timers, buckets)."""
        ...


@runtime_checkable
class ReportsProblems(Protocol):
    """A source that can tell what keeps it from doing its job durably (for /readyz)."""

    def problems(self) -> list[str]:
        """One line per problem now; empty when all is well."""
        ...


@dataclass(frozen=True)
class SourceType:
    """What the daemon's registry needs of a kind of source: when the rules want it, how
    to build it, and whether it runs on the leader only."""

    wanted: Callable[[RuleSet], bool]
    build: Callable[[SourceContext], Source]
    singleton: bool
