"""The daemon with the kubernetes sink while the API server fails, and on its defaults."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_EVENTS, EXAMPLE_RULES
from tests.daemon import DaemonProcess, until, wait_for
from trigger.testing.kubeapi import KubeEmulator

SECRET = "hook-secret"
RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: hook}
spec:
  source: {webhook: {path: /hooks/a, auth: {hmacSecretEnv: HOOK_SECRET}}}
  workflow: {template: build, namespace: default}
"""


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(namespaces=["default"]) as emulator:
        yield emulator


async def test_webhook_answers_503_while_the_api_fails(tmp_path: Path, kube: KubeEmulator) -> None:
    """While the API server answers 500, deliveries get 503 + Retry-After; a retry after
    recovery creates exactly one Workflow."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULE)
    env = {
        "HOOK_SECRET": SECRET,
        "KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig")),
        "TRIGGER_SUBMIT__PUSH_DEADLINE": "1s",
        "TRIGGER_SUBMIT__CHECK_TEMPLATES": "false",
        "TRIGGER_LEADER__ENABLED": "false",
    }
    daemon = DaemonProcess(tmp_path, rules, env=env, extra_args=["--sink", "kubernetes"])
    body = json.dumps({"n": 1}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": "sha256="
        + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
    }
    try:
        daemon.start(ready=False)
        await asyncio.to_thread(daemon.wait_ready)
        kube.inject(500, count=1000, method="POST", path_contains="/workflows")
        failing = await asyncio.to_thread(daemon.post, "/hooks/a", body, headers)
        assert failing.status == 503, failing.body
        assert int(failing.headers["Retry-After"]) >= 1
        assert kube.objects("argoproj.io", "v1alpha1", "workflows", "default") == []
        kube.clear_injections()
        ok = await until(
            lambda: daemon.post("/hooks/a", body, headers).status == 200, what="recovery"
        )
        assert ok
        assert len(kube.objects("argoproj.io", "v1alpha1", "workflows", "default")) == 1
    finally:
        daemon.stop()


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_defaults_take_the_readme_curl(tmp_path: Path) -> None:
    """`trigger run` with no configuration in a clone serves the rules in ./rules/ on
    127.0.0.1:8080 and the README's unsigned EventBridge curl makes a manifest appear
    under ./workflows/."""
    if not port_free(8080):
        pytest.skip("127.0.0.1:8080 is taken on this machine")
    (tmp_path / "rules").symlink_to(EXAMPLE_RULES, target_is_directory=True)  # as in a clone
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGER_")}
    log = (tmp_path / "log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "trigger.cli", "run"], cwd=tmp_path, env=env, stdout=log, stderr=log
    )
    daemon = DaemonProcess(tmp_path, tmp_path, port=8080)
    try:
        wait_for(lambda: daemon.get("/readyz").status == 200, what="embedded daemon")
        body = (EXAMPLE_EVENTS / "eventbridge-put-csv.json").read_bytes()
        response = daemon.post("/oss/eventbridge", body, {"Content-Type": "application/json"})
        assert response.status == 200, response.body
        (outcome,) = response.json()["events"][0]["workflows"]
        assert (tmp_path / "workflows" / "data" / f"{outcome['workflow']}.yaml").exists()
        assert "endpoint accepts unauthenticated deliveries" in (tmp_path / "log").read_text()
    finally:
        process.kill()
        process.wait(timeout=30)
