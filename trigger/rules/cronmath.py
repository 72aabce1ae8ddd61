"""Cron fire-time arithmetic with a daylight-saving policy; pure, shared by the source and CLI.

croniter only matches naive wall-clock times here; turning them into real instants is done
with zoneinfo and `fold`, so the DST policy is ours, tested by tables, and the same for
`trigger run` and `trigger schedule`. The policy is the one Vixie cron documents:

- A fixed-time schedule (minute and hour fields both fixed values, `30 2 * * *`,
  `0 1,13 * * *`; `Schedule.fixed_time`) fires once per matching wall-clock time: a time
  that a spring-forward gap skips fires at the first instant after the gap; a time that a
  fall-back overlap repeats fires at its first occurrence only.
- Any other schedule (`*`, `*/n` or a range in the minute or hour field, `@hourly`) follows
  the wall clock: it fires at every real instant whose local time matches, so the repeated
  times of an overlap fire twice and the missing times of a gap do not fire.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from enum import Enum
from itertools import islice
from typing import Final

from croniter import CroniterBadDateError, croniter

from trigger.errors import DecodeError
from trigger.events import parse_time
from trigger.rules.rule import Rule
from trigger.rules.schedules import Schedule, ScheduleError, compile_timezone

DAY: Final = timedelta(days=1)
ONE_SECOND: Final = timedelta(seconds=1)
# Windows looked at, most recent first, when searching backwards for missed ticks.
_WINDOW_FIRST: Final = timedelta(minutes=1)
_WINDOW_GROWTH: Final = 8
_WINDOW_MAX: Final = timedelta(days=366 * 100)


@dataclass(frozen=True, order=True)
class Fire:
    """One fire time (aware, UTC) and the first schedule, in rule order, that produced it."""

    time: datetime
    index: int  # position of `schedule` in the rule's list; orders equal times
    schedule: Schedule


class _Local(Enum):
    UNIQUE = "unique"
    GAP = "gap"  # skipped by a spring-forward transition
    OVERLAP = "overlap"  # repeated by a fall-back transition


def _resolve(local: datetime, tz: tzinfo) -> tuple[_Local, datetime, datetime]:
    """Classify a naive wall time; return (kind, earlier instant, later instant) in UTC.

    zoneinfo reads fold=0 with the offset before a transition and fold=1 with the one
    after: in an overlap fold=0 is the first occurrence; in a gap the two readings straddle
    the transition instant, fold=1 landing before it.
    """
    first = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return _Local.UNIQUE, first, first
    if first < second:
        return _Local.OVERLAP, first, second
    return _Local.GAP, second, first


def _transition(low: datetime, high: datetime, tz: tzinfo) -> datetime:
    """The first instant in (low, high] whose UTC offset is the one in force at `high`."""
    target = high.astimezone(tz).utcoffset()
    lo, hi = 0, int((high - low).total_seconds())
    while hi - lo > 1:  # invariant: the offset at low+lo differs, the one at low+hi is target
        mid = (lo + hi) // 2
        if (low + timedelta(seconds=mid)).astimezone(tz).utcoffset() == target:
            hi = mid
        else:
            lo = mid
    return low + timedelta(seconds=hi)


def _wall_times(expression: str, start: datetime) -> Iterator[datetime]:
    """Naive wall times matching `expression`, from `start` (inclusive), ascending."""
    times = croniter(expression, start - ONE_SECOND)
    while True:
        try:
            found: datetime = times.get_next(datetime)
        except CroniterBadDateError:  # matches no date at all (`0 0 30 2 *`)
            return
        yield found


def _instants(schedule: Schedule, tz: tzinfo, start: datetime) -> Iterator[datetime]:
    """Real instants (UTC, non-decreasing) at which `schedule` fires, from wall time `start`."""
    walls = _wall_times(schedule.expression, start)
    held: datetime | None = None
    while True:
        local = held if held is not None else next(walls, None)
        held = None
        if local is None:
            return
        kind, early, late = _resolve(local, tz)
        if kind is _Local.UNIQUE or (kind is _Local.OVERLAP and schedule.fixed_time):
            yield early
        elif kind is _Local.GAP:
            if schedule.fixed_time:
                yield _transition(early, late, tz)
        else:
            # Every first occurrence in this overlap comes before every second one.
            firsts, seconds = [early], [late]
            for local in walls:
                kind, early, late = _resolve(local, tz)
                if kind is not _Local.OVERLAP or early >= seconds[0]:
                    held = local
                    break
                firsts.append(early)
                seconds.append(late)
            yield from firsts
            yield from seconds


def _start_wall(after: datetime, tz: tzinfo) -> datetime:
    """A naive wall time early enough that no instant after `after` comes from before it.

    An instant after `after` has a wall time later than `after` + its offset, and that
    offset is at least the smallest one in force within a day of `after`.
    """
    offsets = [(after + delta).astimezone(tz).utcoffset() for delta in (-DAY, timedelta(0), DAY)]
    smallest = min(o for o in offsets if o is not None)
    return (after.astimezone(UTC) + smallest).replace(tzinfo=None)


def _require_aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def fires(schedules: Sequence[Schedule], tz: tzinfo, after: datetime) -> Iterator[Fire]:
    """Every fire of the merged `schedules` strictly after `after`, ascending, one per instant."""
    after = _require_aware(after, "after")
    start = _start_wall(after, tz)
    streams = [
        _tagged(_instants(schedule, tz, start), after, index, schedule)
        for index, schedule in enumerate(schedules)
    ]
    last: datetime | None = None
    for moment, index, schedule in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        if moment != last:
            last = moment
            yield Fire(moment, index, schedule)


def _tagged(
    instants: Iterator[datetime], after: datetime, index: int, schedule: Schedule
) -> Iterator[tuple[datetime, int, Schedule]]:
    for moment in instants:
        if moment > after:
            yield moment, index, schedule


def next_fire_times(
    schedules: Sequence[Schedule], tz: tzinfo, after: datetime, n: int
) -> list[datetime]:
    """The next `n` fire times strictly after `after`, aware, in the rule's timezone `tz`."""
    return [fire.time.astimezone(tz) for fire in islice(fires(schedules, tz, after), n)]


def fires_between(
    schedules: Sequence[Schedule], tz: tzinfo, after: datetime, until: datetime
) -> Iterator[Fire]:
    """The fires in (after, until], ascending."""
    until = _require_aware(until, "until")
    for fire in fires(schedules, tz, after):
        if fire.time > until:
            return
        yield fire


@dataclass(frozen=True)
class Recent:
    """The most recent fires of a window and whether older ones were left out."""

    fires: tuple[Fire, ...]
    older: bool  # more fires exist in the window before `fires`


def recent_fires(
    schedules: Sequence[Schedule], tz: tzinfo, after: datetime, until: datetime, count: int
) -> Recent:
    """The last `count` fires in (after, until], oldest first.

    Searches growing windows back from `until`, so a long outage with a dense schedule
    costs about the fires near `until`, not every fire since `after`.
    """
    after, until = _require_aware(after, "after"), _require_aware(until, "until")
    width = _WINDOW_FIRST
    while True:
        start = max(after, until - width)
        found: deque[Fire] = deque(maxlen=count)
        total = 0
        for fire in fires_between(schedules, tz, start, until):
            found.append(fire)
            total += 1
        if total >= count or start == after or width >= _WINDOW_MAX:
            older = total > count or (start > after and _any_between(schedules, tz, after, start))
            return Recent(tuple(found), older)
        width *= _WINDOW_GROWTH


def count_fires(
    schedules: Sequence[Schedule], tz: tzinfo, after: datetime, until: datetime, limit: int
) -> int:
    """How many fires (after, until] holds, counting no further than `limit`."""
    return sum(1 for _ in islice(fires_between(schedules, tz, after, until), limit))


def _any_between(
    schedules: Sequence[Schedule], tz: tzinfo, after: datetime, until: datetime
) -> bool:
    return next(fires_between(schedules, tz, after, until), None) is not None


def parse_start(text: str, tz: tzinfo) -> datetime:
    """A `--from` time: ISO-8601 (a time without offset is read in `tz`), or epoch seconds."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        moment = None
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=tz)
    try:
        return parse_time(text if moment is None else moment, where="--from")
    except DecodeError as exc:
        raise ScheduleError(str(exc)) from exc


def rule_fire_times(
    rule: Rule | None, name: str, start: str | None, n: int, now: datetime
) -> list[str]:
    """`trigger schedule`: rule `name`'s next `n` fire times after `start` (default `now`).

    Each is ISO-8601 with the offset of the rule's timezone; ScheduleError when the rule
    is missing or not a cron rule, or `start` cannot be read.
    """
    if rule is None:
        raise ScheduleError(f"no rule named {name!r}")
    if rule.kind != "cron":
        raise ScheduleError(f"rule {name!r} is a {rule.kind} rule, not a cron rule")
    tz = compile_timezone(rule.cron.timezone)
    after = now if start is None else parse_start(start, tz)
    return format_fire_times(next_fire_times(rule.schedules, tz, after, n))


def format_fire_times(times: Iterable[datetime]) -> list[str]:
    """ISO-8601 with the offset, as `trigger schedule` prints them."""
    return [moment.isoformat() for moment in times]
