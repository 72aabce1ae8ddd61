"""One verdict per rule — active, idle or invalid — the same in `trigger validate`, the start
log, /readyz and /status; strict mode makes idle rules errors."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_RULES
from tests.daemon import DaemonProcess, free_port, wait_for

SHIPPED_IDLE = {"large-order-check", "deploy-on-push"}
LINE = re.compile(r"^(?P<where>\S+:\d+:\d+): rule (?P<rule>\S+): (?P<warning>warning: )?idle: (?P<reason>.*)$")  # fmt: skip
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "TRIGGER_LOG__FORMAT": "json"}


def trigger(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "trigger.cli", *args],
        cwd=cwd,
        env={**CLEAN_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def idle_lines(output: str) -> dict[str, re.Match[str]]:
    return {m["rule"]: m for m in map(LINE.match, output.splitlines()) if m}


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A directory laid out like a fresh clone: `rules/` holds the shipped rules."""
    (tmp_path / "rules").symlink_to(EXAMPLE_RULES, target_is_directory=True)
    return tmp_path


@pytest.fixture
def daemon(clone: Path) -> Iterator[DaemonProcess]:
    port = free_port()
    process = DaemonProcess(clone, clone / "rules", port=port, argv=["--listen", f"127.0.0.1:{port}"])  # fmt: skip
    yield process.start()
    process.stop()


def test_validate_start_log_readyz_and_status_agree(clone: Path, daemon: DaemonProcess) -> None:
    """The shipped rules: the Kafka rule (no cluster) and the GitHub webhook (no secret) are
    idle for the same reason everywhere; every other rule is active everywhere."""
    validated = trigger("validate", cwd=clone)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    lines = idle_lines(validated.stdout)
    assert set(lines) == SHIPPED_IDLE
    assert all(m["warning"] for m in lines.values())
    said = {rule: m["reason"] for rule, m in lines.items()}
    assert "Kafka cluster 'default' is not configured" in said["large-order-check"]
    assert "GITHUB_WEBHOOK_SECRET is not set" in said["deploy-on-push"]
    assert "7 active, 2 idle" in validated.stdout  # the nightly-load gate counts once

    logged = {e["rule"]: e["reason"] for e in daemon.log_events() if e.get("event") == "rule idle"}
    ready = daemon.get("/readyz").json()["rules"]
    status = daemon.get("/status").json()["rules"]
    assert logged == said
    assert ready["idle"] == said
    assert ready["active"] == 7
    assert {name: r["reason"] for name, r in status.items() if r["verdict"] == "idle"} == said
    assert {name for name, r in status.items() if r["verdict"] == "active"} == set(status) - SHIPPED_IDLE  # fmt: skip
    started = next(e for e in daemon.log_events() if e.get("event") == "trigger started")
    assert (started["active"], started["idle"]) == (7, 2)
    gate = status["nightly-load"]
    assert gate["source"] == "gate" and gate["verdict"] == "active"
    assert {n: (m["rule"], m["verdict"]) for n, m in gate["members"].items()} == {
        "hourly": ("nightly-load.hourly", "active"),
        "marker": ("nightly-load.marker", "active"),
    }


def test_readyz_lists_only_sources_with_an_active_rule(daemon: DaemonProcess) -> None:
    """No Kafka rule is active, so /readyz does not report a running Kafka source."""
    ready = daemon.get("/readyz").json()
    assert ready["ready"] is True
    assert "kafka" not in ready["sources"]
    assert ready["sources"].get("cron") is True


def test_validate_strict_makes_idle_rules_errors(clone: Path) -> None:
    """`validate --strict` (or `strict: true`) reports every idle rule as an error, exit 1."""
    for args, env in ((["--strict"], {}), ([], {"TRIGGER_STRICT": "true"})):
        done = trigger("validate", *args, cwd=clone, env=env)
        assert done.returncode == 1, done.stdout
        lines = idle_lines(done.stdout)
        assert set(lines) == SHIPPED_IDLE
        assert not any(m["warning"] for m in lines.values())
        assert "2 problem(s) found" in done.stdout


def test_run_strict_refuses_idle_rules(clone: Path) -> None:
    """`run --strict` exits 1 at start, naming each idle rule and why, before listening."""
    done = trigger("run", "--strict", "--listen", f"127.0.0.1:{free_port()}", cwd=clone)
    assert done.returncode == 1, done.stderr
    logged = [line for line in done.stderr.splitlines() if '"rule idle"' in line]
    assert len(logged) == 2
    assert all('"level": "error"' in line for line in logged)
    assert "large-order-check" in done.stderr and "deploy-on-push" in done.stderr


CRON = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: tick}
spec:
  source:
    cron: {schedules: ["0 2 * * *"]}
  workflow: {template: t, namespace: default}
"""
KAFKA = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: orders}
spec:
  source:
    kafka: {topics: [orders]}
  workflow: {template: t, namespace: default}
"""


def test_strict_reload_refuses_a_rule_that_would_be_idle(tmp_path: Path) -> None:
    """In strict mode a reload that would make a rule idle is refused; the previous rules
    stay active and /readyz and /status say why."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "cron.yaml").write_text(CRON)
    process = DaemonProcess(tmp_path, rules, extra_args=["--strict"])
    try:
        process.start()
        (rules / "kafka.yaml").write_text(KAFKA)
        ready = wait_for(
            lambda: (r := process.get("/readyz").json())["rules"].get("lastReloadError") and r,
            what="the refused reload",
        )
        (problem,) = ready["rules"]["lastReloadError"]
        assert "rule orders: idle: " in problem and "Kafka cluster" in problem
        assert list(process.get("/status").json()["rules"]) == ["tick"]
    finally:
        process.stop()


GATE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: load}
spec:
  gate:
    key: "{{ event.id }}"
    window: 1h
    members:
      files:
        source: {oss: {bucket: b}}
      approval:
        source: {kafka: {topics: [approvals]}}
  workflow: {template: t, namespace: default}
"""


def test_status_shows_a_gate_that_cannot_complete(tmp_path: Path) -> None:
    """A gate whose Kafka member has no cluster: /status and /readyz show the gate once,
    idle because it cannot complete, with each member's own verdict inside."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "gate.yaml").write_text(GATE)
    process = DaemonProcess(tmp_path, rules)
    try:
        process.start()
        ready = process.get("/readyz").json()["rules"]
        status = process.get("/status").json()["rules"]
    finally:
        process.stop()
    assert (ready["count"], ready["active"], list(ready["idle"])) == (1, 0, ["load"])
    assert list(status) == ["load"]
    gate = status["load"]
    assert (gate["source"], gate["verdict"]) == ("gate", "idle")
    assert gate["reason"].startswith("the gate cannot complete: member approval is idle: Kafka cluster")  # fmt: skip
    members = {name: (m["source"], m["verdict"]) for name, m in gate["members"].items()}
    assert members == {"files": ("oss", "active"), "approval": ("kafka", "idle")}
