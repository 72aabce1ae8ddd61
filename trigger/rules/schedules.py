"""Cron schedules, parsed and checked once at load.

Accepted: 5 fields (minute hour day-of-month month day-of-week), 6 fields with a leading
seconds field (as Quartz and robfig/cron write them), and the macros `@hourly`, `@daily`,
`@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`. The arithmetic lives in
trigger.rules.cronmath; this module only guarantees that what reaches it is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class ScheduleError(ValueError):
    """A schedule or timezone that cannot be used."""


@dataclass(frozen=True)
class Schedule:
    """One cron schedule: the text as written and its croniter form (seconds last)."""

    text: str
    expression: str  # croniter's field order: minute hour dom month dow [second]
    has_seconds: bool
    fixed_time: bool  # both minute and hour fields are fixed values: DST policy differs


def compile_schedule(text: str) -> Schedule:
    """Parse and validate one schedule; raises ScheduleError."""
    stripped = " ".join(text.split())
    expanded = MACROS.get(stripped.lower(), stripped)
    if stripped.startswith("@") and stripped.lower() not in MACROS:
        raise ScheduleError(f"unknown macro {stripped!r}: use one of {', '.join(MACROS)}")
    fields = expanded.split(" ")
    if len(fields) == 6:
        fields = [*fields[1:], fields[0]]  # croniter reads seconds as the last field
    elif len(fields) != 5:
        raise ScheduleError(
            f"schedule {text!r} has {len(fields)} fields: use 5 (minute hour day month weekday) "
            "or 6 with a leading seconds field"
        )
    expression = " ".join(fields)
    if not croniter.is_valid(expression):
        raise ScheduleError(f"schedule {text!r} is not a valid cron expression")
    return Schedule(
        text=text,
        expression=expression,
        has_seconds=len(fields) == 6,
        fixed_time=_fixed(fields[0]) and _fixed(fields[1]) and stripped.lower() != "@hourly",
    )


def _fixed(field: str) -> bool:
    """A field naming one or several fixed values (`30`, `1,13`), not a range or step."""
    return all(part.isdigit() for part in field.split(","))


def compile_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(
            f"unknown timezone {name!r} (use an IANA name such as Asia/Shanghai)"
        ) from exc
