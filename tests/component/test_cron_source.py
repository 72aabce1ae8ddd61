"""The cron source driven in virtual time through a real Pipeline, Submitter and sink.

Each test builds the daemon's parts as `trigger run` does, runs `CronSource` on a
`VirtualClock`, moves time with `advance`, and waits (polling with a deadline) until every
rule's task sleeps on the clock again before looking at Workflows and watermarks.
"""

from __future__ import annotations

import asyncio
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from tests.daemon import running, wait_for
from trigger.clock import VirtualClock
from trigger.core.metrics import Metrics
from trigger.core.pipeline import Pipeline
from trigger.core.state import ConfigMapStateStore, FileStateStore, StateStore
from trigger.errors import ConfigError, TemporarySubmitError
from trigger.events import format_time
from trigger.rules.loader import load_rules
from trigger.rules.router import RuleSet
from trigger.sources.base import SourceContext
from trigger.sources.cron import CronSource
from trigger.submit.base import Created
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink
from trigger.submit.local import LocalSink
from trigger.submit.stdout import StdoutSink
from trigger.submit.submitter import Submitter
from trigger.testing.kubeapi import KubeEmulator

G, V, WF = "argoproj.io", "v1alpha1", "workflows"
START = datetime(2025, 6, 1, 0, 0, tzinfo=UTC)
DEADLINE = 10.0  # seconds of real time before a wait fails the test


def rule_yaml(name: str = "tick", **cron: Any) -> str:
    spec = {"schedules": ["*/15 * * * *"], **cron}
    doc = {
        "apiVersion": "trigger/v1",
        "kind": "Rule",
        "metadata": {"name": name},
        "spec": {
            "source": {"cron": spec},
            "workflow": {
                "template": "report",
                "namespace": "data",
                "generateName": f"{name}-",
                "parameters": {"at": "{{ event.scheduledTime }}", "fired": "{{ event.fireTime }}"},
            },
            "retry": {"limit": 0},
        },
    }
    return yaml.safe_dump(doc)


class RecordingSink:
    """A real sink wrapped to record the order of creates and fail the next few on demand."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.created: list[dict[str, Any]] = []
        self.fail_next = 0

    async def create(self, workflow: Mapping[str, Any]) -> Created:
        if self.fail_next:
            self.fail_next -= 1
            raise TemporarySubmitError("injected outage", status=503)
        created: Created = await self.inner.create(workflow)
        self.created.append(dict(workflow))
        return created

    async def list_workflows(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.inner.list_workflows(namespace, label_selector)
        return found

    async def stop_workflow(self, namespace: str, name: str) -> None:
        await self.inner.stop_workflow(namespace, name)

    async def check(self) -> None:
        await self.inner.check()

    async def close(self) -> None:
        await self.inner.close()

    def scheduled(self) -> list[str]:
        return [w["metadata"]["annotations"]["trigger.dev/event-id"] for w in self.created]


@dataclass
class Harness:
    """The parts `trigger run` builds, around one CronSource on a virtual clock."""

    tmp: Path
    sink: Any
    state: Any
    clock: VirtualClock = field(default_factory=lambda: VirtualClock(START))
    metrics: Metrics = field(default_factory=Metrics)
    source: CronSource | None = None
    task: asyncio.Task[None] | None = None
    rules: RuleSet | None = None

    def load(self, *docs: str) -> RuleSet:
        path = self.tmp / "rules.yaml"
        path.write_text("---\n".join(docs))
        self.rules = load_rules([path])
        return self.rules

    def context(self, rules: RuleSet) -> SourceContext:
        dead = FileDeadLetterSink(self.tmp / "dead.jsonl")
        submitter = Submitter(self.sink, dead, self.clock)
        pipeline = Pipeline(rules, submitter, dead, self.metrics, self.clock)
        return SourceContext(pipeline, self.metrics, self.clock, self.sink, self.state, None)

    async def start(self, *docs: str, **options: Any) -> CronSource:
        # The wall-clock watch looks once an hour unless a test is about clock steps, so
        # that moving virtual time hours ahead takes few wake-ups.
        options.setdefault("wall_check", 3600.0)
        self.source = CronSource(self.context(self.load(*docs)), **options)
        self.task = asyncio.create_task(self.source.run())
        await self.idle()
        return self.source

    async def idle(self, workers: int | None = None) -> None:
        """Wait until every rule's task, and the source's wall-clock watch, sleeps again."""
        assert self.rules is not None
        count = workers if workers is not None else sum(1 for r in self.rules.rules) + 1
        for _ in range(100):  # let woken tasks drop their old sleeps before counting sleepers
            await asyncio.sleep(0)
        await until(lambda: self.clock.sleeping >= count, "cron tasks to go idle")

    async def at(self, moment: datetime) -> None:
        """Move virtual time to `moment` one wake-up at a time, letting the source finish
        each tick (its writes run in threads, which the clock cannot see) before the next."""
        while True:
            remaining = (moment - self.clock.now()).total_seconds()
            step = self.clock.until_next_wake()
            if step is None or step >= remaining:
                break
            await self.clock.advance(step)
            await self.idle()
        await self.clock.advance(max(0.0, (moment - self.clock.now()).total_seconds()))
        await self.idle()

    async def reload(self, *docs: str) -> None:
        assert self.source is not None and self.task is not None
        rules = self.load(*docs)
        self.source._ctx.pipeline.swap(rules)
        self.source.rules_changed(rules)
        await self.idle()

    async def stop(self) -> None:
        if self.source is not None and self.task is not None:
            await asyncio.wait_for(self.source.stop(DEADLINE), DEADLINE)
            await asyncio.wait_for(self.task, DEADLINE)
            self.source = self.task = None

    async def watermark(self, rule: str = "tick") -> str | None:
        value = await self.state.get(f"cron/{rule}")
        return None if value is None else str(value["scheduledTime"])

    def skipped(self, rule: str, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "trigger_cron_ticks_skipped_total", {"rule": rule, "reason": reason}
        )
        return value or 0.0


async def until(condition: Callable[[], Any], what: str) -> None:
    """Poll `condition` (real time) until it holds; fail after DEADLINE seconds."""
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


def ids(*moments: str) -> list[str]:
    return [f"tick@{m}" for m in moments]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    state = await FileStateStore.open(tmp_path / "state.json")
    made = Harness(tmp_path, RecordingSink(LocalSink(tmp_path / "workflows")), state)
    yield made
    await made.stop()
    await made.sink.close()


async def seed_watermark(state: StateStore, moment: datetime, rule: str = "tick") -> None:
    await state.put(f"cron/{rule}", {"scheduledTime": format_time(moment)})


# --- firing ----------------------------------------------------------------------------


async def test_fires_each_tick_once_on_time(harness: Harness) -> None:
    """Each tick fires once, when it falls due, and advances the watermark."""
    await seed_watermark(harness.state, START)
    await harness.start(rule_yaml())
    await harness.at(START + timedelta(minutes=14))
    assert harness.sink.scheduled() == []
    await harness.at(START + timedelta(minutes=31))
    assert harness.sink.scheduled() == ids("2025-06-01T00:15:00Z", "2025-06-01T00:30:00Z")
    assert await harness.watermark() == "2025-06-01T00:30:00Z"


async def test_event_carries_scheduled_and_fire_time(harness: Harness) -> None:
    """The tick's Workflow gets the scheduled time and the actual fire time."""
    await seed_watermark(harness.state, START)
    await harness.start(rule_yaml())
    await harness.at(START + timedelta(minutes=15, seconds=3))
    (workflow,) = harness.sink.created
    parameters = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert parameters == {"at": "2025-06-01T00:15:00Z", "fired": "2025-06-01T00:15:00Z"}


async def test_workflow_name_derives_from_rule_and_scheduled_time(harness: Harness) -> None:
    """Two ticks get two names; the same tick rendered again gets the same name."""
    await seed_watermark(harness.state, START)
    await harness.start(rule_yaml())
    await harness.at(START + timedelta(minutes=31))
    names = [w["metadata"]["name"] for w in harness.sink.created]
    assert len(set(names)) == 2 and all(n.startswith("tick-") for n in names)
    files = sorted(p.stem for p in (harness.tmp / "workflows" / "data").glob("*.yaml"))
    assert files == sorted(names)


async def test_first_seen_rule_starts_from_now(harness: Harness) -> None:
    """A rule with no watermark fires nothing missed and stores now as its watermark."""
    await harness.clock.advance(3600 * 5 + 7)
    await harness.start(rule_yaml(catchUp="all"))
    assert harness.sink.scheduled() == []
    assert await harness.watermark() == "2025-06-01T05:00:07Z"


async def test_several_rules_fire_independently(harness: Harness) -> None:
    """Each cron rule has its own timer and watermark."""
    await seed_watermark(harness.state, START, "tick")
    await seed_watermark(harness.state, START, "hourly")
    await harness.start(rule_yaml(), rule_yaml("hourly", schedules=["0 * * * *"]))
    await harness.at(START + timedelta(minutes=61))
    events = sorted(harness.sink.scheduled())
    assert events == sorted(
        [
            *ids(
                "2025-06-01T00:15:00Z",
                "2025-06-01T00:30:00Z",
                "2025-06-01T00:45:00Z",
                "2025-06-01T01:00:00Z",
            ),
            "hourly@2025-06-01T01:00:00Z",
        ]
    )
    assert await harness.watermark("hourly") == "2025-06-01T01:00:00Z"


# --- catch-up ----------------------------------------------------------------------------

DOWN_SINCE = START - timedelta(hours=1)  # the watermark: the daemon was down for an hour
MISSED = [
    "2025-05-31T23:15:00Z",
    "2025-05-31T23:30:00Z",
    "2025-05-31T23:45:00Z",
    "2025-06-01T00:00:00Z",
]


@pytest.mark.parametrize(
    ("cron", "fired", "watermark"),
    [
        ({"catchUp": "latest"}, MISSED[-1:], MISSED[-1]),
        ({"catchUp": "all"}, MISSED, MISSED[-1]),
        ({"catchUp": "all", "maxCatchUp": 2}, MISSED[-2:], MISSED[-1]),
        ({"catchUp": "none"}, [], MISSED[-1]),
        ({"catchUp": "latest", "startingDeadline": "10m"}, MISSED[-1:], MISSED[-1]),
        ({"catchUp": "all", "startingDeadline": "15m"}, MISSED[-1:], MISSED[-1]),
        (
            {"catchUp": "all", "startingDeadline": "20m"},
            MISSED[-2:],
            MISSED[-1],
        ),  # 23:45 is 20m old
        ({"catchUp": "all", "startingDeadline": "40m"}, MISSED[-3:], MISSED[-1]),
        ({"catchUp": "none", "startingDeadline": "1h"}, [], MISSED[-1]),
    ],
)
async def test_catch_up_after_downtime(
    harness: Harness, cron: dict[str, Any], fired: list[str], watermark: str
) -> None:
    """Missed ticks fire per catchUp, in order, within startingDeadline."""
    await seed_watermark(harness.state, DOWN_SINCE)
    await harness.clock.advance(5 * 60)  # back up at 00:05, five minutes after the last tick
    await harness.start(rule_yaml(**cron))
    assert harness.sink.scheduled() == ids(*fired)
    assert await harness.watermark() == watermark


@pytest.mark.parametrize(
    ("deadline", "fired"), [("4m", []), ("5m", MISSED[-1:]), (None, MISSED[-1:])]
)
async def test_starting_deadline_bounds_a_late_tick(
    harness: Harness, deadline: str | None, fired: list[str]
) -> None:
    """A tick older than startingDeadline does not fire; one exactly that old does."""
    await seed_watermark(harness.state, DOWN_SINCE)
    await harness.clock.advance(5 * 60)
    cron = {"catchUp": "latest"} if deadline is None else {"startingDeadline": deadline}
    await harness.start(rule_yaml(**cron))
    assert harness.sink.scheduled() == ids(*fired)


EVERY_SECOND = ["* * * * * *"]


@pytest.mark.parametrize("catch_up", ["latest", "none", "all"])
async def test_ticks_reached_within_the_grace_fire_whatever_catch_up_says(
    harness: Harness, catch_up: str
) -> None:
    """Ticks reached at most 10 s late are not missed: after a 3.5 s stall (a short failover,
    a busy loop) each fires once, in order, under every catchUp, and none is counted missed."""
    await seed_watermark(harness.state, START)
    await harness.clock.advance(3.5)
    await harness.start(rule_yaml(schedules=EVERY_SECOND, catchUp=catch_up))
    assert harness.sink.scheduled() == at_seconds(1, 2, 3)
    assert harness.skipped("tick", "missed") == 0


@pytest.mark.parametrize(
    ("catch_up", "fired", "missed"),
    [
        ("latest", tuple(range(9, 19)), 8),  # 9 s is more recent than 8 s: enough
        ("none", tuple(range(9, 19)), 8),
        ("all", tuple(range(1, 19)), 0),
    ],
)
async def test_only_ticks_reached_over_10s_late_follow_catch_up(
    harness: Harness, catch_up: str, fired: tuple[int, ...], missed: int
) -> None:
    """Back after 18.5 s: the ticks reached within 10 s (9–18 s) fire anyway, the ones
    reached over 10 s late (1–8 s) follow catchUp."""
    await seed_watermark(harness.state, START)
    await harness.clock.advance(18.5)
    await harness.start(rule_yaml(schedules=EVERY_SECOND, catchUp=catch_up))
    assert harness.sink.scheduled() == at_seconds(*fired)
    assert harness.skipped("tick", "missed") == missed


async def test_catch_up_none_still_fires_later_ticks(harness: Harness) -> None:
    """catchUp none drops the missed ticks, then fires the next ones on time."""
    await seed_watermark(harness.state, DOWN_SINCE)
    await harness.clock.advance(5 * 60)
    await harness.start(rule_yaml(catchUp="none"))
    await harness.at(START + timedelta(minutes=15))
    assert harness.sink.scheduled() == ids("2025-06-01T00:15:00Z")
    assert harness.skipped("tick", "missed") == 4


async def test_ticks_beyond_the_deadline_are_counted_once(harness: Harness) -> None:
    """Missed ticks older than startingDeadline are counted once and settled."""
    await seed_watermark(harness.state, DOWN_SINCE)
    await harness.clock.advance(5 * 60)
    await harness.start(rule_yaml(schedules=["0 * * * *"], startingDeadline="1m"))
    await harness.at(START + timedelta(minutes=9))  # several capped wake-ups later
    assert harness.sink.scheduled() == []
    assert harness.skipped("tick", "missed") == 1
    assert await harness.watermark() == "2025-06-01T00:00:00Z"


# --- suspend -----------------------------------------------------------------------------


async def test_suspended_rule_is_silent_and_keeps_its_watermark(harness: Harness) -> None:
    """A suspended rule fires nothing and its watermark does not move."""
    await seed_watermark(harness.state, START)
    await harness.start(rule_yaml(suspend=True))
    await harness.at(START + timedelta(hours=2))
    assert harness.sink.scheduled() == []
    assert await harness.watermark() == "2025-06-01T00:00:00Z"


@pytest.mark.parametrize(
    ("catch_up", "fired"),
    [
        ("latest", ["2025-06-01T01:00:00Z"]),
        (
            "all",
            [
                "2025-06-01T00:15:00Z",
                "2025-06-01T00:30:00Z",
                "2025-06-01T00:45:00Z",
                "2025-06-01T01:00:00Z",
            ],
        ),
        ("none", []),
    ],
)
async def test_resume_catches_up_from_the_watermark(
    harness: Harness, catch_up: str, fired: list[str]
) -> None:
    """On resume, ticks missed while suspended follow catchUp from the watermark."""
    await seed_watermark(harness.state, START)
    await harness.start(rule_yaml(suspend=True, catchUp=catch_up))
    await harness.at(START + timedelta(minutes=61))
    await harness.reload(rule_yaml(suspend=False, catchUp=catch_up))
    assert harness.sink.scheduled() == ids(*fired)
    assert await harness.watermark() == "2025-06-01T01:00:00Z"


# --- failures and restarts ---------------------------------------------------------------


async def test_temporary_error_retries_and_holds_the_watermark(harness: Harness) -> None:
    """A tick that cannot be submitted is retried with backoff; the watermark waits for it."""
    await seed_watermark(harness.state, START)
    await harness.start(rule_yaml(), backoff_initial=5.0)
    harness.sink.fail_next = 2
    await harness.at(START + timedelta(minutes=15))
    assert (harness.sink.scheduled(), await harness.watermark()) == ([], "2025-06-01T00:00:00Z")
    await harness.at(START + timedelta(minutes=15, seconds=5))  # first retry fails too
    assert harness.sink.scheduled() == []
    await harness.at(START + timedelta(minutes=15, seconds=15))  # second retry, after 10 s
    assert harness.sink.scheduled() == ids("2025-06-01T00:15:00Z")
    assert await harness.watermark() == "2025-06-01T00:15:00Z"


class StalledState:
    """A state store whose writes never finish: the process dies before the watermark."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.writes = 0

    async def get(self, key: str) -> Any:
        return await self.inner.get(key)

    async def update(self, key: str, fn: Any) -> Any:
        self.writes += 1
        await asyncio.Event().wait()

    async def put(self, key: str, value: Any) -> None:
        await self.update(key, lambda _: value)

    async def close(self) -> None:
        await self.inner.close()


async def test_restart_in_the_middle_of_a_tick_creates_one_workflow(harness: Harness) -> None:
    """A crash after the Workflow but before the watermark re-fires the tick: AlreadyExists."""
    await seed_watermark(harness.state, START)
    real_state = harness.state
    harness.state = StalledState(real_state)
    await harness.start(rule_yaml())
    await harness.clock.advance(15 * 60)
    await until(lambda: harness.state.writes == 1, "the watermark write")
    assert harness.task is not None
    harness.task.cancel()  # the process dies mid-tick
    await asyncio.gather(harness.task, return_exceptions=True)
    harness.source = harness.task = None
    harness.state = real_state
    await harness.start(rule_yaml())  # the restarted daemon
    files = list((harness.tmp / "workflows" / "data").glob("*.yaml"))
    assert len(files) == 1
    assert harness.sink.scheduled() == ids("2025-06-01T00:15:00Z")  # the first run's create
    assert await harness.watermark() == "2025-06-01T00:15:00Z"


async def test_two_replicas_create_one_workflow_per_tick(harness: Harness) -> None:
    """Two sources firing the same tick against one sink create one Workflow."""
    await seed_watermark(harness.state, START)
    await harness.start(rule_yaml())
    other = CronSource(harness.context(harness.load(rule_yaml())), wall_check=3600.0)
    other_task = asyncio.create_task(other.run())
    try:
        await harness.idle(4)  # two rule tasks, two wall-clock watches
        await harness.clock.advance(15 * 60 + 1)
        await harness.idle(4)
        files = list((harness.tmp / "workflows" / "data").glob("*.yaml"))
        assert len(files) == 1
    finally:
        await other.stop(DEADLINE)
        await other_task


# --- wall-clock steps ----------------------------------------------------------------------

EVERY_5S = ["*/5 * * * * *"]


def at_seconds(*seconds: int) -> list[str]:
    """The event ids of ticks at these seconds after START."""
    return ids(*(format_time(START + timedelta(seconds=s)) for s in seconds))


async def test_back_step_then_return_fires_the_next_tick_promptly(harness: Harness) -> None:
    """After the wall clock steps back 60 s and returns 10 s later, the due tick fires at once."""
    await seed_watermark(harness.state, START)
    await harness.start(rule_yaml(schedules=EVERY_5S), wall_check=1.0)
    await harness.at(START + timedelta(seconds=12))
    assert harness.sink.scheduled() == at_seconds(5, 10)
    harness.clock.step_wall(-60)  # wall: 23:59:12
    await harness.at(START - timedelta(seconds=38))  # ten seconds pass on the stepped clock
    assert harness.sink.scheduled() == at_seconds(5, 10)
    harness.clock.step_wall(60)  # wall: 00:00:22, true time again
    await harness.at(START + timedelta(seconds=23))  # one look at the wall clock later
    # 00:00:15 and 00:00:20 are reached 8 s and 3 s late, within the 10 s grace: both fire.
    assert harness.sink.scheduled() == at_seconds(5, 10, 15, 20)
    await harness.at(START + timedelta(seconds=25))
    assert harness.sink.scheduled() == at_seconds(5, 10, 15, 20, 25)


async def test_back_step_never_fires_a_tick_twice(harness: Harness) -> None:
    """While the wall clock re-passes ticks already fired, none fires again."""
    await seed_watermark(harness.state, START)
    await harness.start(rule_yaml(schedules=EVERY_5S), wall_check=1.0)
    await harness.at(START + timedelta(seconds=12))
    harness.clock.step_wall(-60)
    await harness.at(START + timedelta(seconds=12))  # a minute later, the wall reads 00:00:12
    assert harness.sink.scheduled() == at_seconds(5, 10)
    await harness.at(START + timedelta(seconds=15))
    assert harness.sink.scheduled() == at_seconds(5, 10, 15)
    assert await harness.watermark() == "2025-06-01T00:00:15Z"


@pytest.mark.parametrize(
    ("cron", "fired", "missed"),
    [
        ({"catchUp": "latest"}, ["2025-06-01T03:00:00Z"], 11),
        (
            {"catchUp": "all", "maxCatchUp": 3},
            ["2025-06-01T02:30:00Z", "2025-06-01T02:45:00Z", "2025-06-01T03:00:00Z"],
            9,
        ),
        ({"catchUp": "none"}, [], 12),
    ],
)
async def test_forward_step_applies_catch_up_at_once(
    harness: Harness, cron: dict[str, Any], fired: list[str], missed: int
) -> None:
    """A forward step of the wall clock fires what catchUp says at the next look."""
    await seed_watermark(harness.state, START)
    await harness.start(rule_yaml(**cron), wall_check=1.0)
    await harness.at(START + timedelta(minutes=1))
    harness.clock.step_wall(3 * 3600)  # NTP fixes a clock that was 3 h behind: 03:01:00
    await harness.at(START + timedelta(hours=3, minutes=1, seconds=1))
    assert harness.sink.scheduled() == ids(*fired)
    assert harness.skipped("tick", "missed") == missed
    assert await harness.watermark() == "2025-06-01T03:00:00Z"


MINUTE = timedelta(minutes=1)


def latest_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    moves=st.lists(
        st.tuples(
            st.integers(min_value=-7200, max_value=7200),  # wall-clock step, seconds
            st.integers(min_value=10, max_value=300),  # then this much time passes, seconds
        ),
        min_size=1,
        max_size=6,
    )
)
async def test_steps_either_way_keep_ticks_once_and_current(moves: list[tuple[int, int]]) -> None:
    """Under any steps, ticks fire in order, once each, and the latest due tick has fired."""
    with tempfile.TemporaryDirectory() as tmp:
        state = await FileStateStore.open(Path(tmp) / "state.json")
        harness = Harness(Path(tmp), RecordingSink(LocalSink(Path(tmp) / "workflows")), state)
        await seed_watermark(state, START)
        await harness.start(rule_yaml(schedules=["* * * * *"]), wall_check=10.0)
        watermark = START
        try:
            for step, passing in moves:
                harness.clock.step_wall(step)
                await harness.at(harness.clock.now() + timedelta(seconds=passing))
                watermark = max(watermark, latest_minute(harness.clock.now()))
                fired = harness.sink.scheduled()
                assert fired == sorted(set(fired))
                assert await harness.watermark() == format_time(watermark)
                assert not fired or fired[-1] == f"tick@{format_time(watermark)}"
        finally:
            await harness.stop()
            await harness.sink.close()


# --- state stores ------------------------------------------------------------------------


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(namespaces=["default", "data"]) as emulator:
        yield emulator


@pytest.fixture
async def kube_sink(kube: KubeEmulator) -> AsyncIterator[KubernetesSink]:
    sink = await KubernetesSink.connect(KubernetesOptions(server=kube.url, token="t"))
    yield sink
    await sink.close()


StoreFactory = Callable[[Path, KubernetesSink], Awaitable[StateStore]]


async def file_store(tmp: Path, sink: KubernetesSink) -> StateStore:
    return await FileStateStore.open(tmp / "state.json")


async def configmap_store(tmp: Path, sink: KubernetesSink) -> StateStore:
    return ConfigMapStateStore(sink.api_client, "default", "trigger-state")


@pytest.mark.parametrize("open_store", [file_store, configmap_store], ids=["file", "configmap"])
async def test_watermark_survives_a_restart(
    tmp_path: Path, kube_sink: KubernetesSink, open_store: StoreFactory
) -> None:
    """The watermark is persisted; a restarted source catches up from it."""
    first = Harness(tmp_path, RecordingSink(kube_sink), await open_store(tmp_path, kube_sink))
    await first.start(rule_yaml())  # first seen: watermark = 00:00
    await first.at(START + timedelta(minutes=15))
    await first.stop()
    assert await first.watermark() == "2025-06-01T00:15:00Z"
    second = Harness(tmp_path, RecordingSink(kube_sink), await open_store(tmp_path, kube_sink))
    second.clock = VirtualClock(START + timedelta(minutes=50))  # down for 35 minutes
    await second.start(rule_yaml(catchUp="all"))
    await second.stop()
    assert second.sink.scheduled() == ids("2025-06-01T00:30:00Z", "2025-06-01T00:45:00Z")
    assert await second.watermark() == "2025-06-01T00:45:00Z"


def state_errors(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "trigger_state_errors_total", {"key_kind": "cron", "reason": reason}
    )
    return value or 0.0


@pytest.mark.parametrize(("status", "reason"), [(403, "forbidden"), (413, "too_large")])
async def test_permanent_state_error_is_reported_and_retried(
    tmp_path: Path, kube: KubeEmulator, kube_sink: KubernetesSink, status: int, reason: str
) -> None:
    """A watermark write refused for good is logged once, counted, shown in /status and
    retried with backoff; once the store accepts it, the rule goes on, no tick twice."""
    metrics = Metrics()  # the store counts its failures; the source only reports them
    state = ConfigMapStateStore(kube_sink.api_client, "default", "trigger-state", metrics=metrics)
    sink = RecordingSink(LocalSink(tmp_path / "workflows"))
    harness = Harness(tmp_path, sink, state, metrics=metrics)
    await seed_watermark(state, START)
    await harness.start(rule_yaml())
    refusal = kube.inject(status, count=10**6, method="PUT", path_contains="/trigger-state")
    try:
        with capture_logs() as logs:
            await harness.at(START + timedelta(minutes=31))  # 00:15 fires; 00:30 waits
            refused = 10**6 - refusal.remaining
            assert harness.sink.scheduled() == ids("2025-06-01T00:15:00Z")
            assert await harness.watermark() == "2025-06-01T00:00:00Z"
            assert refused > 5  # retried with backoff all along, not given up
            assert state_errors(harness.metrics, reason) == refused
            reports = [e for e in logs if e["log_level"] == "error"]
            assert [(e["key"], e["reason"]) for e in reports] == [("cron/tick", reason)]
            shown = harness.source._ctx.pipeline.status["tick"].last_error  # type: ignore[union-attr]
            assert shown is not None and "cron/tick" in shown and str(status) in shown
            kube.clear_injections()  # the store accepts writes again
            await harness.at(START + timedelta(minutes=32))
        assert harness.sink.scheduled() == ids("2025-06-01T00:15:00Z", "2025-06-01T00:30:00Z")
        assert await harness.watermark() == "2025-06-01T00:30:00Z"
        assert state_errors(harness.metrics, reason) == refused
        assert harness.source._ctx.pipeline.status["tick"].last_error is None  # type: ignore[union-attr]
    finally:
        await harness.stop()


# --- concurrency policy ------------------------------------------------------------------


def running_workflow(kube: KubeEmulator, name: str, phase: str | None, rule: str = "tick") -> None:
    kube.put_object(
        G,
        V,
        WF,
        {
            "apiVersion": f"{G}/{V}",
            "kind": "Workflow",
            "metadata": {"name": name, "namespace": "data", "labels": {"trigger.dev/rule": rule}},
            "spec": {"workflowTemplateRef": {"name": "report"}},
        },
    )
    if phase is not None:
        kube.set_status(G, V, WF, name, {"phase": phase}, namespace="data")


@pytest.fixture
async def kube_harness(tmp_path: Path, kube_sink: KubernetesSink) -> AsyncIterator[Harness]:
    state = await FileStateStore.open(tmp_path / "state.json")
    made = Harness(tmp_path, RecordingSink(kube_sink), state)
    await seed_watermark(state, START)
    yield made
    await made.stop()
    await made.sink.close()


@pytest.mark.parametrize("phase", ["Running", "Pending", None])
async def test_forbid_skips_while_a_workflow_is_active(
    kube: KubeEmulator, kube_harness: Harness, phase: str | None
) -> None:
    """Forbid skips the tick (counted, watermark advanced) while a Workflow is active."""
    running_workflow(kube, "tick-earlier", phase)
    await kube_harness.start(rule_yaml(concurrencyPolicy="Forbid"))
    await kube_harness.at(START + timedelta(minutes=15))
    assert kube_harness.sink.scheduled() == []
    assert kube_harness.skipped("tick", "forbid") == 1
    assert await kube_harness.watermark() == "2025-06-01T00:15:00Z"


async def test_forbid_fires_once_the_workflow_finished(
    kube: KubeEmulator, kube_harness: Harness
) -> None:
    """Forbid fires again once the rule's Workflows are no longer Pending or Running."""
    running_workflow(kube, "tick-earlier", "Running")
    running_workflow(kube, "other-rule", "Running", rule="other")
    await kube_harness.start(rule_yaml(concurrencyPolicy="Forbid"))
    await kube_harness.at(START + timedelta(minutes=15))
    kube.set_status(G, V, WF, "tick-earlier", {"phase": "Succeeded"}, namespace="data")
    await kube_harness.at(START + timedelta(minutes=30))
    assert kube_harness.sink.scheduled() == ids("2025-06-01T00:30:00Z")
    assert len(kube.objects(G, V, WF, namespace="data")) == 3


async def test_replace_stops_active_workflows_then_submits(
    kube: KubeEmulator, kube_harness: Harness
) -> None:
    """Replace sets spec.shutdown=Stop on the rule's active Workflows, then fires."""
    running_workflow(kube, "tick-running", "Running")
    running_workflow(kube, "tick-done", "Failed")
    await kube_harness.start(rule_yaml(concurrencyPolicy="Replace"))
    await kube_harness.at(START + timedelta(minutes=15))
    shutdown = {
        w["metadata"]["name"]: w["spec"].get("shutdown")
        for w in kube.objects(G, V, WF, namespace="data")
    }
    new = kube_harness.sink.created[0]["metadata"]["name"]
    assert shutdown == {"tick-running": "Stop", "tick-done": None, new: None}


async def test_replace_does_not_stop_the_ticks_own_workflow(
    kube: KubeEmulator, kube_harness: Harness
) -> None:
    """A re-fired tick (restart mid-tick) leaves its own running Workflow alone."""
    await kube_harness.start(rule_yaml(concurrencyPolicy="Replace", suspend=True))
    rule = kube_harness.rules.by_name["tick"] if kube_harness.rules else None
    assert rule is not None
    from trigger.decoders.cron import cron_tick
    from trigger.rules.render import render

    own = render(rule, cron_tick("tick", "*/15 * * * *", START + timedelta(minutes=15), "UTC"))
    kube.put_object(G, V, WF, own)
    kube.set_status(G, V, WF, own["metadata"]["name"], {"phase": "Running"}, namespace="data")
    await kube_harness.at(START + timedelta(minutes=16))
    await kube_harness.reload(rule_yaml(concurrencyPolicy="Replace"))
    stored = kube.get_object(G, V, WF, own["metadata"]["name"], namespace="data")
    assert stored is not None
    assert stored["spec"].get("shutdown") is None
    assert await kube_harness.watermark() == "2025-06-01T00:15:00Z"


async def test_forbid_with_a_sink_that_cannot_list_is_refused(tmp_path: Path) -> None:
    """Forbid or Replace with the stdout sink is a clear error at start."""
    harness = Harness(tmp_path, StdoutSink(), await FileStateStore.open(tmp_path / "s.json"))
    rules = harness.load(rule_yaml(concurrencyPolicy="Forbid"))
    with pytest.raises(ConfigError, match=r"concurrencyPolicy Forbid or Replace.*stdout"):
        CronSource(harness.context(rules))


def test_kind_is_a_leader_only_singleton() -> None:
    """The cron source runs only on the leader and only when a cron rule exists."""
    from trigger.sources.cron import KIND

    assert KIND.singleton is True


# --- the daemon ----------------------------------------------------------------------------


def test_daemon_fires_an_every_second_rule(tmp_path: Path) -> None:
    """`trigger run` fires a per-second rule, one Workflow per tick, named per tick."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "cron.yaml").write_text(
        textwrap.dedent(rule_yaml("every-second", schedules=["* * * * * *"]))
    )
    with running(tmp_path, rules) as daemon:
        wait_for(lambda: len(daemon.workflow_files()) >= 3, what="three ticks")
    workflows = [yaml.safe_load(p.read_text()) for p in daemon.workflow_files()]
    event_ids = [w["metadata"]["annotations"]["trigger.dev/event-id"] for w in workflows]
    assert all(e.startswith("every-second@") and e.endswith("Z") for e in event_ids)
    assert len(set(event_ids)) == len(workflows)
    names = {p.stem for p in daemon.workflow_files()}
    assert len(names) == len(workflows)
