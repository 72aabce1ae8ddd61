"""Cron schedules, parsed and checked once at load.

Accepted: 5 fields (minute hour day-of-month month day-of-week), 6 fields with a leading
seconds field (as Quartz and robfig/cron write them), and the macros `@hourly`, `@daily`,
`@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`. The arithmetic lives in
trigger.rules.cronmath; this module only guarantees that what reaches it is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

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
    """Parse and validate one schedule; raises ScheduleError naming the field that is wrong."""
    stripped = " ".join(text.split())
    expanded = MACROS.get(stripped.lower(), stripped)
    if stripped.startswith("@") and stripped.lower() not in MACROS:
        raise ScheduleError(f"unknown macro {stripped!r}: use one of {', '.join(MACROS)}")
    fields = expanded.split(" ")
    if len(fields) == 6:
        fields = [*fields[1:], fields[0]]  # croniter reads seconds as the last field
    elif len(fields) != 5:
        raise ScheduleError(
            f"schedule {text!r} has {len(fields)} fields: use 5 (minute hour day-of-month "
            "month day-of-week) or 6 with a leading seconds field"
        )
    expression = " ".join(fields)
    if not croniter.is_valid(expression):
        raise ScheduleError(f"{text!r}: {_which_field(fields)}")
    if not _ever_fires(expression):
        # Every field is valid alone, but the days named never occur in the months named.
        raise ScheduleError(
            f"{text!r} never fires: day of month {fields[2]} does not occur in month "
            f"{fields[3]}"
        )
    return Schedule(
        text=text,
        expression=expression,
        has_seconds=len(fields) == 6,
        fixed_time=_fixed(fields[0]) and _fixed(fields[1]) and stripped.lower() != "@hourly",
    )


@dataclass(frozen=True)
class _Field:
    """One cron field: what it is called, its range and its names (JAN-DEC, SUN-SAT)."""

    label: str
    low: int
    high: int
    names: tuple[str, ...] = ()

    def allowed(self) -> str:
        span = f"{self.low}-{self.high}"
        return f"{span} (or {self.names[0]}-{self.names[-1]})" if self.names else span


# In croniter's order (seconds last); users write seconds first.
_FIELDS: Final = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31),
    _Field("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP",
                            "OCT", "NOV", "DEC")),
    _Field("day of week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
    _Field("second", 0, 59),
)  # fmt: skip


def _which_field(fields: list[str]) -> str:
    """The first field croniter refuses on its own, and why; croniter decides validity,
    this only words it."""
    for index, text in enumerate(fields):
        alone = ["*"] * len(fields)
        alone[index] = text
        if croniter.is_valid(" ".join(alone)):
            continue
        field = _FIELDS[index]
        position = (index + 2 if index < 5 else 1) if len(fields) == 6 else index + 1
        where = f"{field.label} (field {position})"
        reason = _why(text, field)
        if reason is None:
            return f"{where} {text} is not valid"
        return f"{where} {reason}" if reason.startswith(f"{text} ") else f"{where} {text}: {reason}"
    return "the fields do not combine into a valid cron expression"


def _why(text: str, field: _Field) -> str | None:
    """What is wrong with one field, when it is one of the usual mistakes."""
    for part in text.split(","):
        base, slash, step = part.partition("/")
        if slash and not step.isdigit():
            return f"{step} is not a step (a whole number)"
        if slash and int(step) < 1:
            return "a step must be at least 1"
        if base in ("*", "?"):
            continue
        for value in base.split("-", 1):
            if value.isdigit() and not field.low <= int(value) <= field.high:
                return f"{value} is outside {field.allowed()}"
            if not value.isdigit() and value.upper() not in field.names:
                names = f" or a name ({field.names[0]}-{field.names[-1]})" if field.names else ""
                return f"{value} is not a number{names}"
    return None


def _ever_fires(expression: str) -> bool:
    """Whether a valid expression matches any moment at all (`0 0 30 2 *` matches none;
    `0 0 29 2 *` fires in leap years)."""
    try:
        croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        return False
    return True


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
