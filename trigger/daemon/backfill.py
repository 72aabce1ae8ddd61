"""`trigger backfill`: the Workflows a rule would have created over a past range.

A cron rule's ticks come from the daemon's own schedule code (`fires_between`, DST policy
included) and become the same events the cron source fires (`cron_tick`), so each
Workflow has the live tick's name: a tick already fired, or already backfilled, meets
AlreadyExists and counts as a duplicate. An OSS rule's objects are listed with the poll
source's oss2 client and become the events the poller builds (`object_event`); both go
through the rule's filter (`RuleSet.route`) and the submitter (the rule's rate limit,
the backend's flow control, retries), exactly as in the daemon.

Nothing is stored: a backfill stopped half-way (Ctrl-C) resumes by running it again,
the ticks it already created now being duplicates.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TextIO

from prometheus_client import CollectorRegistry

from trigger.clock import Clock
from trigger.core.metrics import Metrics
from trigger.core.pipeline import Pipeline, RuleStatus, gather_cancelling
from trigger.decoders.cron import cron_tick
from trigger.errors import ConfigError, RenderError, SubmitError
from trigger.events import Event
from trigger.rules.cronmath import fires_between
from trigger.rules.render import render
from trigger.rules.router import RuleSet
from trigger.rules.rule import Rule
from trigger.rules.schedules import compile_timezone
from trigger.submit.deadletter import DeadLetterSink
from trigger.submit.submitter import Submitter

JUST_BEFORE: Final = timedelta(microseconds=1)
LIST_PAGE: Final = 1000  # keys per ListObjectsV2 page
BATCH: Final = 256  # events a worker hands a batching sink (local, stdout) at once
MAX_ERRORS: Final = 10  # failures the summary lists


@dataclass
class Tally:
    """How a backfill went so far: one count per event's outcome."""

    total: int = 0  # events looked at (ticks in the range, objects listed in it)
    created: int = 0
    duplicate: int = 0
    filtered: int = 0  # the rule's filter did not match
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


def cron_events(rule: Rule, start: datetime, end: datetime) -> Iterator[Event]:
    """The cron source's events for `rule`'s ticks in [start, end], in order."""
    tz = compile_timezone(rule.cron.timezone)
    for fire in fires_between(rule.schedules, tz, start - JUST_BEFORE, end):
        yield cron_tick(rule.name, fire.schedule.text, fire.time, rule.cron.timezone)


async def oss_events(
    rule: Rule, start: datetime, end: datetime, environ: Mapping[str, str], request_timeout: float
) -> AsyncIterator[Event]:
    """The poller's events for the objects under `rule`'s prefix modified in [start, end]."""
    from trigger.sources.oss.poll import OssClient, object_event, poll_groups

    groups = [g for g in poll_groups(RuleSet((rule,))).values() if rule.name in g.rules]
    if not groups:
        raise ConfigError(
            f"rule {rule.name}: an OSS backfill lists the bucket, and needs source.oss.poll "
            "(endpoint, region, credentials)"
        )
    group = groups[0]
    client = OssClient(group, environ, request_timeout)
    low, high = start.timestamp(), end.timestamp()
    token = ""
    while True:
        page = await client.list_page(token, "", LIST_PAGE)
        for obj in page.object_list:
            if low <= obj.last_modified <= high:
                meta = await client.head(obj.key) if group.fetch_metadata else None
                if group.fetch_metadata and meta is None:
                    continue  # gone since the listing: the poller fires nothing for it
                yield object_event(group.bucket, group.region, obj, meta)
        if not page.is_truncated:
            return
        token = page.next_continuation_token


def plan(rule: Rule, event: Event) -> list[dict[str, Any]]:
    """The Workflows (dry run) `rule` makes of `event`: none when its filter says no."""
    routed = RuleSet((rule,)).route(event)
    return [render(m.rule, m.event) for m in routed.matches if m.rule.name == rule.name]


class Backfill:
    """Submits one rule's events through a pipeline of that rule alone, `parallel` at once."""

    def __init__(
        self,
        rule: Rule,
        submitter: Submitter,
        dead_letters: DeadLetterSink,
        clock: Clock,
        *,
        parallel: int = 4,
        progress: Callable[[Tally], None] = lambda tally: None,
    ) -> None:
        if parallel < 1:
            raise ValueError(f"--parallel must be at least 1, got {parallel}")
        self.rule = rule
        self.tally = Tally()
        self._parallel = parallel
        self._progress = progress
        metrics = Metrics(CollectorRegistry())
        self._pipeline = Pipeline(RuleSet((rule,)), submitter, dead_letters, metrics, clock)
        self._done = 0  # events whose submission ended
        self._raised = 0  # events whose submission raised (counted as failed)

    async def run(self, events: AsyncIterator[Event] | Iterator[Event]) -> Tally:
        """Submit every event; each ends created, duplicate, filtered out or failed."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=self._parallel * BATCH)

        async def feed() -> None:
            if isinstance(events, Iterator):
                for event in events:
                    self.tally.total += 1
                    await queue.put(event)
            else:
                async for event in events:
                    self.tally.total += 1
                    await queue.put(event)
            for _ in range(self._parallel):
                await queue.put(None)

        async def work() -> None:
            while batch := await _take(queue, BATCH if self._pipeline.batches else 1):
                await self._submit(batch)
            queue.put_nowait(None)  # keep the end in sight for the other workers

        await gather_cancelling(feed(), *(work() for _ in range(self._parallel)))
        return self.tally

    async def _submit(self, events: list[Event]) -> None:
        """A sink that writes many in one call gets them so (one sync per batch for the
        local sink); what the batch leaves (rate-limited, failed) goes one by one."""
        pipeline = self._pipeline
        if len(events) == 1 or not pipeline.batches:
            for event in events:
                await self._one(pipeline.handle(event, on_exhausted="dead-letter"))
            return
        results = await pipeline.handle_batch(events)
        self._count(sum(1 for result in results if result.done))
        for event, result in zip(events, results, strict=True):
            if result.slow:
                await self._one(pipeline.handle(event, on_exhausted="dead-letter"))
            elif result.failed:
                pairs = list(result.failed)
                await self._one(pipeline.submit_matches(event, pairs, on_exhausted="dead-letter"))

    async def _one(self, submission: Awaitable[Any]) -> None:
        """Await one event's submission; an error is that event's failure."""
        try:
            await submission
        except (SubmitError, RenderError, OSError) as exc:
            self._raised += 1
            if len(self.tally.errors) < MAX_ERRORS:
                self.tally.errors.append(str(exc))
        self._count(1)

    def _count(self, done: int) -> None:
        """The tally from the pipeline's status of the rule (what it recorded per event)."""
        status = self._pipeline.status.get(self.rule.name, RuleStatus())
        tally = self.tally
        self._done += done
        tally.created, tally.duplicate = status.created, status.duplicates
        tally.failed = status.dead_letters + self._raised
        tally.filtered = self._done - status.matched
        reason = status.last_error
        if reason and reason not in tally.errors and len(tally.errors) < MAX_ERRORS:
            tally.errors.append(reason)
        self._progress(tally)


async def _take(queue: asyncio.Queue[Event | None], most: int) -> list[Event]:
    """Up to `most` events: waits for the first, takes the others already there; [] at the
    end (the None sentinel)."""
    first = await queue.get()
    if first is None:
        return []
    batch = [first]
    while len(batch) < most and not queue.empty():
        event = queue.get_nowait()
        if event is None:
            queue.put_nowait(None)
            break
        batch.append(event)
    return batch


class Progress:
    """A tqdm bar on a terminal; elsewhere one plain line each `every` events."""

    def __init__(self, total: int | None, out: TextIO = sys.stderr, every: int = 1000) -> None:
        self._out = out
        self._every = every
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
            print(f"backfill: {tally.done} done: {tally.summary()}", file=self._out, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def parse_moment(text: str, tz: Any, flag: str) -> datetime:
    """A --from/--to time: ISO-8601 (no offset: the rule's timezone), or epoch seconds."""
    from trigger.rules.cronmath import parse_start
    from trigger.rules.schedules import ScheduleError

    try:
        return parse_start(text, tz).astimezone(UTC)
    except ScheduleError as exc:
        raise ConfigError(str(exc).replace("--from", flag)) from exc
