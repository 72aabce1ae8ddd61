"""The daemon's log: one line per record, in one of three formats (`log.format`, `--log-format`).

- `json`: one JSON object per line — `event` (the message), `level`, `timestamp` (UTC,
  ISO 8601), `logger` for lines of the libraries, and the line's own fields (`event_id`,
  `rule`, `workflow`, …). A traceback is the `exception` field of its line, never lines of
  its own, so every line of the log parses.
- `console`: the same records as aligned, human-readable text (coloured on a terminal).
- `auto` (the default): `console` when stderr is a terminal, else `json`.

Lines of the libraries the daemon uses (aiohttp, aiokafka, the Kubernetes client) go through
the same renderer, at `warning` and above whatever the daemon's level, each naming its
`logger`. A library repeats itself while something it talks to is away (aiokafka writes
dozens of lines a second while a broker is down), so each kind of library line — one
logger, one message before its arguments are filled in — is written the first time and
then at most once every 10 s, with `not_logged_since_last` saying how many were left out.
The daemon's own lines say what happened once (`kafka brokers unreachable`).
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

from trigger.clock import Clock, SystemClock
from trigger.core.lograte import LogRate

LogFormat = Literal["auto", "json", "console"]


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler this module installs (and replaces when configured again)."""


class Repeats(logging.Filter):
    """Lets through the first of each kind of record, then one every `LogRate` interval,
    marking it with how many it held back (`not_logged_since_last`)."""

    def __init__(self, rate: LogRate) -> None:
        super().__init__()
        self._rate = rate

    def filter(self, record: logging.LogRecord) -> bool:
        quiet = self._rate.due((record.name, str(record.msg)))
        if quiet is None:
            return False
        if quiet:
            record.not_logged_since_last = quiet
        return True


def configure(level: str = "info", fmt: LogFormat = "auto", clock: Clock | None = None) -> None:
    """Configure structlog and the standard logging it feeds (aiokafka, aiohttp)."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = _Handler(sys.stderr)
    handler.addFilter(Repeats(LogRate(clock or SystemClock())))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=("not_logged_since_last",)),
                *shared,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # The libraries' INFO and DEBUG lines are their own chatter; ours are structlog's.
    root.setLevel(max(numeric, logging.WARNING))
