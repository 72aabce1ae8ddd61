"""Cron fire-time arithmetic: tables around DST transitions, merging, catch-up windows.

The expected times are written by hand from each zone's published transitions, not
computed: fixed-time schedules fire once per wall time (a skipped time at the end of the
gap, a repeated one at its first occurrence), the others at every real matching instant.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from trigger.rules.cronmath import (
    fires,
    next_fire_times,
    parse_start,
    recent_fires,
)
from trigger.rules.schedules import ScheduleError, compile_schedule

QUARTERS_BERLIN_FALL = [
    "2025-10-26T02:00:00+02:00",
    "2025-10-26T02:15:00+02:00",
    "2025-10-26T02:30:00+02:00",
    "2025-10-26T02:45:00+02:00",
    "2025-10-26T02:00:00+01:00",
    "2025-10-26T02:15:00+01:00",
    "2025-10-26T02:30:00+01:00",
    "2025-10-26T02:45:00+01:00",
    "2025-10-26T03:00:00+01:00",
]

QUARTERS_NEW_YORK_FALL = [
    "2025-11-02T01:00:00-04:00",
    "2025-11-02T01:15:00-04:00",
    "2025-11-02T01:30:00-04:00",
    "2025-11-02T01:45:00-04:00",
    "2025-11-02T01:00:00-05:00",
    "2025-11-02T01:15:00-05:00",
    "2025-11-02T01:30:00-05:00",
    "2025-11-02T01:45:00-05:00",
    "2025-11-02T02:00:00-05:00",
]

QUARTERS_SYDNEY_BACK = [
    "2025-04-06T02:00:00+11:00",
    "2025-04-06T02:15:00+11:00",
    "2025-04-06T02:30:00+11:00",
    "2025-04-06T02:45:00+11:00",
    "2025-04-06T02:00:00+10:00",
    "2025-04-06T02:15:00+10:00",
    "2025-04-06T02:30:00+10:00",
    "2025-04-06T02:45:00+10:00",
    "2025-04-06T03:00:00+10:00",
]

# (zone, schedule, after, expected fire times)
DST_TABLE = [
    # Europe/Berlin: 2025-03-30 02:00 CET -> 03:00 CEST
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2025-03-29T00:00:00+01:00",
        ["2025-03-29T02:30:00+01:00", "2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"],
    ),
    (
        "Europe/Berlin",
        "0 2 * * *",
        "2025-03-29T00:00:00+01:00",
        ["2025-03-29T02:00:00+01:00", "2025-03-30T03:00:00+02:00", "2025-03-31T02:00:00+02:00"],
    ),
    (
        "Europe/Berlin",
        "0 * * * *",
        "2025-03-30T00:00:00+01:00",
        ["2025-03-30T01:00:00+01:00", "2025-03-30T03:00:00+02:00", "2025-03-30T04:00:00+02:00"],
    ),
    (
        "Europe/Berlin",
        "*/15 * * * *",
        "2025-03-30T01:30:00+01:00",
        ["2025-03-30T01:45:00+01:00", "2025-03-30T03:00:00+02:00", "2025-03-30T03:15:00+02:00"],
    ),
    # Europe/Berlin: 2025-10-26 03:00 CEST -> 02:00 CET
    (
        "Europe/Berlin",
        "30 2 * * *",
        "2025-10-25T00:00:00+02:00",
        ["2025-10-25T02:30:00+02:00", "2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"],
    ),
    (
        "Europe/Berlin",
        "0 2 * * *",
        "2025-10-25T00:00:00+02:00",
        ["2025-10-25T02:00:00+02:00", "2025-10-26T02:00:00+02:00", "2025-10-27T02:00:00+01:00"],
    ),
    (
        "Europe/Berlin",
        "0 * * * *",
        "2025-10-26T00:30:00+02:00",
        [
            "2025-10-26T01:00:00+02:00",
            "2025-10-26T02:00:00+02:00",
            "2025-10-26T02:00:00+01:00",
            "2025-10-26T03:00:00+01:00",
            "2025-10-26T04:00:00+01:00",
        ],
    ),
    ("Europe/Berlin", "*/15 * * * *", "2025-10-26T01:50:00+02:00", QUARTERS_BERLIN_FALL),
    # America/New_York: 2025-03-09 02:00 EST -> 03:00 EDT
    (
        "America/New_York",
        "30 2 * * *",
        "2025-03-08T00:00:00-05:00",
        ["2025-03-08T02:30:00-05:00", "2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00"],
    ),
    (
        "America/New_York",
        "0 2 * * *",
        "2025-03-08T00:00:00-05:00",
        ["2025-03-08T02:00:00-05:00", "2025-03-09T03:00:00-04:00", "2025-03-10T02:00:00-04:00"],
    ),
    (
        "America/New_York",
        "0 * * * *",
        "2025-03-09T00:30:00-05:00",
        ["2025-03-09T01:00:00-05:00", "2025-03-09T03:00:00-04:00", "2025-03-09T04:00:00-04:00"],
    ),
    (
        "America/New_York",
        "*/15 * * * *",
        "2025-03-09T01:30:00-05:00",
        ["2025-03-09T01:45:00-05:00", "2025-03-09T03:00:00-04:00", "2025-03-09T03:15:00-04:00"],
    ),
    # America/New_York: 2025-11-02 02:00 EDT -> 01:00 EST (01:xx twice, 02:xx once)
    (
        "America/New_York",
        "30 2 * * *",
        "2025-11-01T00:00:00-04:00",
        ["2025-11-01T02:30:00-04:00", "2025-11-02T02:30:00-05:00", "2025-11-03T02:30:00-05:00"],
    ),
    (
        "America/New_York",
        "0 2 * * *",
        "2025-11-01T00:00:00-04:00",
        ["2025-11-01T02:00:00-04:00", "2025-11-02T02:00:00-05:00", "2025-11-03T02:00:00-05:00"],
    ),
    (
        "America/New_York",
        "30 1 * * *",
        "2025-11-01T00:00:00-04:00",
        ["2025-11-01T01:30:00-04:00", "2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"],
    ),
    (
        "America/New_York",
        "0 * * * *",
        "2025-11-02T00:30:00-04:00",
        [
            "2025-11-02T01:00:00-04:00",
            "2025-11-02T01:00:00-05:00",
            "2025-11-02T02:00:00-05:00",
            "2025-11-02T03:00:00-05:00",
        ],
    ),
    ("America/New_York", "*/15 * * * *", "2025-11-02T00:50:00-04:00", QUARTERS_NEW_YORK_FALL),
    # Australia/Sydney: 2025-04-06 03:00 AEDT -> 02:00 AEST
    (
        "Australia/Sydney",
        "30 2 * * *",
        "2025-04-05T00:00:00+11:00",
        ["2025-04-05T02:30:00+11:00", "2025-04-06T02:30:00+11:00", "2025-04-07T02:30:00+10:00"],
    ),
    (
        "Australia/Sydney",
        "0 2 * * *",
        "2025-04-05T00:00:00+11:00",
        ["2025-04-05T02:00:00+11:00", "2025-04-06T02:00:00+11:00", "2025-04-07T02:00:00+10:00"],
    ),
    (
        "Australia/Sydney",
        "0 * * * *",
        "2025-04-06T00:30:00+11:00",
        [
            "2025-04-06T01:00:00+11:00",
            "2025-04-06T02:00:00+11:00",
            "2025-04-06T02:00:00+10:00",
            "2025-04-06T03:00:00+10:00",
        ],
    ),
    ("Australia/Sydney", "*/15 * * * *", "2025-04-06T01:50:00+11:00", QUARTERS_SYDNEY_BACK),
    # Australia/Sydney: 2025-10-05 02:00 AEST -> 03:00 AEDT
    (
        "Australia/Sydney",
        "30 2 * * *",
        "2025-10-04T00:00:00+10:00",
        ["2025-10-04T02:30:00+10:00", "2025-10-05T03:00:00+11:00", "2025-10-06T02:30:00+11:00"],
    ),
    (
        "Australia/Sydney",
        "0 2 * * *",
        "2025-10-04T00:00:00+10:00",
        ["2025-10-04T02:00:00+10:00", "2025-10-05T03:00:00+11:00", "2025-10-06T02:00:00+11:00"],
    ),
    (
        "Australia/Sydney",
        "0 * * * *",
        "2025-10-05T00:30:00+10:00",
        ["2025-10-05T01:00:00+10:00", "2025-10-05T03:00:00+11:00", "2025-10-05T04:00:00+11:00"],
    ),
    (
        "Australia/Sydney",
        "*/15 * * * *",
        "2025-10-05T01:30:00+10:00",
        ["2025-10-05T01:45:00+10:00", "2025-10-05T03:00:00+11:00", "2025-10-05T03:15:00+11:00"],
    ),
    # Asia/Shanghai: no DST, the same dates are ordinary
    (
        "Asia/Shanghai",
        "30 2 * * *",
        "2025-03-29T00:00:00+08:00",
        ["2025-03-29T02:30:00+08:00", "2025-03-30T02:30:00+08:00", "2025-03-31T02:30:00+08:00"],
    ),
    (
        "Asia/Shanghai",
        "0 2 * * *",
        "2025-10-25T00:00:00+08:00",
        ["2025-10-25T02:00:00+08:00", "2025-10-26T02:00:00+08:00", "2025-10-27T02:00:00+08:00"],
    ),
    (
        "Asia/Shanghai",
        "0 * * * *",
        "2025-10-26T00:30:00+08:00",
        ["2025-10-26T01:00:00+08:00", "2025-10-26T02:00:00+08:00", "2025-10-26T03:00:00+08:00"],
    ),
    (
        "Asia/Shanghai",
        "*/15 * * * *",
        "2025-03-30T01:50:00+08:00",
        ["2025-03-30T02:00:00+08:00", "2025-03-30T02:15:00+08:00", "2025-03-30T02:30:00+08:00"],
    ),
]


def times(zone: str, texts: list[str], after: str, n: int) -> list[str]:
    schedules = [compile_schedule(t) for t in texts]
    found = next_fire_times(schedules, ZoneInfo(zone), datetime.fromisoformat(after), n)
    return [moment.isoformat() for moment in found]


@pytest.mark.parametrize(("zone", "schedule", "after", "expected"), DST_TABLE)
def test_fire_times_around_dst_transitions(
    zone: str, schedule: str, after: str, expected: list[str]
) -> None:
    """Fire times around each DST transition follow the documented policy."""
    assert times(zone, [schedule], after, len(expected)) == expected


@pytest.mark.parametrize(("zone", "schedule", "after", "expected"), DST_TABLE)
def test_fire_times_are_strictly_increasing_instants(
    zone: str, schedule: str, after: str, expected: list[str]
) -> None:
    """Fire times never repeat or go back in real time, even through an overlap."""
    found = next_fire_times(
        [compile_schedule(schedule)], ZoneInfo(zone), datetime.fromisoformat(after), 40
    )
    instants = [moment.astimezone(UTC) for moment in found]
    assert instants == sorted(set(instants))


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        # after the first 02:40 CEST: the rest of the first pass, then the whole second one
        (
            "2025-10-26T02:40:00+02:00",
            ["2025-10-26T02:45:00+02:00", "2025-10-26T02:00:00+01:00", "2025-10-26T02:15:00+01:00"],
        ),
        # inside the second pass: only what follows it
        (
            "2025-10-26T02:40:00+01:00",
            ["2025-10-26T02:45:00+01:00", "2025-10-26T03:00:00+01:00", "2025-10-26T03:15:00+01:00"],
        ),
    ],
)
def test_starting_inside_an_overlap(after: str, expected: list[str]) -> None:
    """A start inside a fall-back overlap is read as the real instant it is."""
    assert times("Europe/Berlin", ["*/15 * * * *"], after, 3) == expected


@pytest.mark.parametrize(
    ("zone", "schedules", "after", "expected"),
    [
        # two schedules meeting at the end of the gap fire once
        (
            "Europe/Berlin",
            ["30 2 * * *", "0 3 * * *"],
            "2025-03-29T12:00:00+01:00",
            ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00", "2025-03-31T03:00:00+02:00"],
        ),
        # identical instants from two schedules are one fire
        (
            "UTC",
            ["0 * * * *", "*/30 * * * *"],
            "2025-01-01T00:00:00+00:00",
            ["2025-01-01T00:30:00+00:00", "2025-01-01T01:00:00+00:00", "2025-01-01T01:30:00+00:00"],
        ),
        # a fixed list of hours is a fixed-time schedule: 02:00 fires once in the overlap
        (
            "Europe/Berlin",
            ["0 1,2 * * *"],
            "2025-10-26T00:00:00+02:00",
            ["2025-10-26T01:00:00+02:00", "2025-10-26T02:00:00+02:00", "2025-10-27T01:00:00+01:00"],
        ),
        # a range of hours is not: 02:00 fires at both occurrences
        (
            "Europe/Berlin",
            ["0 1-2 * * *"],
            "2025-10-26T00:00:00+02:00",
            ["2025-10-26T01:00:00+02:00", "2025-10-26T02:00:00+02:00", "2025-10-26T02:00:00+01:00"],
        ),
    ],
)
def test_several_schedules_merge(
    zone: str, schedules: list[str], after: str, expected: list[str]
) -> None:
    """Several schedules merge in time order, one fire per instant."""
    assert times(zone, schedules, after, len(expected)) == expected


@pytest.mark.parametrize(
    ("zone", "schedule", "after", "expected"),
    [
        (
            "UTC",
            "*/20 * * * * *",
            "2025-01-01T00:00:00+00:00",
            ["2025-01-01T00:00:20+00:00", "2025-01-01T00:00:40+00:00", "2025-01-01T00:01:00+00:00"],
        ),
        (
            "UTC",
            "@hourly",
            "2025-01-01T00:00:00+00:00",
            ["2025-01-01T01:00:00+00:00", "2025-01-01T02:00:00+00:00"],
        ),
        # @hourly follows the wall clock: both 02:00s of the overlap fire
        (
            "Europe/Berlin",
            "@hourly",
            "2025-10-26T01:30:00+02:00",
            ["2025-10-26T02:00:00+02:00", "2025-10-26T02:00:00+01:00", "2025-10-26T03:00:00+01:00"],
        ),
        (
            "Europe/Berlin",
            "@daily",
            "2025-03-29T12:00:00+01:00",
            ["2025-03-30T00:00:00+01:00", "2025-03-31T00:00:00+02:00"],
        ),
        # seconds in a skipped minute of a fixed-time schedule collapse to the gap's end
        (
            "Europe/Berlin",
            "*/30 30 2 * * *",
            "2025-03-30T00:00:00+01:00",
            ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00", "2025-03-31T02:30:30+02:00"],
        ),
    ],
)
def test_seconds_and_macros(zone: str, schedule: str, after: str, expected: list[str]) -> None:
    """Six-field schedules (leading seconds) and macros fire as written."""
    assert times(zone, [schedule], after, len(expected)) == expected


def test_after_is_exclusive() -> None:
    """A fire time equal to `after` is not returned again."""
    assert times("UTC", ["0 * * * *"], "2025-01-01T01:00:00+00:00", 1) == [
        "2025-01-01T02:00:00+00:00"
    ]


def test_result_is_in_the_rule_timezone() -> None:
    """Fire times come back aware, in the rule's timezone, whatever zone `after` is in."""
    zone = ZoneInfo("Asia/Shanghai")
    found = next_fire_times(
        [compile_schedule("0 2 * * *")], zone, datetime(2025, 1, 1, tzinfo=UTC), 1
    )
    assert found[0].tzinfo is zone
    assert found[0].isoformat() == "2025-01-02T02:00:00+08:00"


def test_naive_after_is_refused() -> None:
    """A naive `after` is an error, not silently read as some zone."""
    with pytest.raises(ValueError, match="aware"):
        next_fire_times([compile_schedule("0 2 * * *")], UTC, datetime(2025, 1, 1), 1)


def test_fire_names_its_first_schedule() -> None:
    """An instant produced by two schedules is reported with the first in rule order."""
    schedules = [compile_schedule("0 * * * *"), compile_schedule("*/30 * * * *")]
    fire = next(fires(schedules, UTC, datetime(2025, 1, 1, 0, 30, tzinfo=UTC)))
    assert (fire.time.isoformat(), fire.schedule.text) == ("2025-01-01T01:00:00+00:00", "0 * * * *")


@pytest.mark.parametrize(
    ("schedule", "after", "until", "count", "expected", "older"),
    [
        ("0 * * * *", "2025-01-01T00:00:00", "2025-01-01T05:30:00", 1, ["05:00:00"], True),
        (
            "0 * * * *",
            "2025-01-01T00:00:00",
            "2025-01-01T05:30:00",
            3,
            ["03:00:00", "04:00:00", "05:00:00"],
            True,
        ),
        (
            "0 * * * *",
            "2025-01-01T00:00:00",
            "2025-01-01T02:30:00",
            5,
            ["01:00:00", "02:00:00"],
            False,
        ),
        ("0 * * * *", "2025-01-01T05:00:00", "2025-01-01T05:30:00", 1, [], False),
        # the search reaches back years for a yearly schedule
        ("0 0 1 1 *", "2020-06-01T00:00:00", "2025-06-01T00:00:00", 1, ["00:00:00"], True),
        # and stays cheap for a dense one after a long outage
        (
            "* * * * * *",
            "2020-01-01T00:00:00",
            "2025-01-01T00:00:00",
            3,
            ["23:59:58", "23:59:59", "00:00:00"],
            True,
        ),
    ],
)
def test_recent_fires(  # noqa: PLR0917 - one argument per table column
    schedule: str, after: str, until: str, count: int, expected: list[str], older: bool
) -> None:
    """recent_fires returns the last `count` fires of a window and whether older ones exist."""
    recent = recent_fires(
        [compile_schedule(schedule)],
        UTC,
        datetime.fromisoformat(after).replace(tzinfo=UTC),
        datetime.fromisoformat(until).replace(tzinfo=UTC),
        count,
    )
    found = [f.time.strftime("%H:%M:%S") for f in recent.fires]
    assert (found, recent.older) == (expected, older)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-30T01:00", "2025-03-30T01:00:00+01:00"),  # no offset: the rule's zone
        ("2025-03-29T01:00:00+00:00", "2025-03-29T02:00:00+01:00"),
        ("2025-03-29T01:00:00Z", "2025-03-29T02:00:00+01:00"),
        ("1743210000", "2025-03-29T02:00:00+01:00"),  # epoch seconds
    ],
)
def test_parse_start(text: str, expected: str) -> None:
    """--from accepts ISO-8601 (read in the rule's zone without an offset) and epoch seconds."""
    zone = ZoneInfo("Europe/Berlin")
    assert parse_start(text, zone).astimezone(zone).isoformat() == expected


def test_parse_start_refuses_garbage() -> None:
    """An unreadable --from is a ScheduleError."""
    with pytest.raises(ScheduleError):
        parse_start("yesterday", UTC)


def test_every_second_overlap_is_complete() -> None:
    """A per-second schedule fires 2 h of seconds across the 1 h Berlin overlap."""
    after = datetime(2025, 10, 26, 0, 0, tzinfo=UTC) - timedelta(seconds=1)  # 02:00 CEST
    found = next_fire_times(
        [compile_schedule("* * * * * *")], ZoneInfo("Europe/Berlin"), after, 7200
    )
    instants = [moment.astimezone(UTC) for moment in found]
    assert instants[0] == datetime(2025, 10, 26, 0, 0, tzinfo=UTC)
    assert instants[-1] == datetime(2025, 10, 26, 1, 59, 59, tzinfo=UTC)
    assert len(set(instants)) == 7200
