"""The submitter: one (rule, event) becomes at most one Workflow, or one dead letter.

`submit` renders the Workflow (its name is deterministic, so the backend's AlreadyExists
turns every redelivery into a duplicate, a success), waits for the rule's rate limit,
takes one of `max_in_flight` slots for each create call, and retries temporary errors
with the rule's backoff on the injected clock. Each call ends in one `Outcome` — CREATED,
DUPLICATE or DEAD_LETTERED — after which the source may acknowledge the event; or it
raises, and the source must not acknowledge.

A name held by another (rule, idempotency key) — the sink says `NameTaken` — is never a
duplicate: the submitter tries the rule's next deterministic name (up to
`MAX_ALTERNATES`), and dead-letters the event as "NameCollision" if all are taken.

Temporary errors that outlast the retry policy either re-raise the last
`TemporarySubmitError` (`on_exhausted="raise"`, the default: a webhook or OSS push answers
503 and the sender redelivers; a Kafka consumer pauses and retries) or are dead-lettered
as "RetriesExhausted" (`on_exhausted="dead-letter"`, for callers that prefer to move on).

Sinks that can write many Workflows in one call (local, stdout) also get `create_batch`:
already rendered Workflows in one sink call and one slot, outcomes per item, no retries —
the caller sends whatever failed through `submit`. It is how a Kafka fetch becomes one
request to the local sink's writer instead of a task per record.

There is no internal queue: callers awaiting `submit` are the backpressure. Backoff waits
happen outside the slots, so one throttled rule sleeping does not starve the others;
`in_flight` and `drain` count whole submissions, backoff included.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from trigger.clock import Clock
from trigger.errors import (
    AlreadyExists,
    NameTaken,
    PermanentSubmitError,
    RenderError,
    TemporarySubmitError,
    WorkflowTooLarge,
)
from trigger.events import Event
from trigger.rules.render import (
    ANNOTATION_IDEMPOTENCY_KEY,
    MAX_ALTERNATES,
    build_workflow,
    render,
    workflow_name,
)
from trigger.rules.rule import Rule
from trigger.submit.base import BatchSink, Created, Sink
from trigger.submit.deadletter import DeadLetter, DeadLetterSink
from trigger.submit.flow import FlowController
from trigger.submit.ratelimit import RateLimiters
from trigger.submit.retry import RetryCaps, RetryPolicy
from trigger.submit.size import SizeLimit
from trigger.submit.slots import Slots

OnExhausted = Literal["dead-letter", "raise"]
RETRIES_EXHAUSTED = "RetriesExhausted"
NAME_COLLISION = "NameCollision"  # the name and all its alternates hold other keys


class OutcomeKind(enum.StrEnum):
    CREATED = "created"
    DUPLICATE = "duplicate"
    DEAD_LETTERED = "dead-lettered"


@dataclass(frozen=True)
class Outcome:
    """How one submission ended; every kind means the event may be acknowledged."""

    kind: OutcomeKind
    rule: str
    workflow: str | None  # None when rendering failed before a name existed
    attempts: int = 0  # create calls made
    reason: str | None = None  # DEAD_LETTERED: the error class, e.g. "RenderError"
    message: str = ""  # DEAD_LETTERED: the error's message


class SubmitHooks(Protocol):
    """Observer for metrics and logs; called on the loop, must not block or raise."""

    def on_created(self, rule: Rule, event: Event | None, workflow: str, latency: float) -> None:
        """Created, `latency` seconds after rendering (rate-limit wait and retries included)."""

    def on_duplicate(self, rule: Rule, event: Event | None, workflow: str) -> None:
        """The Workflow already existed: a redelivery."""

    def on_retry(
        self, rule: Rule, event: Event | None, attempt: int, delay: float, error: Exception
    ) -> None:
        """Attempt `attempt` failed temporarily; the next one follows in `delay` seconds."""

    def on_exhausted(
        self, rule: Rule, event: Event | None, attempts: int, error: Exception
    ) -> None:
        """Temporary errors outlasted the retry policy and are raised to the caller (when
        they are dead-lettered instead, `on_dead_letter` is what is called)."""

    def on_rate_limited(self, rule: Rule, event: Event | None, delay: float) -> None:
        """The rule's rate limit holds the create back for `delay` seconds (before it)."""

    def on_dead_letter(self, record: DeadLetter) -> None:
        """A dead letter was written."""

    def on_collision(
        self, rule: Rule, event: Event | None, taken: str, following: str, error: Exception
    ) -> None:
        """The name `taken` holds another (rule, key)'s Workflow; `following` is tried next."""


class NoHooks:
    """Hooks that do nothing; subclass and override what you observe."""

    def on_created(self, rule: Rule, event: Event | None, workflow: str, latency: float) -> None:
        pass

    def on_duplicate(self, rule: Rule, event: Event | None, workflow: str) -> None:
        pass

    def on_retry(
        self, rule: Rule, event: Event | None, attempt: int, delay: float, error: Exception
    ) -> None:
        pass

    def on_exhausted(
        self, rule: Rule, event: Event | None, attempts: int, error: Exception
    ) -> None:
        pass

    def on_rate_limited(self, rule: Rule, event: Event | None, delay: float) -> None:
        pass

    def on_dead_letter(self, record: DeadLetter) -> None:
        pass

    def on_collision(
        self, rule: Rule, event: Event | None, taken: str, following: str, error: Exception
    ) -> None:
        pass


class Submitter:
    """Creates Workflows through a sink, exactly once per (event, rule)."""

    def __init__(
        self,
        sink: Sink,
        dead_letters: DeadLetterSink,
        clock: Clock,
        *,
        max_in_flight: int = 64,
        rng: random.Random | None = None,
        hooks: SubmitHooks | None = None,
        caps: RetryCaps | None = None,
        size_limit: SizeLimit | None = None,
        flow: FlowController | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._sink = sink
        self._dead_letters = dead_letters
        self._clock = clock
        self._slots = Slots(max_in_flight)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._hooks: SubmitHooks = hooks or NoHooks()
        self._caps = caps or RetryCaps()
        self._size = size_limit or SizeLimit()
        self.flow = flow  # the backend's flow controller; None: the sink needs none
        self.rate_limiters = RateLimiters(clock)
        self._policies: dict[str, tuple[Rule, RetryPolicy]] = {}
        self._batch_sink = sink if isinstance(sink, BatchSink) else None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """Submissions begun and not yet ended (backoff waits included)."""
        return self._in_flight

    async def submit(
        self,
        rule: Rule,
        event: Event,
        *,
        on_exhausted: OnExhausted = "raise",
        deferred: list[DeadLetter] | None = None,
    ) -> Outcome:
        """Render and create the Workflow for (rule, event); see the module docstring.
        With `deferred`, a dead letter is appended there instead of written: the caller
        writes it with `write_dead_letters` once the event is otherwise done."""
        self._begin()
        try:  # not `with self._tracked()`: one generator per Workflow showed in profiles
            try:
                workflow = render(rule, event)
            except RenderError as exc:
                return await self._dead_letter(
                    rule, event, None, exc, attempts=0, deferred=deferred
                )
            return await self._create(rule, event, workflow, on_exhausted, deferred)
        finally:
            self._end()

    async def submit_many(
        self, pairs: Iterable[tuple[Rule, Event]], *, on_exhausted: OnExhausted = "raise"
    ) -> list[Outcome]:
        """Submit one event's matches concurrently; raises the first error once all ended.

        Dead letters are written only when every match ended: if one match fails
        temporarily, the event is redelivered whole, and a letter written now would be
        written again by each redelivery."""
        pairs = list(pairs)
        if len(pairs) == 1:  # the common case: no gather, no extra task
            rule, event = pairs[0]
            return [await self.submit(rule, event, on_exhausted=on_exhausted)]
        deferred: list[DeadLetter] = []
        results = await asyncio.gather(
            *(
                self.submit(rule, event, on_exhausted=on_exhausted, deferred=deferred)
                for rule, event in pairs
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        await self.write_dead_letters(deferred)
        return [r for r in results if isinstance(r, Outcome)]

    async def write_dead_letters(self, records: Iterable[DeadLetter]) -> None:
        """Write dead letters held back by `submit(deferred=...)`."""
        for record in records:
            await self._dead_letters.write(record)
            self._hooks.on_dead_letter(record)

    @property
    def batches(self) -> bool:
        """Whether the sink creates many Workflows in one call (`create_batch` works)."""
        return self._batch_sink is not None

    async def create_batch(
        self, items: Sequence[tuple[Rule, Event, dict[str, Any]]]
    ) -> list[Outcome | Exception]:
        """One sink call for many rendered Workflows: per item, in order, its Outcome
        (CREATED or DUPLICATE) or the error the sink gave it. Nothing is retried or
        dead-lettered here: the caller takes each failed item through `submit`, which
        does both. Rate-limited rules must not come this way (see Pipeline)."""
        if self._batch_sink is None:
            raise TypeError(f"the {self._sink.kind} sink has no batch create")
        if not items:
            return []
        results: list[Created | Exception | None] = []
        for rule, _, workflow in items:
            try:
                self._size.check(rule, workflow)
                results.append(None)
            except WorkflowTooLarge as exc:  # the caller's `submit` dead-letters it
                results.append(exc)
        sendable = [w for (_, _, w), r in zip(items, results, strict=True) if r is None]
        with self._tracked(len(items)):
            started = self._clock.monotonic()
            if sendable:
                async with self._slots:  # one sink call: one slot
                    created = iter(await self._batch_sink.create_many(sendable))
                results = [next(created) if r is None else r for r in results]
            latency = self._clock.monotonic() - started
        outcomes: list[Outcome | Exception] = []
        for (rule, event, workflow), result in zip(items, results, strict=True):
            name: str = workflow["metadata"]["name"]
            if isinstance(result, AlreadyExists):
                self._hooks.on_duplicate(rule, event, name)
                outcomes.append(Outcome(OutcomeKind.DUPLICATE, rule.name, name, 1))
            elif isinstance(result, Exception):
                outcomes.append(result)
            else:
                self._hooks.on_created(rule, event, name, latency)
                outcomes.append(Outcome(OutcomeKind.CREATED, rule.name, name, 1))
        return outcomes

    async def fire(
        self,
        rule: Rule,
        parameters: Mapping[str, str],
        key: str,
        *,
        on_exhausted: OnExhausted = "raise",
    ) -> Outcome:
        """Create the rule's Workflow by hand (`trigger fire`), named after `key`."""
        with self._tracked():
            name = workflow_name(rule, key)
            workflow = build_workflow(rule, name, parameters, event=None, key=key)
            return await self._create(rule, None, workflow, on_exhausted)

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 - on the injected clock
        """Wait up to `timeout` (clock) seconds for in-flight submissions; True if none left.

        Idleness is looked at again after every wake-up: a submission may begin between
        the moment the submitter goes idle and the moment this coroutine runs (a delivery
        still in its handler when a stop begins), and it is waited for like the others."""
        expiry = asyncio.ensure_future(self._clock.sleep(timeout))
        try:
            while self._in_flight and not expiry.done():
                idle = asyncio.ensure_future(self._idle.wait())
                try:
                    await asyncio.wait({idle, expiry}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    idle.cancel()
        finally:
            expiry.cancel()
        return self._in_flight == 0

    async def _create(
        self,
        rule: Rule,
        event: Event | None,
        workflow: dict[str, Any],
        on_exhausted: OnExhausted,
        deferred: list[DeadLetter] | None = None,
    ) -> Outcome:
        name: str = workflow["metadata"]["name"]
        try:
            self._size.check(rule, workflow)
        except WorkflowTooLarge as exc:
            return await self._dead_letter(rule, event, name, exc, attempts=0, deferred=deferred)
        started = self._clock.monotonic()
        await self._rate_limit(rule, event)
        attempt, waited, alternate = 0, 0.0, 0
        while True:
            attempt += 1
            try:
                await self._attempt(workflow)
            except AlreadyExists:
                self._hooks.on_duplicate(rule, event, name)
                return Outcome(OutcomeKind.DUPLICATE, rule.name, name, attempt)
            except NameTaken as exc:
                # Another (rule, key) holds the name: never a success. Every replica and
                # every retry walks the same sequence of names, so the Workflow is found
                # again (as a duplicate) wherever it was created.
                alternate += 1
                if alternate > MAX_ALTERNATES:
                    return await self._dead_letter(
                        rule,
                        event,
                        name,
                        exc,
                        attempts=attempt,
                        deferred=deferred,
                        error=NAME_COLLISION,
                    )
                key = workflow["metadata"]["annotations"][ANNOTATION_IDEMPOTENCY_KEY]
                taken, name = name, workflow_name(rule, key, alternate)
                workflow = {**workflow, "metadata": {**workflow["metadata"], "name": name}}
                self._hooks.on_collision(rule, event, taken, name, exc)
            except PermanentSubmitError as exc:
                return await self._dead_letter(
                    rule, event, name, exc, attempts=attempt, deferred=deferred
                )
            except TemporarySubmitError as exc:
                policy = self._policy(rule)
                delay = policy.delay(attempt, exc.retry_after, self._rng)
                if policy.exhausted(attempt, waited, delay):
                    if on_exhausted == "raise":
                        self._hooks.on_exhausted(rule, event, attempt, exc)
                        raise
                    return await self._dead_letter(
                        rule,
                        event,
                        name,
                        exc,
                        attempts=attempt,
                        deferred=deferred,
                        error=RETRIES_EXHAUSTED,
                    )
                self._hooks.on_retry(rule, event, attempt, delay, exc)
                slept_from = self._clock.monotonic()
                if self.flow is None:
                    await self._clock.sleep(delay)
                else:  # ends early when the backend recovers from failing
                    await self.flow.backoff(delay)
                waited += self._clock.monotonic() - slept_from
            else:
                self._hooks.on_created(rule, event, name, self._clock.monotonic() - started)
                return Outcome(OutcomeKind.CREATED, rule.name, name, attempt)

    async def _rate_limit(self, rule: Rule, event: Event | None) -> None:
        """Wait for the rule's rate limit, if it has one; the hooks hear of a wait."""
        bucket = self.rate_limiters.bucket(rule)
        if bucket is not None:
            await bucket.acquire(functools.partial(self._hooks.on_rate_limited, rule, event))

    async def _attempt(self, workflow: dict[str, Any]) -> None:
        """One create call: a slot, then the backend's admission (flow control), then the
        sink; the answer goes back to the flow controller. Raises what the sink raises."""
        async with self._slots:
            flow = self.flow
            if flow is None:
                await self._sink.create(workflow)
                return
            ticket = await flow.admit()
            try:
                if ticket.probe:  # a failing backend must not hold its one probe for long
                    async with asyncio.timeout(flow.settings.probe_timeout):
                        await self._sink.create(workflow)
                else:
                    await self._sink.create(workflow)
            except TimeoutError as exc:
                flow.done(ticket, "error")
                raise TemporarySubmitError("probe timed out: the backend is still failing") from exc
            except TemporarySubmitError as exc:
                flow.done(ticket, "throttled" if exc.status == 429 else "error", exc.retry_after)
                raise
            except (AlreadyExists, NameTaken, PermanentSubmitError):
                flow.done(ticket, "ok")  # the backend answered: it is working
                raise
            except BaseException:
                flow.abandon(ticket)
                raise
            flow.done(ticket, "ok")

    async def _dead_letter(
        self,
        rule: Rule,
        event: Event | None,
        workflow: str | None,
        exc: Exception,
        *,
        attempts: int,
        deferred: list[DeadLetter] | None,
        error: str | None = None,
    ) -> Outcome:
        reason = error or type(exc).__name__
        message = str(exc) if error is None else f"{type(exc).__name__}: {exc}"
        record = DeadLetter.of(
            event,
            rule=rule.name,
            error=reason,
            message=message,
            time=self._clock.now(),
            attempts=attempts,
            workflow=workflow,
        )
        if deferred is None:
            await self.write_dead_letters([record])
        else:
            deferred.append(record)
        return Outcome(OutcomeKind.DEAD_LETTERED, rule.name, workflow, attempts, reason, message)

    def _policy(self, rule: Rule) -> RetryPolicy:
        """The rule's retry policy, built once per loaded rule (not per submission)."""
        cached = self._policies.get(rule.name)
        if cached is None or cached[0] is not rule:
            cached = (rule, RetryPolicy.for_rule(rule.document.spec.retry, self._caps))
            self._policies[rule.name] = cached
        return cached[1]

    @contextlib.contextmanager
    def _tracked(self, count: int = 1) -> Iterator[None]:
        """Count submissions in flight for their whole life, however they end."""
        self._begin(count)
        try:
            yield
        finally:
            self._end(count)

    def _begin(self, count: int = 1) -> None:
        self._in_flight += count
        self._idle.clear()

    def _end(self, count: int = 1) -> None:
        self._in_flight -= count
        if self._in_flight == 0:
            self._idle.set()
