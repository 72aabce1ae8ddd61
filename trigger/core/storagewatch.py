"""The daemon's observer of files it cannot write: a metric always, a log line sometimes.

A full disk fails every write until space is freed — thousands of Workflows, each retried
— so the log says it once per (file kind, errno) every 10 s (trigger.core.lograte), with how
many failures it did not repeat, while `trigger_storage_errors_total{target,error}` counts
them all.
"""

from __future__ import annotations

import structlog

from trigger.clock import Clock
from trigger.core.lograte import LogRate
from trigger.core.metrics import Metrics
from trigger.errors import StorageError
from trigger.submit.storage import errno_name

log = structlog.get_logger("trigger.storage")


class StorageWatch:
    """Counts every failed write and logs one line per kind of failure per interval."""

    def __init__(self, metrics: Metrics, clock: Clock) -> None:
        self._metrics = metrics
        self._rate = LogRate(clock)

    def __call__(self, error: StorageError) -> None:
        name = errno_name(error.error)
        self._metrics.child(self._metrics.storage_errors, error.target, name).inc()
        quiet = self._rate.due((error.target, name))
        if quiet is None:
            return
        log.error(
            "cannot write: nothing is acknowledged until it can",
            target=error.target,
            error=name,
            detail=str(error),
            not_logged_since_last=quiet,
        )
