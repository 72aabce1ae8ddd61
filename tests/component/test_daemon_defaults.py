"""Every setting is an independent default: a flag or a TRIGGER_* variable changes that
setting and nothing else, and each security choice follows from the facts it is about
(where the daemon listens, what authentication is configured), never from a mode."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_EVENTS, EXAMPLE_RULES
from tests.daemon import DaemonProcess, free_port

README_CURL = EXAMPLE_EVENTS / "eventbridge-put-csv.json"
JSON = {"Content-Type": "application/json"}


def clone(tmp_path: Path) -> Path:
    """A working directory laid out like a fresh clone: `rules/` holds the shipped rules."""
    (tmp_path / "rules").symlink_to(EXAMPLE_RULES, target_is_directory=True)
    return tmp_path


def oss_only(tmp_path: Path) -> Path:
    """A rules directory with only the shipped OSS rules."""
    rules = tmp_path / "oss-rules"
    rules.mkdir(parents=True)
    shutil.copy(EXAMPLE_RULES / "oss-ingest-csv.yaml", rules)
    return rules


def start(workdir: Path, argv: Sequence[str], env: dict[str, str], port: int) -> DaemonProcess:
    return DaemonProcess(workdir, workdir / "rules", port=port, argv=argv, env=env).start()


@pytest.fixture
def stop() -> Iterator[list[DaemonProcess]]:
    daemons: list[DaemonProcess] = []
    yield daemons
    for daemon in daemons:
        daemon.stop()


def warned(daemon: DaemonProcess, event: str) -> list[dict[str, object]]:
    return [e for e in daemon.log_events() if e.get("event") == event]


@pytest.mark.parametrize(
    "case",
    ["TRIGGER_LOG__LEVEL=debug", "--rules rules/", "--listen"],
)
def test_one_setting_changes_nothing_else(
    tmp_path: Path, stop: list[DaemonProcess], case: str
) -> None:
    """With the shipped rules, adding a variable or a flag still starts the daemon, the
    Kafka rule stays idle with a warning, and the README's unsigned curl is accepted."""
    workdir, port = clone(tmp_path), free_port()
    listen = f"127.0.0.1:{port}"
    argv: list[str] = []
    env = {"TRIGGER_LISTEN": listen}
    if case == "TRIGGER_LOG__LEVEL=debug":
        env["TRIGGER_LOG__LEVEL"] = "debug"
    elif case == "--rules rules/":
        argv = ["--rules", "rules/"]
    else:
        argv, env = ["--listen", listen], {}
    daemon = start(workdir, argv, env, port)
    stop.append(daemon)
    reply = daemon.post("/oss/eventbridge", README_CURL.read_bytes(), JSON)
    assert reply.status == 200, reply.body
    (outcome,) = reply.json()["events"][0]["workflows"]
    assert outcome["outcome"] == "created"
    assert (workdir / "workflows" / "data" / f"{outcome['workflow']}.yaml").exists()
    (idle,) = [e for e in warned(daemon, "rule idle") if e["rule"] == "large-order-check"]
    assert "Kafka cluster 'default' is not configured" in str(idle["reason"])
    assert idle["level"] == "warning"


def test_listen_flag_keeps_the_readme_curl_working(
    tmp_path: Path, stop: list[DaemonProcess]
) -> None:
    """`--listen 127.0.0.1:PORT` changes the port only: the README's curl is still accepted,
    unsigned, on a loopback listener with nothing configured (and a warning says so)."""
    port = free_port()
    argv = ["--rules", str(oss_only(tmp_path)), "--listen", f"127.0.0.1:{port}"]
    daemon = start(tmp_path, argv, {}, port)
    stop.append(daemon)
    reply = daemon.post("/oss/eventbridge", README_CURL.read_bytes(), JSON)
    assert reply.status == 200, reply.body
    (warning,) = [e for e in daemon.log_events() if e.get("url", "").endswith("/oss/eventbridge")]
    assert warning["level"] == "warning"
    assert "unauthenticated" in str(warning["event"])


def test_eventbridge_beyond_loopback_requires_authentication(
    tmp_path: Path, stop: list[DaemonProcess]
) -> None:
    """Listening on all interfaces with no token and no signature check, the EventBridge
    receiver refuses every push and the start log says why."""
    port = free_port()
    argv = ["--rules", str(oss_only(tmp_path)), "--listen", f"0.0.0.0:{port}"]
    daemon = start(tmp_path, argv, {}, port)
    stop.append(daemon)
    reply = daemon.post("/oss/eventbridge", README_CURL.read_bytes(), JSON)
    assert reply.status == 401, reply.body
    (refusal,) = [e for e in daemon.log_events() if e.get("url", "").endswith("/oss/eventbridge")]
    assert refusal["level"] == "error"
    assert "beyond loopback" in str(refusal["reason"])


def test_unverified_mns_beyond_loopback_is_refused(
    tmp_path: Path, stop: list[DaemonProcess]
) -> None:
    """With signature checks turned off, MNS pushes are taken on a loopback listener only."""
    body = (EXAMPLE_EVENTS / "mns-push.xml").read_bytes()
    replies = {}
    for host in ("127.0.0.1", "0.0.0.0"):
        port = free_port()
        argv = ["--rules", str(oss_only(tmp_path / host)), "--listen", f"{host}:{port}"]
        env = {"TRIGGER_OSS__PUSH__MNS_VERIFY_SIGNATURE": "false"}
        daemon = start(tmp_path / host, argv, env, port)
        stop.append(daemon)
        replies[host] = daemon.post("/oss/mns", body, {"Content-Type": "text/xml"}).status
    assert replies == {"127.0.0.1": 200, "0.0.0.0": 401}


OPEN_HOOK = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: open-hook}
spec:
  source:
    webhook: {path: /hooks/open}
  workflow: {template: build, namespace: ci}
"""


def test_webhook_without_auth_beyond_loopback_is_idle(
    tmp_path: Path, stop: list[DaemonProcess]
) -> None:
    """A webhook path with no authentication takes deliveries on a loopback listener only;
    beyond loopback it refuses them and its rule is idle, saying why."""
    statuses = {}
    for host in ("127.0.0.1", "0.0.0.0"):
        workdir = tmp_path / host
        (workdir / "hooks").mkdir(parents=True)
        (workdir / "hooks" / "open.yaml").write_text(OPEN_HOOK)
        port = free_port()
        daemon = start(workdir, ["--rules", "hooks", "--listen", f"{host}:{port}"], {}, port)
        stop.append(daemon)
        statuses[host] = daemon.post("/hooks/open", b"{}", JSON).status
        rule = daemon.get("/status").json()["rules"]["open-hook"]
        if host == "0.0.0.0":
            assert rule["verdict"] == "idle"
            assert "beyond loopback" in rule["reason"]
        else:
            assert rule["verdict"] == "active"
    assert statuses == {"127.0.0.1": 200, "0.0.0.0": 401}


def test_sink_flag_leaves_a_forbid_cron_rule_idle_not_a_crash(
    tmp_path: Path, stop: list[DaemonProcess]
) -> None:
    """`--sink stdout` with the shipped rules starts: the nightly cron rule (Forbid needs a
    sink that can list Workflows) is idle, said the same way by validate and the daemon."""
    workdir, port = clone(tmp_path), free_port()
    daemon = start(workdir, ["--sink", "stdout", "--listen", f"127.0.0.1:{port}"], {}, port)
    stop.append(daemon)
    status = daemon.get("/status").json()["rules"]["nightly-report"]
    assert status["verdict"] == "idle"
    assert "concurrencyPolicy Forbid" in status["reason"]
    assert "cron" not in daemon.get("/readyz").json()["sources"]
    validated = subprocess.run(
        [sys.executable, "-m", "trigger.cli", "validate"],
        cwd=workdir,
        env={"PATH": "/usr/bin:/bin", "TRIGGER_SINK": "stdout"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert f"rule nightly-report: warning: idle: {status['reason']}" in validated.stdout
