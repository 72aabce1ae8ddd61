"""`trigger run` refuses the rules `trigger validate` refuses, with the same problem lines,
and shows the loader's warnings (a rule file with no rules) in its start log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLE_RULES
from tests.daemon import DaemonProcess

TYPO = """\
apiVersion: trigger/v1
kind: Rule
metadata: {name: typo}
spec:
  source: {oss: {bucket: b}}
  filter: {pattern: {sise: [{numeric: [">", 0]}]}}
  workflow: {template: t, parameters: {input: "{{ event.kee }}"}}
"""


def test_run_refuses_what_validate_refuses(tmp_path: Path) -> None:
    """A rule naming fields its source never has: validate and run both exit 1, same lines."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "typo.yaml").write_text(TYPO)
    validate = subprocess.run(
        [sys.executable, "-m", "trigger.cli", "validate", str(rules)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert validate.returncode == 1
    *lines, summary = validate.stdout.splitlines()
    assert summary == "2 problem(s) found"
    assert "filter.pattern.sise: oss events have no field 'sise'; did you mean 'size'?" in lines[0]
    assert "workflow.parameters.input: event.kee: oss events have no field 'kee'" in lines[1]
    daemon = DaemonProcess(tmp_path, rules)
    try:
        daemon.start(ready=False)
        assert daemon.wait() == 1
    finally:
        daemon.stop()
    logged = [e["problem"] for e in daemon.log_events() if e.get("event") == "invalid rule"]
    assert logged == lines


def test_run_warns_about_an_empty_rule_file(tmp_path: Path) -> None:
    """A rule file with no rules is a warning in the start log; the daemon runs the others."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "empty.yaml").write_text("# to be written\n")
    (rules / "cron.yaml").write_text((EXAMPLE_RULES / "cron-nightly.yaml").read_text())
    daemon = DaemonProcess(tmp_path, rules)
    try:
        daemon.start()
    finally:
        daemon.stop()
    warnings = [e for e in daemon.log_events() if e.get("event") == "rule file warning"]
    assert [w["problem"] for w in warnings] == [
        f"{rules / 'empty.yaml'}:1:1: warning: the file holds no rules"
    ]
    assert warnings[0]["level"] == "warning"
