"""The `workflow` source: each finished Argo Workflow fires the rules that take it, once.

It runs on the leader only. With the kubernetes sink it reads the API server (`feed`); with
the local sink, the sink's directory, where `trigger finish` marks manifests finished
(`local`). One task per scope — a namespace some rule names, or every
namespace when a rule names none — lists the finished Workflows and then watches from the
list's resourceVersion (`feed`). Each finished Workflow becomes one event (id `uid:phase`)
handed to the pipeline; the rules' Workflow names derive from that id, so whatever sees a
completion again — a re-list, a restart, a second replica after a leadership change —
meets AlreadyExists. The scope's watermark (`workflow/<scope>` in the state store: the
resourceVersion the watch has handled up to, and `since`) advances only after the events
before it were submitted, at most once per `checkpoint_interval` and when the source stops.

After a restart the watch resumes from the watermark and sees every completion since. When
the version is too old (410 Gone) the scope lists again and fires every finished Workflow
that finished at or after `since` (a minute before the scope was first seen, for clock
skew): a scope seen for the first time starts from now — Workflows that had finished
before do not fire (a re-list may still fire those of its last minute).

A failure to reach the API server or the state store, or to submit, is retried with capped
backoff, counted (`trigger_workflow_watch_restarts`), logged and shown as the rules'
`last_error` in /status until it works again; the watermark stays where it was.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import structlog

from trigger.core.pipeline import RuleStatus
from trigger.core.state import StateError
from trigger.decoders.workflow import is_finished, workflow_event
from trigger.errors import ConfigError, DecodeError, SourceError, SubmitError
from trigger.events import Event, format_time, parse_time
from trigger.rules.router import RuleSet
from trigger.sources.base import SourceContext, SourceType
from trigger.sources.workflow.checks import sink_problem
from trigger.sources.workflow.feed import Change, Gone, KubernetesFeed, WorkflowFeed
from trigger.sources.workflow.local import LocalFeed

log = structlog.get_logger("trigger.workflow")
T = TypeVar("T")

CHECKPOINT_INTERVAL: Final = 1.0  # seconds: the most often a scope's watermark is written
WATCH_TIMEOUT: Final = 300.0  # seconds a watch runs before it is opened again
BACKOFF_INITIAL: Final = 1.0
BACKOFF_MAX: Final = 60.0
SKEW: Final = 60.0  # seconds: `since` is set this far back (clocks differ; see module doc)
REMEMBERED: Final = 10_000  # event ids fired lately, not submitted again (a re-list)
ERROR_PREFIX: Final = "workflow source: "
LOCAL_INTERVAL: Final = 1.0  # seconds between two looks at the local sink's directory
ALL: Final = "*"  # the scope of rules that name no namespace


def state_key(scope: str) -> str:
    return "workflow/all" if scope == ALL else f"workflow/ns.{scope}"


def scopes(rules: RuleSet) -> set[str]:
    """The namespaces to watch: every one when some rule names none."""
    found = {r.finished.namespace or ALL for r in rules.rules if r.kind == "workflow"}
    return {ALL} if ALL in found else found


def feed_for(ctx: SourceContext) -> WorkflowFeed | None:
    """The feed for the daemon's sink: the Kubernetes API over the sink's connection, the
    local sink's directory, or None when the sink has neither."""
    api_client = getattr(ctx.sink, "api_client", None)
    if api_client is not None:
        timeout = float(getattr(getattr(ctx.settings, "kubernetes", None), "timeout", 10.0))
        return KubernetesFeed(api_client, timeout=timeout, watch_timeout=WATCH_TIMEOUT)
    directory = getattr(ctx.sink, "directory", None)
    if getattr(ctx.sink, "kind", None) == "local" and directory is not None:
        return LocalFeed(directory, sleep=ctx.clock.sleep, interval=LOCAL_INTERVAL)
    return None


@dataclass(frozen=True)
class Mark:
    """A scope's watermark: the version handled up to ("": list again), and since when
    finished Workflows fire after a re-list."""

    version: str
    since: datetime

    def value(self) -> dict[str, Any]:
        return {"resourceVersion": self.version, "since": format_time(self.since)}

    @classmethod
    def of(cls, value: dict[str, Any] | None) -> Mark | None:
        try:
            since = parse_time((value or {})["since"])
        except (KeyError, DecodeError):
            return None
        return cls(str((value or {}).get("resourceVersion") or ""), since)


class _Stopped(Exception):
    """The source is stopping: unwind a scope's task."""


class WorkflowSource:
    """Every scope's list and watch; see the module docstring."""

    name = "workflow"
    singleton = True

    def __init__(
        self,
        ctx: SourceContext,
        *,
        feed: WorkflowFeed | None = None,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        found = feed or feed_for(ctx)
        if found is None:
            raise ConfigError(sink_problem(type(ctx.sink)) or "no workflow feed")
        self._ctx, self._feed = ctx, found
        self._interval = checkpoint_interval
        self._backoff = (backoff_initial, backoff_max)
        self._fired: OrderedDict[str, None] = OrderedDict()
        self._errors: dict[str, int] = {}  # watch failures in a row, by scope (backoff)
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()
        self._finished.set()

    def routes(self) -> list[Any]:
        return []

    def rules_changed(self, rules: RuleSet) -> None:
        self._changed.set()

    async def run(self) -> None:
        self._finished.clear()
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            async with asyncio.TaskGroup() as group:
                while not self._stopping.is_set():
                    self._changed.clear()
                    wanted = scopes(self._ctx.rules)
                    for scope in set(tasks) - wanted:
                        tasks.pop(scope).cancel()  # the watermark stays where it was
                    for scope in wanted - set(tasks):
                        tasks[scope] = group.create_task(
                            self._follow(scope), name=f"workflow:{scope}"
                        )
                    await self._changed.wait()
        finally:
            self._finished.set()

    async def stop(self, deadline: float) -> None:  # the manager enforces the deadline
        """Fire nothing new; a completion being submitted finishes and its watermark is
        stored."""
        self._stopping.set()
        self._changed.set()
        await self._finished.wait()

    # --- one scope -------------------------------------------------------------------------

    async def _follow(self, scope: str) -> None:
        key = state_key(scope)
        try:
            value = await self._retrying(scope, "read the watermark", lambda: self._state_get(key))
            mark = Mark.of(value) or await self._start(scope)
            while not self._stopping.is_set():
                mark = await self._attempt(scope, mark)
        except _Stopped:
            return

    async def _state_get(self, key: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._ctx.state.get(key)
        return found

    async def _start(self, scope: str) -> Mark:
        """A scope seen for the first time: what has finished so far does not fire."""
        _, version = await self._retrying(
            scope, "list workflows", lambda: self._feed.list_finished(_namespace(scope))
        )
        # The API server writes whole seconds, and its controller's clock is not ours.
        since = self._ctx.clock.now().replace(microsecond=0) - timedelta(seconds=SKEW)
        mark = Mark(version, since)
        await self._store(scope, mark)
        log.info("workflow source starts from now", scope=scope, resource_version=version)
        return mark

    async def _attempt(self, scope: str, mark: Mark) -> Mark:
        """List when there is no version, then watch until the watch ends or fails."""
        try:
            if not mark.version:
                mark = await self._relist(scope, mark)
            return await self._watch(scope, mark)
        except Gone as exc:
            self._ctx.metrics.child(self._ctx.metrics.workflow_watch_restarts, "gone").inc()
            log.warning(
                "workflow watch version expired; listing again", scope=scope, error=str(exc)
            )
            mark = replace(mark, version="")
        except SourceError as exc:
            self._ctx.metrics.child(self._ctx.metrics.workflow_watch_restarts, "error").inc()
            self._errors[scope] = self._errors.get(scope, 0) + 1
            await self._failed(scope, "watch workflows", exc, self._errors[scope])
        await self._store(scope, mark)
        return mark

    async def _watch(self, scope: str, mark: Mark) -> Mark:
        """Fire what the watch reports; store the watermark now and then, and at the end
        (also when the source stops or the watch fails: what was fired stays fired)."""
        stored = mark
        last = self._ctx.clock.monotonic()
        changes = aiter(self._feed.watch(_namespace(scope), mark.version))
        cancelled = False
        try:
            while (change := await self._next(changes)) is not None:
                self._recovered(scope)
                if change.type in ("ADDED", "MODIFIED") and is_finished(change.obj):
                    await self._fire(scope, change.obj)
                if change.version:
                    mark = replace(mark, version=change.version)
                if mark != stored and self._ctx.clock.monotonic() - last >= self._interval:
                    await self._store(scope, mark)
                    stored, last = mark, self._ctx.clock.monotonic()
        except asyncio.CancelledError:
            cancelled = True  # leadership lost: write nothing more (the successor goes on)
            raise
        finally:
            await changes.aclose()  # type: ignore[attr-defined]
            if mark != stored and not cancelled:
                await self._store(scope, mark)
        return mark

    async def _next(self, changes: AsyncIterator[Change]) -> Change | None:
        """The next change, None when the watch ended; _Stopped when the source stops first."""
        self._check_stopping()
        step = asyncio.ensure_future(anext(changes))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([step, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not step.done():
            step.cancel()
            await asyncio.wait([step])  # the generator must be idle before it is closed
            raise _Stopped
        try:
            return step.result()
        except StopAsyncIteration:
            return None

    async def _relist(self, scope: str, mark: Mark) -> Mark:
        """Fire every Workflow that finished since `mark.since`; the list's version next."""
        items, version = await self._feed.list_finished(_namespace(scope))
        for obj in items:
            if is_finished(obj) and _finished_at(obj, mark.since) >= mark.since:
                await self._fire(scope, obj)
                self._check_stopping()
        mark = replace(mark, version=version)
        await self._store(scope, mark)
        log.info("workflow source listed again", scope=scope, workflows=len(items))
        return mark

    def _check_stopping(self) -> None:
        if self._stopping.is_set():
            raise _Stopped

    # --- one completion --------------------------------------------------------------------

    async def _fire(self, scope: str, obj: dict[str, Any]) -> None:
        """Submit the rules a finished Workflow matches, retrying until they are done."""
        try:
            event = workflow_event(obj)
        except DecodeError as exc:
            self._ctx.metrics.child(self._ctx.metrics.events_rejected, "workflow", "decode").inc()
            log.error("finished workflow not understood; skipped", scope=scope, error=str(exc))
            return
        if event.id in self._fired:
            return
        await self._submit(scope, event)
        self._fired[event.id] = None
        if len(self._fired) > REMEMBERED:
            self._fired.popitem(last=False)

    async def _submit(self, scope: str, event: Event) -> None:
        attempt = 0
        while True:
            try:
                await self._ctx.pipeline.handle(event, on_exhausted="raise")
                return
            except SubmitError as exc:
                attempt += 1
                delay = self._delay(attempt, getattr(exc, "retry_after", None))
                log.warning(
                    "workflow event not submitted; retrying",
                    event_id=event.id,
                    attempt=attempt,
                    delay=delay,
                    error=str(exc),
                )
                await self._pause(delay)

    # --- watermark and failures ------------------------------------------------------------

    async def _store(self, scope: str, mark: Mark) -> None:
        key = state_key(scope)
        await self._retrying(
            scope, "store the watermark", lambda: self._ctx.state.put(key, mark.value())
        )

    async def _retrying(self, scope: str, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` until it succeeds, pausing with capped backoff after each failure."""
        attempt = 0
        while True:
            try:
                result = await call()
            except (StateError, SourceError) as exc:
                attempt += 1
                await self._failed(scope, what, exc, attempt)
                continue
            except Gone as exc:  # a list never answers Gone; a proxy might
                attempt += 1
                await self._failed(scope, what, SourceError(str(exc)), attempt)
                continue
            if attempt:
                self._recovered(scope)
            return result

    async def _failed(self, scope: str, what: str, exc: Exception, attempt: int) -> None:
        delay = self._delay(attempt, None)
        text = f"{ERROR_PREFIX}cannot {what} ({scope}): {exc}"
        for name in self._rule_names(scope):
            self._status(name).last_error = text
        log.warning(
            f"cannot {what}; retrying", scope=scope, attempt=attempt, delay=delay, error=str(exc)
        )
        await self._pause(delay)

    def _recovered(self, scope: str) -> None:
        self._errors.pop(scope, None)
        for name in self._rule_names(scope):
            status = self._status(name)
            if status.last_error and status.last_error.startswith(ERROR_PREFIX):
                status.last_error = None

    def _rule_names(self, scope: str) -> list[str]:
        return [
            r.name
            for r in self._ctx.rules.rules
            if r.kind == "workflow" and scope in (ALL, r.finished.namespace)
        ]

    def _status(self, name: str) -> RuleStatus:
        return self._ctx.pipeline.status.setdefault(name, RuleStatus())

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        initial, cap = self._backoff
        delay: float = min(cap, initial * 2.0 ** (attempt - 1))
        return max(delay, min(retry_after or 0.0, cap))

    async def _pause(self, seconds: float) -> None:
        """Sleep on the clock until `seconds` pass or the source stops."""
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._ctx.clock.sleep(seconds)),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        self._check_stopping()


def _namespace(scope: str) -> str | None:
    return None if scope == ALL else scope


def _finished_at(obj: dict[str, Any], default: datetime) -> datetime:
    """When a Workflow finished; `default` when it does not say (it fires)."""
    text = (obj.get("status") or {}).get("finishedAt")
    try:
        return parse_time(text) if text else default
    except DecodeError:
        return default


KIND: Final = SourceType(
    wanted=lambda rules: "workflow" in rules.kinds(), build=WorkflowSource, singleton=True
)
