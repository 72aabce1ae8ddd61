"""`trigger run` under libfaketime with only the wall clock stepped, as NTP or a resumed VM
steps a real machine's clock: ticks resume at once after a step back and its return, a step
forward fires what catchUp says as soon as it is seen, and no tick fires twice.

libfaketime (Debian's `faketime` package, installed by `.ci/run`) is preloaded into the
daemon with `FAKETIME_TIMESTAMP_FILE` holding the offset, re-read on every call
(`FAKETIME_NO_CACHE`), and `DONT_FAKE_MONOTONIC`, so the monotonic clock runs on untouched.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import DaemonProcess, running, wait_for

LIBRARY_PATTERNS = (
    "/usr/lib/*/faketime/libfaketimeMT.so.1",  # Debian and Ubuntu, per architecture
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",  # built from source
)
STEPPED = "wall clock stepped; cron rules look at it again"


def faketime_library() -> str | None:
    for pattern in LIBRARY_PATTERNS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


LIBRARY = faketime_library()
pytestmark = pytest.mark.skipif(
    LIBRARY is None,
    reason="libfaketimeMT.so.1 not found: install Debian's faketime package (.ci/run does)",
)


def rule(name: str, schedule: str, **cron: Any) -> dict[str, Any]:
    return {
        "apiVersion": "trigger/v1",
        "kind": "Rule",
        "metadata": {"name": name},
        "spec": {
            "source": {"cron": {"schedules": [schedule], **cron}},
            "workflow": {
                "template": "report",
                "namespace": "data",
                "generateName": f"{name}-",
                "parameters": {"scheduled": "{{ event.scheduledTime }}"},
            },
        },
    }


RULES = [
    rule("five", "*/5 * * * * *"),  # catchUp latest, the default
    rule("minute-latest", "* * * * *", catchUp="latest"),
    rule("minute-all", "* * * * *", catchUp="all", maxCatchUp=3),
    rule("minute-none", "* * * * *", catchUp="none"),
]


class Offset:
    """The offset file libfaketime reads: seconds added to the daemon's wall clock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds = 0.0
        self.set(0)

    def set(self, seconds: float) -> tuple[datetime, datetime]:
        """Step the daemon's wall clock; return its reading just before and just after."""
        before = datetime.now(UTC) + timedelta(seconds=self.seconds)
        self.path.write_text(f"{seconds:+.3f}\n")
        self.seconds = seconds
        return before, datetime.now(UTC) + timedelta(seconds=seconds)


@pytest.fixture
def offset(tmp_path: Path) -> Offset:
    return Offset(tmp_path / "faketime-offset")


@pytest.fixture
def daemon(tmp_path: Path, offset: Offset) -> Iterator[DaemonProcess]:
    assert LIBRARY is not None
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "cron.yaml").write_text(yaml.safe_dump_all(RULES))
    env = {
        "LD_PRELOAD": LIBRARY,
        "FAKETIME_TIMESTAMP_FILE": str(offset.path),
        "FAKETIME_NO_CACHE": "1",
        "DONT_FAKE_MONOTONIC": "1",
    }
    with running(tmp_path, rules, env=env) as process:
        yield process


def ticks(daemon: DaemonProcess, name: str) -> list[datetime]:
    """The scheduled times of a rule's Workflows, ascending."""
    found = []
    for path in daemon.workflow_files():
        event_id = yaml.safe_load(path.read_text())["metadata"]["annotations"][
            "trigger.dev/event-id"
        ]
        rule_name, _, moment = event_id.partition("@")
        if rule_name == name:
            found.append(datetime.fromisoformat(moment.replace("Z", "+00:00")))
    return sorted(found)


def between(daemon: DaemonProcess, name: str, after: datetime, until: datetime) -> list[str]:
    return [t.strftime("%H:%M:%S") for t in ticks(daemon, name) if after < t <= until]


def steps_seen(daemon: DaemonProcess) -> list[float]:
    return [float(e["step"]) for e in daemon.log_events() if e.get("event") == STEPPED]


def metric(daemon: DaemonProcess, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(daemon.get("/metrics").body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += float(sample.value)
    return total


def minute_floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def landing_mid_minute(hours: int) -> float:
    """An offset of about `hours` that puts the daemon's wall clock at ss=30.5, away from
    every tick of the rules, so which ticks the step skipped does not depend on timing:
    :30 and :25 (0.5 and 5.5 s before) are reached within the 10 s grace if the step is
    seen within 4.5 s, :20 (10.5 s before) and the minute's :00 never are."""
    now = datetime.now(UTC).timestamp()
    target = math.floor((now + hours * 3600) / 60) * 60 + 30.5
    return target - now


def test_wall_clock_steps_fire_promptly_and_once(daemon: DaemonProcess, offset: Offset) -> None:
    """Stepped back 60 s and returned, the clock's ticks resume at once; stepped an hour
    ahead, each rule fires per catchUp as soon as the step is seen; no tick fires twice."""
    wait_for(lambda: len(ticks(daemon, "five")) >= 2, what="two ticks on the true clock")

    offset.set(-60)
    wait_for(lambda: [s for s in steps_seen(daemon) if s < -30], what="the step back seen")
    _, returned = offset.set(0)  # back to true time: the ticks of the step are overdue
    wait_for(lambda: [s for s in steps_seen(daemon) if s > 30], what="the return seen")
    wait_for(
        lambda: between(daemon, "five", returned, returned + timedelta(hours=1)),
        what="ticks resuming after the return",
    )

    dropped = metric(daemon, "trigger_cron_ticks_skipped_total", rule="minute-none")
    before, after = offset.set(landing_mid_minute(1))
    wait_for(lambda: [s for s in steps_seen(daemon) if s > 3000], what="the step forward seen")
    wait_for(
        lambda: metric(daemon, "trigger_cron_ticks_skipped_total", rule="minute-none") > dropped,
        what="catchUp none to drop the skipped ticks",
    )
    latest = minute_floor(after)
    wait_for(lambda: len(between(daemon, "minute-all", before, after)) >= 3, what="catch-up")
    wait_for(lambda: between(daemon, "minute-latest", before, after), what="catch-up")
    wait_for(lambda: between(daemon, "five", before, after), what="catch-up")
    expected = {
        # :25 and :30 are reached within 10 s of the landing at :30.5 (the step is seen
        # within a second): on time; :20 and older are missed, and :30 is more recent.
        "five": [(latest + timedelta(seconds=s)).strftime("%H:%M:%S") for s in (25, 30)],
        "minute-latest": [latest.strftime("%H:%M:%S")],
        "minute-all": [(latest - timedelta(minutes=m)).strftime("%H:%M:%S") for m in (2, 1, 0)],
        "minute-none": [],
    }
    assert {name: between(daemon, name, before, after) for name in expected} == expected
    assert metric(daemon, "trigger_workflows_total", outcome="duplicate") == 0
