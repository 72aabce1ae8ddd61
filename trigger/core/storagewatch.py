"""The daemon's observer of files it cannot write: a metric always, a log line sometimes.

A full disk fails every write until space is freed — thousands of Workflows, each retried
— so the log says it once per (file kind, errno) every `LOG_EVERY` seconds, with how many
failures it did not repeat, while `trigger_storage_errors_total{target,error}` counts them
all.
"""

from __future__ import annotations

from typing import Final

import structlog

from trigger.clock import Clock
from trigger.core.metrics import Metrics
from trigger.errors import StorageError
from trigger.submit.storage import errno_name

log = structlog.get_logger("trigger.storage")
LOG_EVERY: Final = 10.0  # seconds between log lines for one (target, error)


class StorageWatch:
    """Counts every failed write and logs one line per kind of failure per interval."""

    def __init__(self, metrics: Metrics, clock: Clock) -> None:
        self._metrics = metrics
        self._clock = clock
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}

    def __call__(self, error: StorageError) -> None:
        name = errno_name(error.error)
        self._metrics.child(self._metrics.storage_errors, error.target, name).inc()
        key = (error.target, name)
        now = self._clock.monotonic()
        last, quiet = self._logged.get(key, (None, 0))
        if last is not None and now - last < LOG_EVERY:
            self._logged[key] = (last, quiet + 1)
            return
        self._logged[key] = (now, 0)
        log.error(
            "cannot write: nothing is acknowledged until it can",
            target=error.target,
            error=name,
            detail=str(error),
            not_logged_since_last=quiet,
        )
