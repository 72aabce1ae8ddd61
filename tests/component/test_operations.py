"""The operator's guide (docs/operations.md) and its files, run as written.

Every `helm` and `trigger` command in the guide's shell blocks runs here: `helm` through the
Helm SDK of the chart tests (`helm_python`; install and upgrade render offline as
`helm template` does, lint lints), `trigger` as a subprocess from the repository root. A
command that needs a cluster or an account (kubectl, docker, curl, helm test/history/
rollback) is listed as such; any other command fails the test until it is classified.
The example alert rules (docs/alerts.yaml) must parse as PromQL and name only metrics the
daemon exports, with labels they have.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from trigger.core.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "operations.md"
ALERTS = REPO / "docs" / "alerts.yaml"
PRODUCTION_VALUES = REPO / "docs" / "values-production.yaml"
ECI_RULE = REPO / "docs" / "examples" / "ingest-csv-eci.yaml"
CHART = REPO / "charts" / "trigger"

# Commands that need a live cluster, registry or account: shown, not run.
NEEDS_A_CLUSTER = {"kubectl", "docker", "curl", "helm test", "helm history", "helm rollback"}
# The Secret the guide creates, as the pods see it (trigger-secrets through extraEnvFrom).
SECRET_ENV = {"KAFKA_PASSWORD": "x", "EVENTBRIDGE_TOKEN": "x", "GITHUB_WEBHOOK_SECRET": "x"}
# Labels Prometheus adds when it scrapes (target and Kubernetes discovery labels).
SCRAPE_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container"}


def guide_commands() -> list[str]:
    """Each command line of the guide's ```sh blocks, continuation lines joined."""
    blocks = re.findall(r"^```sh\n(.*?)^```", GUIDE.read_text(), flags=re.S | re.M)
    return [
        line.strip()
        for block in blocks
        for line in block.replace("\\\n", " ").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def split(command: str) -> tuple[dict[str, str], list[str]]:
    """(environment assignments, argv) of one command line, its trailing comment dropped."""
    words = shlex.split(command, comments=True)
    env = {}
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


def kind(command: str) -> str:
    _, argv = split(command)
    two = " ".join(argv[:2])
    if argv[0] in NEEDS_A_CLUSTER or two in NEEDS_A_CLUSTER:
        return "needs a cluster"
    if argv[0] == "trigger" or two in {
        "helm template",
        "helm install",
        "helm upgrade",
        "helm lint",
    }:
        return "runs"
    return "unclassified"


RUNNABLE = [c for c in guide_commands() if kind(c) == "runs"]


def deep_merge(into: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


def helm_command(helm: Any, argv: list[str]) -> None:
    """Run `helm template|install|upgrade|lint` offline with the flags the guide uses."""
    action, args = argv[1], argv[2:]
    positional: list[str] = []
    values: dict[str, Any] = {}
    namespace, strict = "default", False
    parsers = {
        "--set": helm.parse_set_string,
        "--set-string": helm.parse_set_string_values,
        "--set-file": helm.parse_set_file,
    }
    while args:
        arg = args.pop(0)
        if arg in {"-n", "--namespace"}:
            namespace = args.pop(0)
        elif arg in {"-f", "--values"}:
            deep_merge(values, yaml.safe_load((REPO / args.pop(0)).read_text()))
        elif arg in parsers:
            deep_merge(values, parsers[arg](args.pop(0)))
        elif arg == "--strict":
            strict = True
        elif arg in {"--wait", "--atomic"}:
            pass
        elif arg == "--timeout":
            args.pop(0)
        else:
            assert not arg.startswith("-"), f"flag {arg} is not understood by this test"
            positional.append(arg)
    if action == "lint":
        (chart,) = positional
        report = helm.lint(REPO / chart, values, strict=strict, namespace=namespace)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["errors"] == [] and problems == [], report
        return
    release, chart = positional
    manifests = helm.Chart.load(REPO / chart).render(
        values,
        name=release,
        namespace=namespace,
        is_install=action != "upgrade",
        is_upgrade=action == "upgrade",
    )
    kinds = {
        doc["kind"]
        for path, text in manifests.items()
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    }
    assert {"Deployment", "Service", "ConfigMap"} <= kinds


def trigger(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trigger.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def helm() -> Any:
    try:
        import helm_python
    except ImportError as exc:
        pytest.skip(f"no Helm: the PyPI package helm-python-sdk is not installed ({exc})")
    helm_python.disable_logging()
    return helm_python


# --- The guide ---------------------------------------------------------------------------


def test_readme_links_the_guide_at_its_top() -> None:
    """The README's opening section (before its first `##`) links the operator's guide."""
    top = (REPO / "README.md").read_text().split("\n## ", 1)[0]
    assert "(docs/operations.md)" in top


def test_guide_links_resolve() -> None:
    """Every relative link of the guide names a file that exists."""
    targets = re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", GUIDE.read_text())
    assert targets
    missing = [t for t in targets if not (GUIDE.parent / t).exists()]
    assert missing == []


def test_every_guide_command_is_run_or_needs_a_cluster() -> None:
    """Each command in the guide is either run by this module or needs a live cluster."""
    commands = guide_commands()
    assert [c for c in commands if kind(c) == "unclassified"] == []
    assert len(RUNNABLE) >= 8, RUNNABLE


@pytest.mark.parametrize("command", RUNNABLE)
def test_guide_command_runs_as_written(helm: Any, command: str) -> None:
    """The guide's `helm` and `trigger` commands succeed as written, from the repository."""
    env, argv = split(command)
    if argv[0] == "helm":
        helm_command(helm, argv)
        return
    result = trigger(*argv[1:], env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_values_pass_strict_mode_with_the_secret(helm: Any, tmp_path: Path) -> None:
    """The shipped rules, under the settings the chart renders from the guide's values file,
    pass `validate --strict` with the guide's Secret present, and without its webhook secret
    fail naming the rule that would be idle: a pod would exit 1, not serve nothing."""
    values = yaml.safe_load(PRODUCTION_VALUES.read_text())
    manifests = helm.Chart.load(CHART).render(values, name="trigger", namespace="workflows")
    config = yaml.safe_load(manifests["trigger/templates/configmap.yaml"])["data"]["config.yaml"]
    assert yaml.safe_load(config)["strict"] is True
    (tmp_path / "config.yaml").write_text(config)
    args = ("validate", "rules/", "--config", str(tmp_path / "config.yaml"))
    ok = trigger(*args, env=SECRET_ENV)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().endswith("9 active, 0 idle")
    without = {**SECRET_ENV}
    del without["GITHUB_WEBHOOK_SECRET"]
    environ = {k: v for k, v in os.environ.items() if k != "GITHUB_WEBHOOK_SECRET"}
    refused = subprocess.run(
        [sys.executable, "-m", "trigger.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**environ, **without},
        check=False,
    )
    assert refused.returncode == 1
    assert "rule deploy-on-push: idle: webhook secret unavailable" in refused.stdout


def test_production_values_grant_what_the_shipped_rules_need() -> None:
    """The guide's values grant Workflows in every namespace the shipped rules create them in,
    and watch finished Workflows where the chain rules look (RBAC refuses anything else)."""
    from trigger.rules.loader import load_rules

    values = yaml.safe_load(PRODUCTION_VALUES.read_text())
    rules = load_rules([REPO / "rules"]).rules
    assert {r.workflow.namespace for r in rules} <= set(values["workflowNamespaces"])
    chains = [r.document.spec.source.workflow for r in rules if r.kind == "workflow"]
    assert chains
    watched = set(values["workflowSource"]["namespaces"])
    assert all(c is not None and (c.namespace in watched or "*" in watched) for c in chains)


def test_eci_rule_puts_pod_metadata_on_the_workflow() -> None:
    """The guide's ECI rule renders a Workflow whose spec carries the overlay's podMetadata
    (ECI label and sizing annotations) beside trigger's template reference and arguments."""
    result = trigger(
        "match",
        "--rules",
        str(ECI_RULE),
        "-o",
        "json",
        "trigger/examples/events/eventbridge-put-csv.json",
    )
    assert result.returncode == 0, result.stderr
    (workflow,) = [json.loads(line) for line in result.stdout.splitlines()]
    spec = workflow["spec"]
    assert spec["podMetadata"] == {
        "labels": {"alibabacloud.com/eci": "true"},
        "annotations": {
            "k8s.aliyun.com/eci-use-specs": "2-4Gi",
            "k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo",
        },
    }
    assert spec["workflowTemplateRef"] == {"name": "ingest"}
    assert spec["serviceAccountName"] == "ingest"
    assert {p["name"] for p in spec["arguments"]["parameters"]} == {"input", "day", "table"}
    assert workflow["metadata"]["labels"]["team"] == "data"


# --- Alerts ------------------------------------------------------------------------------


def exported() -> dict[str, set[str]]:
    """Every series name the daemon exports, with the labels it carries."""
    names: dict[str, set[str]] = {}
    for collector in Metrics().registry._collector_to_names:  # every registered metric
        labels = set(getattr(collector, "_labelnames", ()))
        for family in collector.describe():
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",),
            }[family.type]
            for suffix in suffixes:
                names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def test_alert_rules_are_complete() -> None:
    """Each alert has a unique name, an expression, a severity, a summary and a description."""
    rules = alert_rules()
    assert len(rules) >= 10
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_expression_parses_and_names_exported_metrics(rule: dict[str, Any]) -> None:
    """The alert's PromQL parses, and every metric it selects is one the daemon exports,
    matched only on labels that metric has (or that the scrape adds)."""
    import promql_parser

    expression = promql_parser.parse(rule["expr"])
    series = exported()
    selected: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            selected.append(node)

    promql_parser.walk(expression, visit)
    assert selected, rule["expr"]
    for selector in selected:
        assert selector.name in series, f"{selector.name} is not exported by trigger"
        matched = {m.name for m in selector.matchers.matchers}
        assert matched <= series[selector.name] | SCRAPE_LABELS, (selector.name, matched)


def test_guide_lists_every_alert() -> None:
    """The guide's alert table names each alert of docs/alerts.yaml."""
    guide = GUIDE.read_text()
    assert [r["alert"] for r in alert_rules() if f"`{r['alert']}`" not in guide] == []
