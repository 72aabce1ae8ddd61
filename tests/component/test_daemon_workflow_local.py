"""Chains on the embedded default: the local sink, no cluster, `trigger finish` as the
controller. A webhook creates the first stage; `trigger finish` ends it; the daemon's
`workflow` rules create the next stage or the alert, once, also across a SIGKILL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import WorkflowChecker
from tests.daemon import DaemonProcess, wait_for

RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: load}
spec:
  source: {webhook: {path: /hooks/load}}
  workflow:
    template: load
    generateName: load-
    parameters: {day: "{{ event.body.day }}"}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: report}
spec:
  source: {workflow: {templates: [load], phases: [Succeeded]}}
  workflow:
    template: report
    generateName: report-
    parameters:
      table: "{{ event.outputs.table }}"
      day: "{{ event.parameters.day }}"
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: alert}
spec:
  source: {workflow: {phases: [Failed, Error]}}
  workflow:
    template: alert
    generateName: alert-
    parameters: {failed: "{{ event.name }}", why: "{{ event.message }}"}
"""


def manifests(d: DaemonProcess, prefix: str) -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in d.workflow_files() if p.name.startswith(prefix)]


def finish(d: DaemonProcess, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "trigger.cli", "finish", name, *args]
    command += ["--sink", f"local:{d.workflows_dir}"]
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=d.workdir)


def start_load(d: DaemonProcess, day: str) -> str:
    """POST the webhook that creates a load; its Workflow's name."""
    before = {p.name for p in d.workflow_files()}
    body = f'{{"day": "{day}"}}'.encode()
    assert d.post("/hooks/load", body, {"Content-Type": "application/json"}).status == 200
    (new,) = {p.name for p in d.workflow_files()} - before
    return new.removesuffix(".yaml")


def test_finish_chains_the_next_stage_once(tmp_path: Path, valid_workflow: WorkflowChecker) -> None:
    """`trigger finish` ends a local load: one report with its outputs; a failed load
    fires the alert, not the report; a completion while the daemon is killed still fires
    once after it restarts."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULES)
    d = DaemonProcess(tmp_path, tmp_path / "rules")
    try:
        d.start()
        first = start_load(d, "2025-06-01")
        done = finish(d, first, "--phase", "Succeeded", "-p", "table=sales_0601")
        assert done.returncode == 0, done.stderr
        wait_for(lambda: manifests(d, "report-"), what="the report")
        second = start_load(d, "2025-06-02")
        d.stop()  # SIGKILL
        assert finish(d, second, "--phase", "Failed", "--message", "OOMKilled").returncode == 0
        d.start()
        wait_for(lambda: manifests(d, "alert-"), what="the alert after the restart")
        again = finish(d, first, "--phase", "Failed")
        assert again.returncode == 1 and "finished already" in again.stderr
        (report,) = manifests(d, "report-")
        (alert,) = manifests(d, "alert-")
        parameters = {p["name"]: p["value"] for p in report["spec"]["arguments"]["parameters"]}
        assert parameters == {"table": "sales_0601", "day": "2025-06-01"}
        why = {p["name"]: p["value"] for p in alert["spec"]["arguments"]["parameters"]}
        assert why == {"failed": second, "why": "OOMKilled"}
        valid_workflow(report)
        valid_workflow(alert)
    finally:
        d.stop()


REPO = Path(__file__).resolve().parents[2]


def test_the_three_stage_example_runs_on_the_embedded_default(
    tmp_path: Path, valid_workflow: WorkflowChecker
) -> None:
    """README "Gates", on a laptop: `trigger run` with its defaults (state in ./state/,
    which does not exist yet; local sink) and the shipped rules; the day's 24 files and
    marker posted as EventBridge deliveries fire one nightly load; `trigger finish`
    Succeeded fires one report."""
    d = DaemonProcess(tmp_path, REPO / "rules")
    d.argv = ["--rules", str(REPO / "rules"), "--listen", f"127.0.0.1:{d.port}"]
    batch = (REPO / "trigger" / "examples" / "events" / "oss-day-batch.json").read_bytes()
    try:
        d.start()
        answer = d.post("/oss/eventbridge", batch, {"Content-Type": "application/json"})
        assert answer.status == 200, answer.body
        (load,) = wait_for(lambda: manifests(d, "nightly-load-"), what="the nightly load")
        name = load["metadata"]["name"]
        files = {p["name"]: p["value"] for p in load["spec"]["arguments"]["parameters"]}
        assert len(files["files"].split(",")) == 24, files
        done = finish(d, name, "-n", "data", "--phase", "Succeeded", "-p", "table=sales_0601")
        assert done.returncode == 0, done.stderr
        (report,) = wait_for(lambda: manifests(d, "report-after-load-"), what="the report")
        parameters = {p["name"]: p["value"] for p in report["spec"]["arguments"]["parameters"]}
        assert parameters["table"] == "sales_0601" and parameters["upstream"] == name
        assert (tmp_path / "state").is_dir()
        again = d.post("/oss/eventbridge", batch, {"Content-Type": "application/json"})
        assert again.status == 200, again.body  # answered once each event is recorded
        assert len(manifests(d, "nightly-load-")) == 1
        valid_workflow(load)
        valid_workflow(report)
    finally:
        d.stop()
