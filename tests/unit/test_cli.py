"""The trigger CLI run as a subprocess: output formats and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_EVENTS, EXAMPLE_RULES, FIXTURES, WorkflowChecker


def trigger(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trigger.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def test_version() -> None:
    """--version prints the program name and version."""
    result = trigger("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("trigger ")


def test_validate_examples() -> None:
    """validate exits 0 on the shipped example rules; the idle ones are warnings."""
    result = trigger("validate", str(EXAMPLE_RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    *warnings, summary = result.stdout.splitlines()
    assert all(": warning: idle: " in line for line in warnings)
    assert summary.startswith("ok: ")


def test_validate_reports_every_problem(tmp_path: Path) -> None:
    """validate exits 1 with one file:line:column: rule NAME: message line per problem."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: trigger/v1\nkind: Rule\nmetadata: {name: broken}\nspec:\n"
        "  source: {oss: {bucket: b}}\n  filter: {expr: 'event.size >'}\n"
        "  workflow: {template: t, parameters: {a: '{{ nope }}'}}\n"
    )
    result = trigger("validate", str(bad))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{bad}:6:18: rule broken: filter.expr: ")
    assert lines[1].startswith(
        f"{bad}:7:43: rule broken: workflow.parameters.a: unknown name(s) nope"
    )
    assert "2 problem(s) found" in lines[2]


def test_match_json_lines_are_valid_workflows(valid_workflow: WorkflowChecker) -> None:
    """match -o json prints one schema-valid Workflow per line for the fixture."""
    result = trigger(
        "match",
        "--rules",
        str(EXAMPLE_RULES),
        "-o",
        "json",
        str(FIXTURES / "oss" / "eventbridge-putobject.json"),
    )
    assert result.returncode == 0, result.stderr
    workflows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [w["metadata"]["labels"]["trigger.dev/rule"] for w in workflows] == ["ingest-csv"]
    for workflow in workflows:
        valid_workflow(workflow)


def test_match_every_example_event(valid_workflow: WorkflowChecker) -> None:
    """Every shipped example event matches at least one example rule."""
    events = sorted(EXAMPLE_EVENTS.iterdir())
    result = trigger("match", "--rules", str(EXAMPLE_RULES), "-o", "json", *map(str, events))
    assert result.returncode == 0, result.stderr
    workflows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(workflows) >= len(events)
    for workflow in workflows:
        valid_workflow(workflow)


def test_match_yaml_output() -> None:
    """match -o yaml prints YAML documents."""
    import yaml

    result = trigger(
        "match", "--rules", str(EXAMPLE_RULES), str(FIXTURES / "kafka" / "record-json.json")
    )
    assert result.returncode == 0, result.stderr
    (doc,) = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert doc["spec"]["workflowTemplateRef"]["name"] == "fraud-check"


def test_match_nothing_is_exit_0(tmp_path: Path) -> None:
    """An event no rule matches prints nothing and exits 0."""
    event = tmp_path / "e.json"
    event.write_text('{"kafka": {"topic": "unknown", "partition": 0, "offset": 1, "value": {}}}')
    result = trigger("match", "--rules", str(EXAMPLE_RULES), str(event))
    assert result.returncode == 0
    assert result.stdout == ""


@pytest.mark.parametrize("content", [None, "{not json", '{"shape": "unknown"}'])
def test_match_unreadable_event_is_exit_1(tmp_path: Path, content: str | None) -> None:
    """A missing, malformed or unrecognised event file exits 1 naming the file."""
    event = tmp_path / "e.json"
    if content is not None:
        event.write_text(content)
    result = trigger("match", "--rules", str(EXAMPLE_RULES), str(event))
    assert result.returncode == 1
    assert str(event) in result.stderr


def test_match_explain_says_why_not(tmp_path: Path) -> None:
    """--explain puts other sources' rules on one line and details a pattern miss."""
    event = tmp_path / "e.json"
    event.write_text(
        '{"kafka": {"topic": "orders", "partition": 0, "offset": 1, "value": {"type": "order.created", "amount": 5, "currency": "CNY"}}}'
    )
    result = trigger("match", "--explain", "--rules", str(EXAMPLE_RULES), str(event))
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "event orders/0/1: 8 rules are for other sources (cron: nightly-report; oss: "
        "ingest-csv, ingest-orders-json, refresh-partition, nightly-load (gate); "
        "webhook: deploy-on-push; "
        "workflow: report-after-load, alert-on-failure)",
        "event orders/0/1: rule large-order-check: no match: filter.pattern: "
        "event.value.amount is 5, expected numeric >= 100",
    ]


TWO_METHODS = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: on-post}
spec:
  source: {webhook: {path: /hooks/x, methods: [POST]}}
  workflow: {template: created}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: on-put}
spec:
  source: {webhook: {path: /hooks/x, methods: [PUT]}}
  workflow: {template: updated}
"""


@pytest.mark.parametrize(
    ("method", "templates"), [("POST", ["created"]), ("PUT", ["updated"]), ("DELETE", [])]
)
def test_match_webhook_by_method(tmp_path: Path, method: str, templates: list[str]) -> None:
    """`match` on a webhook event file fires only the rules on its path that take its method."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(TWO_METHODS)
    event = tmp_path / "e.json"
    event.write_text(json.dumps({"webhook": {"path": "/hooks/x", "method": method, "body": {}}}))
    result = trigger("match", "-o", "json", "--rules", str(rules), str(event))
    assert result.returncode == 0, result.stderr
    workflows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [w["spec"]["workflowTemplateRef"]["name"] for w in workflows] == templates


def test_match_render_error_is_exit_1(tmp_path: Path) -> None:
    """A template that fails for an event is reported with rule and field, exit 1."""
    event = tmp_path / "e.json"
    event.write_text(
        '{"kafka": {"topic": "orders", "partition": 0, "offset": 1, "value": {"type": "order.created", "amount": 500, "currency": "CNY"}}}'
    )
    result = trigger("match", "--rules", str(EXAMPLE_RULES), str(event))
    assert result.returncode == 1
    assert "rule large-order-check: workflow.parameters.orderId: event orders/0/1" in result.stderr


def test_no_command_prints_help() -> None:
    """trigger without a command prints usage and exits 2."""
    result = trigger()
    assert result.returncode == 2
    assert "usage:" in result.stdout


# --- fire: every problem at once, only the flags that apply (issue 13, item 6) ----------------


def test_fire_reports_every_missing_parameter_at_once(tmp_path: Path) -> None:
    """fire names every templated parameter that needs a value, in one message."""
    result = trigger(
        "fire", "large-order-check", "--rules", str(EXAMPLE_RULES), "--sink", "stdout"
    )
    assert result.returncode == 2
    assert result.stderr == (
        "trigger: error: rule large-order-check: parameters orderId, amount, customer are "
        "templates (they need an event): pass -p orderId=VALUE -p amount=VALUE "
        "-p customer=VALUE\n"
    )


def test_fire_refuses_unknown_parameters(tmp_path: Path) -> None:
    """-p with a name the rule does not have is refused, naming the rule's parameters."""
    result = trigger(
        "fire", "nightly-report", "-p", "day=2025-01-01", "-p", "dya=x", "-p", "zone=y",
        "--rules", str(EXAMPLE_RULES), "--sink", "stdout",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "trigger: error: rule nightly-report has no parameter dya, zone (its parameters: day)\n"
    )


HELP_FLAGS = {
    "run": {"--config", "--rules", "--sink", "--listen", "--state", "--dead-letter",
            "--kafka-bootstrap", "--strict", "--log-format"},
    "validate": {"--rules", "--config", "--listen", "--kafka-bootstrap", "--sink", "--strict",
                 "--cluster", "--kubeconfig", "--context"},
    "match": {"--rules", "-o", "--explain", "--cluster"},
    "fire": {"-p", "--config", "--rules", "--sink", "--dead-letter", "--timeout"},
    "schedule": {"--rules", "--from", "-n"},
    "replay": {"--rule", "--since", "--dry-run", "-o", "--parallel", "--cluster",
               "--kafka-bootstrap", "--config", "--rules", "--sink"},
}  # fmt: skip


@pytest.mark.parametrize(("command", "flags"), HELP_FLAGS.items(), ids=HELP_FLAGS.keys())
def test_help_lists_only_the_flags_that_apply(command: str, flags: set[str]) -> None:
    """Each subcommand's --help lists exactly the flags it uses."""
    import re

    result = trigger(command, "--help")
    assert result.returncode == 0
    options = result.stdout.split("options:", 1)[1]
    shown = set(re.findall(r"^  (-[-\w]+)", options, re.MULTILINE)) - {"-h"}
    assert shown == flags


def test_fire_without_a_cluster_prints_only_its_own_error(tmp_path: Path) -> None:
    """fire --sink kubernetes with no kubeconfig says so in one line, no library output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "TRIGGER_"))}
    result = subprocess.run(
        [sys.executable, "-m", "trigger.cli", "fire", "nightly-report", "-p", "day=x",
         "--rules", str(EXAMPLE_RULES), "--sink", "kubernetes"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**env, "KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == f"trigger: error: no kubeconfig found at {tmp_path / 'none'}\n"


def test_fire_gives_up_on_a_silent_backend_and_shows_its_retries(tmp_path: Path) -> None:
    """fire against an API server that accepts connections and never answers, then one that
    refuses them: each retry is a stderr line, and --timeout ends it with exit 1."""
    import socket

    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    refused = socket.create_server(("127.0.0.1", 0))
    refused_port = refused.getsockname()[1]
    refused.close()
    try:
        for port, seen in ((silent.getsockname()[1], "timed out"), (refused_port, "connect")):
            kubeconfig = tmp_path / f"kubeconfig-{port}"
            kubeconfig.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "e",
                "clusters": [{"name": "e", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "contexts": [{"name": "e", "context": {"cluster": "e", "user": "u"}}],
                "users": [{"name": "u", "user": {}}],
            }))  # fmt: skip
            env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "TRIGGER_"))}
            result = subprocess.run(
                [sys.executable, "-m", "trigger.cli", "fire", "nightly-report", "-p", "day=x",
                 "--rules", str(EXAMPLE_RULES), "--sink", "kubernetes", "--timeout", "3",
                 "--dead-letter", f"file:{tmp_path / 'dead.jsonl'}"],
                capture_output=True, text=True, timeout=120, check=False,
                env={**env, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path),
                     "TRIGGER_KUBERNETES__TIMEOUT": "1"},
            )  # fmt: skip
            assert result.returncode == 1, result.stderr
            lines = result.stderr.splitlines()
            assert lines[-1].startswith("trigger: error: no Workflow created within 3 s"), lines
            assert lines[0].startswith("trigger: attempt 1 failed ("), lines
            assert seen in lines[0].lower(), lines
            assert result.stdout == ""
    finally:
        silent.close()


def test_validate_warns_about_an_empty_rule_file(tmp_path: Path) -> None:
    """validate names a rule file with no rules in a warning line and still exits 0."""
    (tmp_path / "empty.yaml").write_text("# to be written\n")
    result = trigger("validate", str(tmp_path))
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == [
        f"{tmp_path / 'empty.yaml'}:1:1: warning: the file holds no rules",
        "ok: 0 rule(s) in 1 file(s): 0 active, 0 idle",
    ]
