"""The daemon's log formats: JSON lines that always parse, console text, and how to pick one.

Each case configures logging in a fresh interpreter: structlog's configuration is
process-wide and loggers cache it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
