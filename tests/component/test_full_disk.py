"""A full disk under the local sink and the dead-letter file: 503, never 500, nothing lost.

The daemon runs as a subprocess with its manifests and dead letters on a small tmpfs that
the test mounts (root only) and fills. While it is full, new deliveries get 503 with
Retry-After and nothing is acknowledged; a redelivery of a Workflow already written is
still a duplicate (no space needed); the failures are counted and logged as one
structured line, without a traceback. Once space is back, every delivery ends exactly once.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import DaemonProcess, wait_for
from trigger.core.state import load_state_file
from trigger.errors import ConfigError

SECRET = "disk-secret"
RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: build}
spec:
  source:
    webhook: {path: /hooks/build, auth: {hmacSecretEnv: HOOK_SECRET}}
  workflow:
    template: build
    namespace: ci
    parameters: {repo: "{{ event.body.repo }}"}
  idempotencyKey: "{{ event.body.id }}"
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: broken}
spec:
  source:
    webhook: {path: /hooks/broken, auth: {hmacSecretEnv: HOOK_SECRET}}
  workflow:
    template: build
    namespace: ci
    parameters: {repo: "{{ event.body.missing }}"}
"""


def sign(body: bytes) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"}


def delivery(n: int) -> bytes:
    return json.dumps({"id": f"d-{n}", "repo": f"acme/repo-{n}"}).encode()


@dataclass
class Disk:
    """A small tmpfs, and a filler file that takes what is left of it."""

    path: Path

    @property
    def filler(self) -> Path:
        return self.path / "filler"

    def fill(self) -> None:
        with self.filler.open("ab", buffering=0) as handle:
            for size in (65536, 4096, 1):  # big steps, then whatever is left
                while True:
                    try:
                        handle.write(b"\0" * size)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC
                        break

    def free(self) -> None:
        self.filler.unlink()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "disk"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield Disk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@dataclass
class OnDisk(DaemonProcess):
    """The daemon, with its manifests and dead letters on the small disk."""

    disk: Path | None = None

    @property
    def workflows_dir(self) -> Path:
        assert self.disk is not None
        return self.disk / "workflows"

    @property
    def dead_letters(self) -> Path:
        assert self.disk is not None
        return self.disk / "dead-letters.jsonl"


def metric(d: DaemonProcess, name: str, **labels: str) -> float:
    text = d.get("/metrics").body.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_a_full_disk_answers_503_and_loses_nothing(tmp_path: Path, disk: Disk) -> None:
    """Full: new work 503 + Retry-After, a redelivery of written work still a duplicate,
    a dead letter 503 (not 500), counted and logged without a traceback; freed: each
    delivery ends exactly once."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "hooks.yaml").write_text(RULES)
    env = {"HOOK_SECRET": SECRET, "TRIGGER_SUBMIT__PUSH_DEADLINE": "2s"}
    daemon = OnDisk(tmp_path, rules, env=env, disk=disk.path)
    try:
        daemon.start()
        first = daemon.post("/hooks/build", delivery(1), sign(delivery(1)))
        assert first.status == 200, first.body
        disk.fill()

        again = daemon.post("/hooks/build", delivery(1), sign(delivery(1)))
        assert again.status == 200, again.body
        assert again.json()["events"][0]["workflows"][0]["outcome"] == "duplicate"

        refused = daemon.post("/hooks/build", delivery(2), sign(delivery(2)))
        assert refused.status == 503, refused.body
        assert int(refused.headers["Retry-After"]) > 0

        poison = json.dumps({"id": "p-1"}).encode()
        letter = daemon.post("/hooks/broken", poison, sign(poison))
        assert letter.status == 503, letter.body
        assert int(letter.headers["Retry-After"]) > 0

        assert metric(daemon, "trigger_storage_errors_total", target="local-sink") > 0
        assert metric(daemon, "trigger_storage_errors_total", target="dead-letters") > 0
        log = daemon.log()
        assert "Traceback" not in log
        lines = [e for e in daemon.log_events() if e.get("event", "").startswith("cannot write")]
        assert {e["target"] for e in lines} == {"local-sink", "dead-letters"}
        assert all(e["error"] == "ENOSPC" for e in lines)

        disk.free()
        done = daemon.post("/hooks/build", delivery(2), sign(delivery(2)))
        assert done.status == 200, done.body
        lettered = wait_for(
            lambda: daemon.post("/hooks/broken", poison, sign(poison)).status == 200,
            what="the dead letter to be written",
        )
        assert lettered
        assert daemon.post("/hooks/broken", poison, sign(poison)).status == 200
    finally:
        daemon.stop()
    names = sorted(p.name for p in daemon.workflow_files())
    assert len(names) == 2
    lines = daemon.dead_letters.read_text().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["rule"] == "broken"


CRON_RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: every-second}
spec:
  source: {cron: {schedules: ["* * * * * *"]}}
  workflow: {template: tick, namespace: ci}
"""


def state_of(path: Path) -> dict[str, object]:
    try:
        found: dict[str, object] = load_state_file(path)  # the snapshot and its journal
    except (OSError, ConfigError):
        return {}
    return found


def test_a_full_disk_under_the_state_file_is_counted_and_survived(
    tmp_path: Path, disk: Disk
) -> None:
    """The state file on a full disk: the watermark write fails as one counted, logged
    line (no traceback), no tick fires twice, and once space is back the watermark moves
    on again."""
    rules = tmp_path / "rules"
    rules.mkdir()
    # Twenty rules, so that state writes come fast: a write to the state's journal still
    # succeeds on a full disk while it fits the file's last, partly used page.
    many = [CRON_RULE.replace("every-second}", f"every-second-{n}}}") for n in range(19)]
    (rules / "cron.yaml").write_text("---".join([CRON_RULE, *many]))
    state = disk.path / "state.json"
    daemon = DaemonProcess(tmp_path, rules, extra_args=("--state", f"file:{state}"))
    try:
        daemon.start()
        wait_for(lambda: len(daemon.workflow_files()) >= 2, what="two ticks")
        disk.fill()
        wait_for(
            lambda: metric(daemon, "trigger_storage_errors_total", target="state") > 0,
            what="a refused state write",
        )
        refused_at = len(daemon.workflow_files())
        disk.free()
        watermark_then = state_of(state).get("cron/every-second")
        wait_for(
            lambda: state_of(state).get("cron/every-second") not in (None, watermark_then),
            what="the watermark to move again",
        )
        wait_for(lambda: len(daemon.workflow_files()) > refused_at, what="ticks again")
    finally:
        daemon.stop()
    log = daemon.log()
    assert "Traceback" not in log
    lines = [e for e in daemon.log_events() if e.get("event", "").startswith("cannot write")]
    assert {(e["target"], e["error"]) for e in lines} == {("state", "ENOSPC")}
    names = [p.name for p in daemon.workflow_files()]
    assert len(names) == len(set(names))
