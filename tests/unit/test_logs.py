"""The daemon's log formats: JSON lines that always parse, console text, and how to pick one.

Each case configures logging in a fresh interpreter: structlog's configuration is
process-wide and loggers cache it.
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

LIBRARY_TRACEBACK = """
import logging
from trigger.daemon import logs
logs.configure("info", {fmt!r})
try:
    raise ValueError("boom")
except ValueError:
    logging.getLogger("aiokafka.consumer").exception("fetch failed")
logging.getLogger("aiokafka.consumer").info("chatter")
"""


def stderr_of(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stderr


def test_a_library_traceback_is_one_json_line() -> None:
    """A library's error with a traceback is one JSON line; the traceback is its `exception` field."""
    lines = stderr_of(LIBRARY_TRACEBACK.format(fmt="json")).splitlines()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["event"] == "fetch failed"
    assert record["level"] == "error" and record["logger"] == "aiokafka.consumer"
    assert "ValueError: boom" in record["exception"]


def test_console_format_is_text() -> None:
    """`console` renders the same record as text, not JSON."""
    text = stderr_of(LIBRARY_TRACEBACK.format(fmt="console"))
    assert "fetch failed" in text and "ValueError: boom" in text
    assert not text.lstrip().startswith("{")


def test_log_format_flag_wins_over_the_environment(tmp_path: Path) -> None:
    """`trigger run --log-format console` logs text even with TRIGGER_LOG__FORMAT=json."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.yaml").write_text("apiVersion: trigger/v1\nkind: Rule\nmetadata: {}\n")
    command = [sys.executable, "-m", "trigger.cli", "run", "--rules", str(rules)]
    env = {"TRIGGER_LOG__FORMAT": "json", "PATH": "/usr/bin:/bin"}
    for extra, is_json in (([], True), (["--log-format", "console"], False)):
        result = subprocess.run(
            [*command, *extra],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=tmp_path,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        first = result.stderr.splitlines()[0]
        assert first.startswith("{") == is_json, first
        assert "invalid rule" in first


class _Clock:
    """A clock the test sets by hand (the filter only reads `monotonic`)."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def monotonic(self) -> float:
        return self.now_s


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=30.0),
            st.sampled_from(["aiokafka", "aiokafka.consumer.fetcher"]),
            st.sampled_from(["Failed fetch messages from %s: %s", "Unable to update metadata"]),
        ),
        max_size=60,
    )
)
def test_library_repeats_pass_once_per_interval_and_say_what_they_left_out(
    steps: list[tuple[float, str, str]],
) -> None:
    """Whatever the lines and their timing: the first of each (logger, message) passes,
    the next passes only LOG_EVERY after the last that passed, and the lines that pass
    account, with their `not_logged_since_last`, for every line before them."""
    from trigger.core.lograte import LOG_EVERY, LogRate
    from trigger.daemon.logs import Repeats

    clock = _Clock()
    repeats = Repeats(LogRate(clock))  # type: ignore[arg-type]
    passed: dict[tuple[str, str], list[tuple[float, int]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for gap, name, msg in steps:
        clock.now_s += gap
        record = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, ("a", "b"), None)
        key = (name, msg)
        seen[key] = seen.get(key, 0) + 1
        if repeats.filter(record):
            passed.setdefault(key, []).append(
                (clock.now_s, getattr(record, "not_logged_since_last", 0))
            )
    for key, lines in passed.items():
        times = [t for t, _ in lines]
        assert all(b - a >= LOG_EVERY for a, b in itertools.pairwise(times))
        assert lines[0][1] == 0
        assert len(lines) + sum(left for _, left in lines) <= seen[key]
    assert set(passed) == set(seen)


def test_a_left_out_count_is_a_field_of_the_json_line() -> None:
    """The next library line after held-back repeats carries `not_logged_since_last`."""
    code = """
import logging
from trigger.daemon import logs
class Clock:
    t = 0.0
    def monotonic(self): return self.t
clock = Clock()
logs.configure("info", "json", clock)
log = logging.getLogger("aiokafka")
for _ in range(3):
    log.error("Unable connect to node with id %s", 111)
clock.t = 10.0
log.error("Unable connect to node with id %s", 112)
"""
    lines = [json.loads(line) for line in stderr_of(code).splitlines()]
    assert [(e["event"], e.get("not_logged_since_last")) for e in lines] == [
        ("Unable connect to node with id 111", None),
        ("Unable connect to node with id 112", 2),
    ]
    assert {e["logger"] for e in lines} == {"aiokafka"}
