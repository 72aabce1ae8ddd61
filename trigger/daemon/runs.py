"""What the one-shot batch commands (`trigger backfill`, `trigger replay`) share.

Both submit many events through the daemon's own parts: the sink chosen like `trigger
run`'s with its flow control and the rules' rate limits and retries (`submission`), a pool
of `parallel` workers fed from an iterator (`drive`), a tally of outcomes with a progress
bar on a terminal and plain lines elsewhere (`Tally`, `Progress`).

A Kubernetes sink checks each Workflow against the WorkflowTemplates as the daemon does
(`submit.check_templates`), listed once at the start: a template that is missing is a
failure at once (no grace period: a one-shot command does not wait for a deployment).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, TextIO, TypeVar

from prometheus_client import CollectorRegistry

from trigger.clock import Clock
from trigger.core.metrics import Metrics
from trigger.core.pipeline import gather_cancelling
from trigger.rules.router import RuleSet
from trigger.settings import Settings
from trigger.submit.base import Sink
from trigger.submit.deadletter import DeadLetterSink
from trigger.submit.submitter import Submitter

MAX_ERRORS: Final = 10  # failures the summary lists
T = TypeVar("T")


@dataclass
class Tally:
    """How a run went so far: one count per event's outcome."""

    total: int = 0  # events looked at
    created: int = 0
    duplicate: int = 0
    filtered: int = 0  # no rule matched (the filter said no)
    failed: int = 0
    errors: list[str] = field(default_factory=list)  # the first distinct failure reasons

    @property
    def done(self) -> int:
        return self.created + self.duplicate + self.filtered + self.failed

    def summary(self) -> str:
        return (
            f"{self.created} created, {self.duplicate} duplicate, {self.failed} failed"
            f" ({self.filtered} filtered out, {self.total} in range)"
        )

    @property
    def ok(self) -> bool:
        """Nothing failed."""
        return not self.failed

    def note_error(self, reason: str) -> None:
        """Keep `reason` for the summary: the first MAX_ERRORS distinct ones."""
        if reason and reason not in self.errors and len(self.errors) < MAX_ERRORS:
            self.errors.append(reason)


async def drive(
    items: AsyncIterator[T] | Iterator[T],
    handle: Callable[[list[T]], Awaitable[None]],
    *,
    parallel: int,
    batch: int = 1,
    seen: Callable[[T], None] = lambda item: None,
) -> None:
    """Hand every item to `handle` from `parallel` workers, up to `batch` at once (what is
    already waiting); `seen` is called as each is taken from `items`. A failing worker
    (or a cancellation) stops them all."""
    if parallel < 1:
        raise ValueError(f"--parallel must be at least 1, got {parallel}")
    queue: asyncio.Queue[T | None] = asyncio.Queue(maxsize=parallel * max(batch, 1))

    async def feed() -> None:
        if isinstance(items, Iterator):
            for item in items:
                seen(item)
                await queue.put(item)
        else:
            async for item in items:
                seen(item)
                await queue.put(item)
        for _ in range(parallel):
            await queue.put(None)

    async def work() -> None:
        while taken := await _take(queue, batch):
            await handle(taken)
        queue.put_nowait(None)  # keep the end in sight for the other workers

    await gather_cancelling(feed(), *(work() for _ in range(parallel)))


async def _take(queue: asyncio.Queue[T | None], most: int) -> list[T]:
    """Up to `most` items: waits for the first, takes the others already there; [] at the
    end (the None sentinel)."""
    first = await queue.get()
    if first is None:
        return []
    taken = [first]
    while len(taken) < most and not queue.empty():
        item = queue.get_nowait()
        if item is None:
            queue.put_nowait(None)
            break
        taken.append(item)
    return taken


@contextlib.asynccontextmanager
async def submission(
    settings: Settings,
    rules: RuleSet,
    dead_letters: DeadLetterSink,
    clock: Clock,
    parallel: int,
) -> AsyncIterator[Submitter]:
    """A submitter on the settings' sink (flow control, size limit, template checks),
    `parallel` creates in flight; the sink is closed on the way out."""
    from trigger.daemon.assembly import flow_for, sink_options
    from trigger.submit.sinks import open_sink
    from trigger.submit.size import SizeLimit

    sink = await open_sink(settings.sink, **sink_options(settings, os.environ))
    try:
        yield Submitter(
            await _checked(settings, rules, sink, clock),
            dead_letters,
            clock,
            max_in_flight=max(parallel, 1),
            size_limit=SizeLimit(settings.submit.max_workflow_bytes),
            flow=flow_for(settings, sink, Metrics(CollectorRegistry()), clock),
        )
    finally:
        await sink.close()


async def _checked(settings: Settings, rules: RuleSet, sink: Sink, clock: Clock) -> Sink:
    """The sink, behind the WorkflowTemplate check when it talks to a cluster: the
    templates of the namespaces the daemon would watch for `rules`, listed once."""
    from trigger.submit.checked import CheckedSink
    from trigger.submit.templates import TemplateCatalog

    api_client = getattr(sink, "api_client", None)
    if api_client is None or not settings.submit.check_templates:
        return sink
    namespaces = settings.submit.template_namespaces or sorted(
        {r.workflow.namespace for r in rules.rules if not r.workflow.clusterScope}
    )
    catalog = TemplateCatalog(
        api_client,
        namespaces=list(namespaces),
        cluster_templates=any(r.workflow.clusterScope for r in rules.rules),
    )
    await catalog.load()
    return CheckedSink(sink, catalog, clock, grace=0.0)


class Progress:
    """A tqdm bar on a terminal; elsewhere one plain line each `every` events."""

    def __init__(
        self,
        total: int | None,
        out: TextIO = sys.stderr,
        every: int = 1000,
        *,
        label: str = "backfill",
    ) -> None:
        self._out = out
        self._every = every
        self._label = label
        self._bar: Any = None
        if out.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=out, unit="event", dynamic_ncols=True)
        self._shown = 0

    def __call__(self, tally: Tally) -> None:
        if self._bar is not None:
            self._bar.update(tally.done - self._bar.n)
            self._bar.set_postfix(
                created=tally.created,
                duplicate=tally.duplicate,
                failed=tally.failed,
                refresh=False,
            )
        elif tally.done - self._shown >= self._every:
            self._shown = tally.done
            print(
                f"{self._label}: {tally.done} done: {tally.summary()}", file=self._out, flush=True
            )

    def note(self, line: str) -> None:
        """One line of output (stdout), above the bar when there is one."""
        if self._bar is not None:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
