"""Every command finds its rules the same way (--rules, else TRIGGER_RULES, else the config
file's `rules`, else ./rules/), and the daemon's start log says where they came from and
every URL a sender can post to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_EVENTS, EXAMPLE_RULES
from tests.daemon import DaemonProcess, free_port

CLEAN_ENV = {"PATH": "/usr/bin:/bin", "TRIGGER_LOG__FORMAT": "json"}
COMMANDS = {
    "validate": ["validate"],
    "match": ["match", str(EXAMPLE_EVENTS / "cron-tick.json")],
    "schedule": ["schedule", "nightly-report", "-n", "1", "--from", "2025-01-01T00:00:00"],
    "fire": ["fire", "nightly-report", "-p", "day=2025-01-01", "--sink", "stdout"],
    "fire without flags": ["fire", "nightly-report", "-p", "day=2025-01-01"],
    "run": ["run", "--listen", "127.0.0.1:0"],
}


def trigger(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "trigger.cli", *args],
        cwd=cwd,
        env={**CLEAN_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_no_rules_here_is_the_same_error_for_every_command(
    tmp_path: Path, command: list[str]
) -> None:
    """In a directory without ./rules/ and no --rules, every command says so the same way
    (exit 1, pointing at --rules and the bundled examples) instead of guessing."""
    done = trigger(command, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no rules: ./rules/ does not exist" in done.stderr
    assert str(EXAMPLE_RULES) in done.stderr
    assert not (tmp_path / "workflows").exists()


ONE_SHOT = {name: command for name, command in COMMANDS.items() if name != "run"}


@pytest.mark.parametrize("command", ONE_SHOT.values(), ids=ONE_SHOT.keys())
def test_every_command_reads_trigger_rules(tmp_path: Path, command: list[str]) -> None:
    """TRIGGER_RULES names the rules for every command, not only for `run` and `fire` (the
    daemon's start is checked below, with its log)."""
    done = trigger(command, tmp_path, {"TRIGGER_RULES": str(EXAMPLE_RULES)})
    assert done.returncode == 0, done.stdout + done.stderr


def test_start_log_says_where_rules_came_from_and_every_url(tmp_path: Path) -> None:
    """The start log names the rules' origin and paths, and the URL of every receiver:
    EventBridge, MNS and each webhook path, whether it accepts deliveries or not."""
    port = free_port()
    env = {"TRIGGER_RULES": str(EXAMPLE_RULES)}
    daemon = DaemonProcess(tmp_path, EXAMPLE_RULES, port=port, env=env, argv=["--listen", f"127.0.0.1:{port}"])  # fmt: skip
    try:
        daemon.start()
        events = daemon.log_events()
    finally:
        daemon.stop()
    (rules,) = [e for e in events if e.get("event") == "rules loaded"]
    assert rules["origin"] == "TRIGGER_RULES"
    assert rules["paths"] == [str(EXAMPLE_RULES)]
    urls = {e["url"]: e for e in events if "url" in e}
    base = f"http://127.0.0.1:{port}"
    assert {f"{base}/oss/eventbridge", f"{base}/oss/mns", f"{base}/hooks/github"} <= set(urls)
    assert "GITHUB_WEBHOOK_SECRET" in urls[f"{base}/hooks/github"]["reason"]
