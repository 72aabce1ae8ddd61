"""The benchmark command: its quick form runs every part and writes a valid table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench.__main__ import PARTS

ROOT = Path(__file__).resolve().parents[2]
# The default test run checks the command and its table, cheaply: the parts that need no
# Kafka broker, smaller still than --quick. `pytest --long` runs the quick form as it is,
# every part (about a minute here).
TINY = ["--senders", "4", "--each", "2", "--parts", "routing,load,push"]


def test_quick_form_prints_and_writes_the_table(tmp_path: Path, long_run: bool) -> None:
    """`python -m tests.bench --quick` runs its parts, prints the table and writes it as JSON."""
    out = tmp_path / "summary.json"
    command = [sys.executable, "-m", "tests.bench", "--quick", "--out", str(out)]
    done = subprocess.run(
        command + ([] if long_run else TINY),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["quick"] is True
    parts = set(PARTS) if long_run else set(TINY[TINY.index("--parts") + 1].split(","))
    assert {row["part"] for row in summary["rows"]} == parts
    for row in summary["rows"]:
        assert row["figure"] and row["measured"] and row["target"]
        assert row["met"] in (True, False, None)
        assert row["figure"] in done.stdout
    assert {"cores", "load_average"} <= set(summary["load_before"])
    assert "figure" in done.stdout and "met?" in done.stdout
