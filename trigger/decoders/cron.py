"""Cron ticks as Events: built by the scheduler, or read from a `{"cron": {...}}` event file.

A tick's id is `rule@scheduledTime`, so the same tick fired twice (a restart, a second
replica) names the same Workflow and is created once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from trigger.decoders._common import as_mapping, at, opt_str, req_mapping, req_str, required
from trigger.events import Event, cron_event_id, format_time, parse_time


def cron_tick(
    rule: str,
    schedule: str,
    scheduled: datetime,
    timezone: str,
    fired: datetime | None = None,
) -> Event:
    """The Event for `rule`'s tick scheduled at `scheduled`, fired at `fired`. A tick the
    daemon did not fire (an event file for `trigger match`) is taken as fired on time: a
    null `fireTime` would fail every template that renders it."""
    moment = parse_time(scheduled, where="scheduledTime")
    text = format_time(moment)  # once: a backfill makes thousands of ticks
    fields: dict[str, Any] = {
        "rule": rule,
        "schedule": schedule,
        "scheduledTime": text,
        "timezone": timezone,
        "fireTime": text if fired is None else format_time(fired),
    }
    return Event(
        id=cron_event_id(rule, moment),
        source="cron",
        type="cron.tick",
        subject=rule,
        time=moment,
        data=fields,
        fields=fields,
    )


def decode_cron_file(obj: Mapping[str, Any]) -> Event:
    """Decode `{"cron": {rule, scheduledTime, schedule?, timezone?, fireTime?}}`.

    `schedule` defaults to "", `timezone` to "UTC" and `fireTime` to `scheduledTime`;
    times are parsed leniently.
    """
    where = "cron"
    spec = req_mapping(as_mapping(obj, "$"), where, "")
    fired = spec.get("fireTime")
    return cron_tick(
        rule=req_str(spec, "rule", where),
        schedule=opt_str(spec, "schedule", where) or "",
        scheduled=parse_time(
            required(spec, "scheduledTime", where), where=at(where, "scheduledTime")
        ),
        timezone=opt_str(spec, "timezone", where) or "UTC",
        fired=None if fired is None else parse_time(fired, where=at(where, "fireTime")),
    )
