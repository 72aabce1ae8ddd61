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

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from prometheus_client import CollectorRegistry

from trigger.clock import Clock
from trigger.core.metrics import Metrics
from trigger.core.pipeline import Pipeline, RuleStatus
from trigger.daemon.runs import Tally, drive
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

        def seen(_: Event) -> None:
            self.tally.total += 1

        batch = BATCH if self._pipeline.batches else 1
        await drive(events, self._submit, parallel=self._parallel, batch=batch, seen=seen)
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
            self.tally.note_error(str(exc))
        self._count(1)

    def _count(self, done: int) -> None:
        """The tally from the pipeline's status of the rule (what it recorded per event)."""
        status = self._pipeline.status.get(self.rule.name, RuleStatus())
        tally = self.tally
        self._done += done
        tally.created, tally.duplicate = status.created, status.duplicates
        tally.failed = status.dead_letters + self._raised
        tally.filtered = self._done - status.matched
        tally.note_error(status.last_error or "")
        self._progress(tally)


def parse_moment(text: str, tz: Any, flag: str) -> datetime:
    """A --from/--to time: ISO-8601 (no offset: the rule's timezone), or epoch seconds."""
    from trigger.rules.cronmath import parse_start
    from trigger.rules.schedules import ScheduleError

    try:
        return parse_start(text, tz).astimezone(UTC)
    except ScheduleError as exc:
        raise ConfigError(str(exc).replace("--from", flag)) from exc
