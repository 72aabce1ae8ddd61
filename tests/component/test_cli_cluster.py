"""`trigger fire` and `trigger validate --cluster`, run as subprocesses."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE_RULES, WorkflowChecker
from trigger.testing.kubeapi import KubeEmulator


def trigger(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trigger.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def test_fire_creates_one_workflow_per_call(
    tmp_path: Path, valid_workflow: WorkflowChecker
) -> None:
    """fire prints the new Workflow's name; each call creates a new one with the given values."""
    args = [
        "fire",
        "large-order-check",
        "-p",
        "orderId=A-1",
        "-p",
        "amount=300",
        "-p",
        "customer=c-9",
        "--rules",
        str(EXAMPLE_RULES),
        "--sink",
        f"local:{tmp_path / 'wf'}",
        "--dead-letter",
        f"file:{tmp_path / 'dead.jsonl'}",
    ]
    first, second = trigger(*args, cwd=tmp_path), trigger(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    name = first.stdout.strip()
    assert name.startswith("large-order-check-") and name != second.stdout.strip()
    workflow = yaml.safe_load((tmp_path / "wf" / "risk" / f"{name}.yaml").read_text())
    valid_workflow(workflow)
    assert {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]} == {
        "orderId": "A-1",
        "amount": "300",
        "customer": "c-9",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["fire", "large-order-check", "-p", "orderId=A"],
            "parameters amount, customer are templates",
        ),
        (["fire", "no-such-rule"], "no rule named 'no-such-rule'"),
        (["fire", "large-order-check", "-p", "broken"], "-p expects KEY=VALUE"),
    ],
)
def test_fire_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    """Missing templated parameters, unknown rules and bad -p values exit 2 with a reason."""
    result = trigger(
        *args, "--rules", str(EXAMPLE_RULES), "--sink", f"local:{tmp_path}", cwd=tmp_path
    )
    assert result.returncode == 2
    assert message in result.stderr


RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: ingest}
spec:
  source: {oss: {bucket: b}}
  workflow:
    template: ingest
    namespace: data
    parameters: {input: x, extra: y, mode: weekly}
"""


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(namespaces=["data"]) as emulator:
        yield emulator


async def validate_cluster(tmp_path: Path, kube: KubeEmulator) -> subprocess.CompletedProcess[str]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULE.lstrip())
    kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trigger.cli",
        "validate",
        "--cluster",
        "--kubeconfig",
        str(kubeconfig),
        str(rules),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return subprocess.CompletedProcess([], process.returncode, out.decode(), err.decode())


async def test_validate_cluster_missing_template(tmp_path: Path, kube: KubeEmulator) -> None:
    """A rule whose WorkflowTemplate is not on the cluster fails validation at its line."""
    result = await validate_cluster(tmp_path, kube)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{tmp_path / 'rules.yaml'}:7:15: rule ingest:" in result.stdout
    assert "not found" in result.stdout


async def test_validate_cluster_parameters(tmp_path: Path, kube: KubeEmulator) -> None:
    """Required parameters, undeclared ones (warning) and enum values are checked."""
    kube.put_object(
        "argoproj.io",
        "v1alpha1",
        "workflowtemplates",
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {"name": "ingest", "namespace": "data"},
            "spec": {
                "arguments": {
                    "parameters": [
                        {"name": "input"},
                        {"name": "day"},
                        {"name": "mode", "enum": ["full", "delta"]},
                    ]
                }
            },
        },
    )
    result = await validate_cluster(tmp_path, kube)
    assert result.returncode == 1
    out = result.stdout
    assert "day" in out and "warning: " in out and "extra" in out and "weekly" in out
