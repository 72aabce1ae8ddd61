"""The cron source: fires each rule's schedule ticks, once each, on the leader only.

One task per cron rule sleeps on the injected clock until its next tick (at most
`max_sleep` at a time), fires it through the pipeline and then advances the rule's
watermark (`cron/<rule>` in the state store): every tick at or before the watermark is
settled. A tick's Workflow name derives from the rule and the scheduled time, so a
restart, a retry or a second replica meets AlreadyExists.

Those sleeps run on the monotonic clock for a span computed from the wall clock, so one
more task re-reads the wall clock every `wall_check` seconds and, when it stepped (NTP, a
resumed VM), wakes every rule at once: a step forward fires what catchUp says, a step
back makes each rule wait for the wall clock to reach its next tick again. The watermark
keeps a step back from firing any tick twice.

A tick reached at most `late_grace` (10 s) late is on time and fires whatever `catchUp`
says. Ticks reached later (downtime, a pause, `suspend`, a step forward) are missed and
follow `catchUp`: `latest` fires the most recent unless an on-time tick fires anyway,
`all` each in order (the last `maxCatchUp`), `none` none; ticks older than
`startingDeadline` never fire. A rule seen
for the first time starts from now. `concurrencyPolicy` looks at the rule's Workflows by
label before each tick: `Forbid` skips the tick while one is Pending or Running,
`Replace` stops them first.

A state-store failure holds the rule where it is (the next tick waits for the watermark
of the last one) and is retried with capped backoff; every failure is counted, shown as
the rule's last_error, and logged: a temporary one at each attempt, a permanent one (a
403, a value too large) once, until the store accepts again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

import structlog

from trigger.clock import WallSteps
from trigger.core.pipeline import RuleStatus
from trigger.core.state import StateError
from trigger.decoders.cron import cron_tick
from trigger.errors import ConfigError, DecodeError, SubmitError
from trigger.events import ANNOTATION_EVENT_ID, Event, format_time, parse_time
from trigger.rules.cronmath import Fire, count_fires, fires, fires_between, recent_fires
from trigger.rules.render import LABEL_RULE
from trigger.rules.router import RuleSet
from trigger.rules.rule import Rule
from trigger.rules.schedules import compile_timezone
from trigger.sources.base import SourceContext, SourceType

log = structlog.get_logger("trigger.cron")
T = TypeVar("T")

MAX_SLEEP: Final = 60.0  # seconds: the longest sleep of a rule (bounds NTP slewing's effect)
WALL_CHECK: Final = 1.0  # seconds between two looks for a step of the wall clock
LATE_GRACE: Final = 10.0  # seconds: a tick reached later than this counts as missed
BACKOFF_INITIAL: Final = 1.0
BACKOFF_MAX: Final = 60.0
ACTIVE_PHASES: Final = frozenset({"", "Pending", "Running"})  # "": no status.phase yet
MISSED_COUNT_LIMIT: Final = 1000  # missed ticks counted one by one, then "at least"
_JUST_UNDER: Final = timedelta(microseconds=1)
STATE_ERROR_PREFIX: Final = "cron state: "  # marks the last_error this source sets and clears


def state_key(rule: str) -> str:
    return f"cron/{rule}"


@runtime_checkable
class WorkflowControl(Protocol):
    """What Forbid and Replace need from a sink."""

    async def list_workflows(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    async def stop_workflow(self, namespace: str, name: str) -> None: ...


def refused_rules(rules: RuleSet, sink: object) -> list[str]:
    """Cron rules whose concurrencyPolicy the sink cannot enforce."""
    if isinstance(sink, WorkflowControl):
        return []
    return [r.name for r in rules.rules if r.kind == "cron" and r.cron.concurrencyPolicy != "Allow"]


def concurrency_problem(rule: Rule, sink_type: type) -> str | None:
    """Why a cron rule cannot run with sinks of this class — its concurrencyPolicy needs
    one that can list and stop Workflows — or None."""
    policy = rule.cron.concurrencyPolicy
    if policy == "Allow" or issubclass(sink_type, WorkflowControl):
        return None
    kind = getattr(sink_type, "kind", sink_type.__name__)
    return (
        f"concurrencyPolicy {policy} needs a sink that can list and stop Workflows "
        f"(kubernetes, argo-server, local); the {kind} sink cannot: use concurrencyPolicy "
        "Allow or another sink"
    )


def refusal(names: list[str], sink: object) -> str:
    kind = getattr(sink, "kind", type(sink).__name__)
    return (
        f"cron rule(s) {', '.join(names)} use concurrencyPolicy Forbid or Replace, which needs "
        f"a sink that can list and stop Workflows (kubernetes, argo-server, local); the {kind} "
        "sink cannot: use concurrencyPolicy Allow or another sink"
    )


@dataclass(frozen=True)
class Plan:
    """What one look at the clock decided for a rule."""

    fire: tuple[Fire, ...]  # ticks to fire now, oldest first
    missed: int  # ticks dropped by catchUp or startingDeadline (counted up to a limit)
    settled: datetime | None  # the watermark to store when nothing fires but ticks dropped


def plan_ticks(rule: Rule, tz: tzinfo, watermark: datetime, now: datetime, grace: float) -> Plan:
    """The ticks in (watermark, now] to fire, per catchUp and startingDeadline.

    A tick reached at most `grace` seconds late is on time: it fires whatever catchUp says
    (a short failover or a busy moment loses nothing). Older ticks are missed and follow
    catchUp: `all` fires the last `maxCatchUp` of them, `latest` the most recent unless an
    on-time tick (a more recent one) fires anyway, `none` none.
    """
    cron = rule.cron
    after = watermark
    if cron.startingDeadline is not None:
        after = max(after, now - timedelta(seconds=cron.startingDeadline) - _JUST_UNDER)
    late = now - timedelta(seconds=grace) - _JUST_UNDER  # fires after this are on time
    on_time = tuple(fires_between(rule.schedules, tz, max(after, late), now))
    chosen: tuple[Fire, ...] = ()
    older = False
    catch_up = cron.catchUp == "all" or (cron.catchUp == "latest" and not on_time)
    if late > after and catch_up:
        count = cron.maxCatchUp if cron.catchUp == "all" else 1
        recent = recent_fires(rule.schedules, tz, after, late, count)
        chosen, older = recent.fires, recent.older
    elif late > after:
        older = next(fires_between(rule.schedules, tz, after, late), None) is not None
    chosen += on_time
    if not older and after == watermark:
        return Plan(chosen, 0, None)
    missed = count_fires(rule.schedules, tz, watermark, now, MISSED_COUNT_LIMIT) - len(chosen)
    if chosen or not missed:
        return Plan(chosen, max(missed, 0), None)
    # Nothing fires: settle past the dropped ticks so they are not counted again.
    (latest,) = recent_fires(rule.schedules, tz, watermark, now, 1).fires
    return Plan((), missed, latest.time)


def is_active(workflow: dict[str, Any]) -> bool:
    """Pending or Running; a Workflow the controller has not seen yet counts as Pending."""
    return ((workflow.get("status") or {}).get("phase") or "") in ACTIVE_PHASES


def _stored_time(value: dict[str, Any] | None) -> datetime | None:
    """The watermark in a state value, or None when there is none or it is unreadable."""
    text = (value or {}).get("scheduledTime")
    if not text:
        return None
    try:
        return parse_time(text)
    except DecodeError:
        return None


class _Stopped(Exception):
    """The source is stopping: unwind a rule's task without acknowledging anything."""


class CronSource:
    """Every cron rule's timer; see the module docstring."""

    name = "cron"
    singleton = True

    def __init__(
        self,
        ctx: SourceContext,
        *,
        max_sleep: float = MAX_SLEEP,
        late_grace: float = LATE_GRACE,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        wall_check: float = WALL_CHECK,
    ) -> None:
        refused = refused_rules(ctx.rules, ctx.sink)
        if refused:
            raise ConfigError(refusal(refused, ctx.sink))
        self._ctx = ctx
        self._max_sleep, self._grace, self._wall_check = max_sleep, late_grace, wall_check
        self._backoff = (backoff_initial, backoff_max)
        self._refused: frozenset[str] = frozenset()
        self._wakes: dict[str, asyncio.Event] = {}
        self._reported: dict[str, str] = {}  # state key -> reason of the permanent error logged
        self._changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()
        self._finished.set()

    def routes(self) -> list[Any]:
        return []

    def rules_changed(self, rules: RuleSet) -> None:
        refused = refused_rules(rules, self._ctx.sink)
        if refused:
            log.error(
                "cron rules refused; they will not fire", error=refusal(refused, self._ctx.sink)
            )
        self._refused = frozenset(refused)
        self._wake_all()

    async def run(self) -> None:
        self._finished.clear()
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            async with asyncio.TaskGroup() as group:
                watch = group.create_task(self._watch_wall_clock(), name="cron:wall-clock")
                while not self._stopping.is_set():
                    self._changed.clear()
                    for name in self._cron_names():
                        if name not in tasks or tasks[name].done():
                            self._wakes[name] = asyncio.Event()
                            tasks[name] = group.create_task(
                                self._run_rule(name), name=f"cron:{name}"
                            )
                    await self._changed.wait()
                watch.cancel()
                self._wake_all()
        finally:
            self._finished.set()

    async def stop(self, deadline: float) -> None:  # the manager enforces the deadline
        """Fire no new tick; a tick being submitted finishes and its watermark is stored."""
        self._stopping.set()
        self._wake_all()
        await self._finished.wait()

    def _wake_all(self) -> None:
        self._changed.set()
        self._wake_rules()

    def _wake_rules(self) -> None:
        for wake in self._wakes.values():
            wake.set()

    async def _watch_wall_clock(self) -> None:
        """Wake every rule as soon as the wall clock is seen to step, either way; `run`
        cancels it. A bare sleep, as this wakes every second for the daemon's life."""
        steps = WallSteps(self._ctx.clock)
        while True:
            await self._ctx.clock.sleep(self._wall_check)
            step = steps.check()
            if step:
                log.warning(
                    "wall clock stepped; cron rules look at it again",
                    step=round(step, 3),
                    now=format_time(self._ctx.clock.now()),
                )
                self._wake_rules()

    def _cron_names(self) -> list[str]:
        return [
            r.name
            for r in self._ctx.rules.rules
            if r.kind == "cron" and r.name not in self._refused
        ]

    def _rule(self, name: str) -> Rule | None:
        """The current version of a rule, or None when it is gone or no longer runnable."""
        rule = self._ctx.rules.by_name.get(name)
        if rule is None or rule.kind != "cron" or name in self._refused:
            return None
        return rule

    # --- one rule --------------------------------------------------------------------------

    async def _run_rule(self, name: str) -> None:
        wake = self._wakes[name]
        watermark: datetime | None = None
        loaded = False
        try:
            while not self._stopping.is_set():
                wake.clear()
                rule = self._rule(name)
                if rule is None:
                    return
                if rule.cron.suspend:  # silent; the watermark stays where it was
                    await self._pause(self._max_sleep, wake)
                    continue
                if not loaded:
                    watermark = await self._retrying(
                        name, "read the watermark", lambda: self._load(name)
                    )
                    loaded = True
                watermark, delay = await self._step(rule, watermark)
                if delay > 0:
                    await self._pause(delay, wake)
        except _Stopped:
            return

    async def _step(self, rule: Rule, watermark: datetime | None) -> tuple[datetime, float]:
        """Fire what is due; return the new watermark and how long to sleep."""
        now = self._ctx.clock.now()
        tz = compile_timezone(rule.cron.timezone)
        if watermark is None:  # first seen: start from now, no catch-up
            await self._store(rule.name, now)
            log.info("cron rule starts from now", rule=rule.name, watermark=format_time(now))
            watermark = now
        plan = plan_ticks(rule, tz, watermark, now, self._grace)
        if plan.missed:
            self._ctx.metrics.cron_skipped.labels(rule.name, "missed").inc(plan.missed)
            log.warning(
                "missed cron ticks dropped",
                rule=rule.name,
                at_least=plan.missed,
                catch_up=rule.cron.catchUp,
            )
        if plan.settled is not None:
            await self._store(rule.name, plan.settled)
            watermark = plan.settled
        for fire in plan.fire:
            if not await self._fire(rule.name, fire):
                return watermark, 0.0  # the rule changed under the tick: look again
            watermark = fire.time
        if plan.fire:
            return watermark, 0.0
        upcoming = next(fires(rule.schedules, tz, max(watermark, now)), None)
        if upcoming is None:
            return watermark, self._max_sleep
        return watermark, max(0.0, min((upcoming.time - now).total_seconds(), self._max_sleep))

    async def _fire(self, name: str, fire: Fire) -> bool:
        """Submit one tick (retrying), then store it as the watermark; False if abandoned."""
        event: Event | None = None
        attempt = 0
        while True:
            rule = self._rule(name)
            if rule is None or rule.cron.suspend:
                return False
            if event is None:
                event = cron_tick(
                    name,
                    fire.schedule.text,
                    fire.time,
                    rule.cron.timezone,
                    fired=self._ctx.clock.now(),
                )
            try:
                if await self._admit(rule, event):
                    await self._ctx.pipeline.handle(event, on_exhausted="raise")
                break
            except SubmitError as exc:
                attempt += 1
                delay = self._delay(attempt, getattr(exc, "retry_after", None))
                log.warning(
                    "cron tick not submitted; retrying",
                    rule=name,
                    event_id=event.id,
                    attempt=attempt,
                    delay=delay,
                    error=str(exc),
                )
                await self._pause(delay, None)
        await self._store(name, fire.time)
        return True

    async def _admit(self, rule: Rule, event: Event) -> bool:
        """Apply concurrencyPolicy: False means skip this tick (Forbid)."""
        policy = rule.cron.concurrencyPolicy
        if policy == "Allow":
            return True
        sink = self._ctx.sink
        assert isinstance(sink, WorkflowControl)  # refused_rules keeps other sinks out
        namespace = rule.workflow.namespace
        found = await sink.list_workflows(namespace, f"{LABEL_RULE}={rule.name}")
        # The tick's own Workflow (a restart mid-tick) is neither a reason to skip nor to stop.
        active = [
            w
            for w in found
            if is_active(w)
            and ((w.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_EVENT_ID)
            != event.id
        ]
        names = sorted((w.get("metadata") or {}).get("name", "") for w in active)
        if not active:
            return True
        if policy == "Forbid":
            self._ctx.metrics.cron_skipped.labels(rule.name, "forbid").inc()
            log.info(
                "cron tick skipped: workflows still active (Forbid)",
                rule=rule.name,
                event_id=event.id,
                active=names,
            )
            return False
        for workflow in names:
            await self._stop_workflow(sink, namespace, workflow)
        log.info(
            "stopped active workflows (Replace)", rule=rule.name, event_id=event.id, stopped=names
        )
        return True

    @staticmethod
    async def _stop_workflow(sink: WorkflowControl, namespace: str, name: str) -> None:
        try:
            await sink.stop_workflow(namespace, name)
        except SubmitError as exc:
            if exc.status != 404:  # gone meanwhile: nothing left to stop
                raise

    # --- watermark ---------------------------------------------------------------------------

    async def _load(self, name: str) -> datetime | None:
        value = await self._ctx.state.get(state_key(name))
        moment = _stored_time(value)
        if value is not None and moment is None:
            log.error("unreadable cron watermark; starting from now", rule=name, value=value)
        return moment

    async def _store(self, name: str, moment: datetime) -> None:
        """Advance the watermark to `moment` (never backwards), retrying state errors."""

        def advance(current: dict[str, Any] | None) -> dict[str, Any]:
            old = _stored_time(current)
            if current is not None and old is not None and old >= moment:
                return current
            return {**(current or {}), "scheduledTime": format_time(moment)}

        await self._retrying(
            name, "store the watermark", lambda: self._ctx.state.update(state_key(name), advance)
        )

    # --- waiting -----------------------------------------------------------------------------

    async def _retrying(self, name: str, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` until it succeeds, pausing with capped backoff after each state error."""
        attempt = 0
        while True:
            try:
                result = await call()
            except StateError as exc:
                attempt += 1
                delay = self._delay(attempt, None)
                self._state_failed(name, what, exc, attempt, delay)
                await self._pause(delay, None)
                continue
            if attempt:
                self._state_recovered(name, what, attempt)
            return result

    def _state_failed(
        self, name: str, what: str, exc: StateError, attempt: int, delay: float
    ) -> None:
        """Count the failure and show it; log a temporary one each time, a permanent one
        when it first appears (it repeats until someone fixes the store)."""
        key, reason = state_key(name), exc.reason  # the store counts it in the metric
        self._status(name).last_error = f"{STATE_ERROR_PREFIX}cannot {what} ({key}): {exc}"
        fields = {"rule": name, "key": key, "reason": reason, "error": str(exc)}
        if exc.temporary:
            log.warning(f"cannot {what}; retrying", attempt=attempt, delay=delay, **fields)
        elif self._reported.get(key) != reason:
            self._reported[key] = reason
            log.error(
                f"cannot {what}: the state store refuses it; retrying until it accepts",
                status=exc.status,
                max_delay=self._backoff[1],
                **fields,
            )

    def _state_recovered(self, name: str, what: str, failures: int) -> None:
        key = state_key(name)
        self._reported.pop(key, None)
        status = self._status(name)
        if status.last_error and status.last_error.startswith(STATE_ERROR_PREFIX):
            status.last_error = None
        log.info(f"state store works again: could {what}", rule=name, key=key, failures=failures)

    def _status(self, name: str) -> RuleStatus:
        return self._ctx.pipeline.status.setdefault(name, RuleStatus())

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        initial, cap = self._backoff
        delay: float = min(cap, initial * 2.0 ** (attempt - 1))
        return max(delay, min(retry_after or 0.0, cap))

    async def _pause(self, seconds: float, wake: asyncio.Event | None) -> None:
        """Sleep on the clock until `seconds` pass, the source stops or `wake` is set."""
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._ctx.clock.sleep(seconds)),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if self._stopping.is_set():
            raise _Stopped


KIND: Final = SourceType(
    wanted=lambda rules: "cron" in rules.kinds(), build=CronSource, singleton=True
)
