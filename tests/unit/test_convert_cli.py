"""`trigger convert` as a user runs it: files in, rules and a report out, exit codes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.convert_helpers import CONVERT

ARGO_EVENTS = [
    str(CONVERT / "argo-events-eventsource-webhook.yaml"),
    str(CONVERT / "argo-events-sensor-webhook.yaml"),
    str(CONVERT / "argo-events-eventsource-calendar.yaml"),
    str(CONVERT / "argo-events-sensor-multi-dependencies.yaml"),
]


def trigger(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trigger.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_convert_to_a_directory_that_validates(tmp_path: Path) -> None:
    """-o DIR writes rules, templates and REPORT.md; `trigger validate DIR/rules` passes."""
    out = tmp_path / "out"
    result = trigger("convert", *ARGO_EVENTS, str(CONVERT / "k8s-cronjob.yaml"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in (out / "rules").iterdir()) == [
        "hello.yaml",
        "multi-dependencies-multi-dependencies-workflow-trigger.yaml",  # a gate
        "nightly-export.yaml",
        "webhook-webhook-workflow-trigger.yaml",
    ]
    assert len(list((out / "workflowtemplates").iterdir())) == 4
    report = (out / "REPORT.md").read_text()
    assert "## Sensor multi-dependencies" in report
    assert "`spec.triggers[0].template`: " in report  # no conditions: all dependencies
    assert "became one gate rule" in report
    assert (
        "multi-dependencies: spec.triggers[0].template: carried over differently" in result.stderr
    )
    assert result.stderr.rstrip().endswith(f"report in {out / 'REPORT.md'}")
    validated = trigger("validate", str(out / "rules"))
    assert validated.returncode == 0, validated.stdout + validated.stderr


def test_convert_prints_yaml_without_output_dir() -> None:
    """Without -o the templates and rules are one YAML stream on stdout, the report on stderr."""
    result = trigger("convert", str(CONVERT / "argo-cron-when.yaml"))
    assert result.returncode == 0, result.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout)]
    assert kinds == ["WorkflowTemplate", "Rule"]
    assert "CronWorkflow sleep-when: spec.when: not carried over:" in result.stderr


def test_convert_exit_codes(tmp_path: Path) -> None:
    """A missing or non-YAML file, or nothing convertible, exits 1 saying why."""
    missing = trigger("convert", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "nope.yaml" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n")
    assert trigger("convert", str(broken)).returncode == 1
    nothing = trigger("convert", str(CONVERT / "argo-events-sensor-multi-dependencies.yaml"))
    assert nothing.returncode == 1
    assert "0 rule(s)" in nothing.stderr
    assert trigger("convert").returncode == 2  # usage: FILE is required


def test_readme_batch_migration_example_is_what_convert_writes(tmp_path: Path) -> None:
    """README "From a batch system's job…": the right column is convert's rule for the
    fixture's nightly-export CronJob plus the two queue lines, and it loads with its Queue;
    the left column is that CronJob (as far as it is shown)."""
    from trigger.rules.loader import load_rules

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### From a batch system's job, queue and schedule", 1)[1]
    left, right = re.findall(r"```yaml\n(.*?)```", section.split("\n## ", 1)[0], re.S)[:2]
    cronjob = [d for d in yaml.safe_load_all((CONVERT / "k8s-cronjob.yaml").read_text())][1]
    shown = yaml.safe_load(left)
    assert shown["spec"]["schedule"] == cronjob["spec"]["schedule"]
    assert shown["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 2
    source = tmp_path / "nightly-export.yaml"
    source.write_text(yaml.safe_dump(cronjob))
    result = trigger("convert", str(source), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load((tmp_path / "out" / "rules" / "nightly-export.yaml").read_text())
    rule, queue = yaml.safe_load_all(right)
    queued = {k: v for k, v in rule["spec"]["workflow"].items() if k not in ("queue", "priority")}
    assert {**rule, "spec": {**rule["spec"], "workflow": queued}} == written
    (tmp_path / "rules.yaml").write_text(right)
    loaded = load_rules([tmp_path / "rules.yaml"])
    assert loaded.by_name["nightly-export"].name == "nightly-export"
    assert queue["kind"] == "Queue"
