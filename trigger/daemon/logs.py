"""The daemon's log: one line per record, in one of three formats (`log.format`, `--log-format`).

- `json`: one JSON object per line — `event` (the message), `level`, `timestamp` (UTC,
  ISO 8601), `logger` for lines of the libraries, and the line's own fields (`event_id`,
  `rule`, `workflow`, …). A traceback is the `exception` field of its line, never lines of
  its own, so every line of the log parses.
- `console`: the same records as aligned, human-readable text (coloured on a terminal).
- `auto` (the default): `console` when stderr is a terminal, else `json`.

Lines of the libraries the daemon uses (aiohttp, aiokafka, the Kubernetes client) go through
the same renderer, at `warning` and above whatever the daemon's level.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

LogFormat = Literal["auto", "json", "console"]


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler this module installs (and replaces when configured again)."""


def configure(level: str = "info", fmt: LogFormat = "auto") -> None:
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
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
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
