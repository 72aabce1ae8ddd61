"""How often a repeated condition is worth a log line.

A full disk fails every write, a misconfigured sender repeats the same bad delivery, a
scanner sends garbage to the port: each occurrence is counted in a metric, but the log
says it once per kind every `every` seconds, with how many occurrences it left out.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final

from trigger.clock import Clock

LOG_EVERY: Final = 10.0  # seconds between log lines for one kind of condition


class LogRate:
    """The first occurrence of each key is logged, then at most one every `every` seconds."""

    def __init__(self, clock: Clock, every: float = LOG_EVERY) -> None:
        self._clock = clock
        self._every = every
        self._logged: dict[Hashable, tuple[float, int]] = {}

    def due(self, key: Hashable) -> int | None:
        """None: stay quiet this time. Otherwise log now; the number is how many
        occurrences of `key` were left out since its last line."""
        now = self._clock.monotonic()
        last, quiet = self._logged.get(key, (None, 0))
        if last is not None and now - last < self._every:
            self._logged[key] = (last, quiet + 1)
            return None
        self._logged[key] = (now, 0)
        return quiet
