"""What CronWorkflows and CronJobs share: schedules and their policies → `source.cron`.

Both run on robfig/cron-like 5-field schedules with the same three concurrency policies.
They differ in what they do with missed runs: a CronWorkflow with no
`startingDeadlineSeconds` (or 0) runs none; a CronJob with none runs the latest. trigger
says it with `catchUp` and `startingDeadline`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from trigger.rules.convert.result import Conversion, Origin, seconds_text

POLICIES: Final = ("Allow", "Forbid", "Replace")
# Argo sets {{workflow.scheduledTime}} only on Workflows its cron controller creates; a
# converted template gets it as a parameter the rule fills from the tick.
_SCHEDULED: Final = re.compile(r"\{\{\s*workflow\.scheduledTime\s*\}\}")
SCHEDULED_PARAMETER: Final = "scheduledTime"


def schedules_of(spec: dict[str, Any], out: Conversion, origin: Origin) -> list[str]:
    """`schedules` (Argo ≥ 3.6) and the older single `schedule`, in that order."""
    found: list[str] = []
    listed = spec.get("schedules")
    if isinstance(listed, list):
        found.extend(str(s) for s in listed)
    single = spec.get("schedule")
    if isinstance(single, str) and single.strip():
        found.append(single.strip())  # one schedule: a comma belongs to a field (`0,30`)
    kept: list[str] = []
    for index, schedule in enumerate(found):
        if schedule.startswith(("@every", "CRON_TZ=", "TZ=")):
            out.note(
                origin,
                f"spec.schedules[{index}]",
                "dropped",
                f"{schedule!r}: trigger schedules are cron fields or @hourly/@daily/@weekly/"
                "@monthly/@yearly; write the interval as cron fields and the zone in timezone",
            )
            continue
        kept.append(schedule)
    return kept


def cron_source(
    spec: dict[str, Any],
    schedules: list[str],
    out: Conversion,
    origin: Origin,
    *,
    timezone_key: str,
    missed_default: str,
) -> dict[str, Any]:
    """The `source.cron` block; `missed_default` is `catchUp` when no deadline is set."""
    cron: dict[str, Any] = {"schedules": schedules}
    zone = spec.get(timezone_key)
    if zone:
        cron["timezone"] = str(zone)
    else:
        out.note(
            origin,
            f"spec.{timezone_key}",
            "changed",
            "not set: the original ran in its controller's local time zone; the rule runs in "
            "UTC (set source.cron.timezone if the controller did not run in UTC)",
        )
    deadline = spec.get("startingDeadlineSeconds")
    if isinstance(deadline, int) and deadline > 0:
        cron["startingDeadline"] = seconds_text(deadline)
        cron["catchUp"] = "latest"
    else:  # a deadline of 0 lets no late run start, in either
        cron["catchUp"] = "none" if deadline == 0 else missed_default
    policy = spec.get("concurrencyPolicy")
    if policy in POLICIES:
        cron["concurrencyPolicy"] = policy
    elif policy is not None:
        out.note(origin, "spec.concurrencyPolicy", "dropped", f"unknown policy {policy!r}")
    if spec.get("suspend") is True:
        cron["suspend"] = True
    return cron


def uses_scheduled_time(spec: Any) -> bool:
    return "workflow.scheduledTime" in json.dumps(spec)


def with_scheduled_parameter(spec: dict[str, Any]) -> dict[str, Any]:
    """The workflow spec with `{{workflow.scheduledTime}}` read from a parameter."""
    text = _SCHEDULED.sub("{{workflow.parameters." + SCHEDULED_PARAMETER + "}}", json.dumps(spec))
    rewritten: dict[str, Any] = json.loads(text)
    arguments = rewritten.setdefault("arguments", {})
    parameters = arguments.setdefault("parameters", [])
    if not any(p.get("name") == SCHEDULED_PARAMETER for p in parameters):
        parameters.append({"name": SCHEDULED_PARAMETER})
    return rewritten
