"""The README stays honest: every setting is documented, and its examples run as written."""

from __future__ import annotations

import glob
import itertools
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
from pydantic import BaseModel

from tests.conftest import EXAMPLE_EVENTS, EXAMPLE_RULES, REPO
from trigger.core.gatekeeper import GateReplay
from trigger.decoders.detect import decode_file
from trigger.rules.loader import load_rules
from trigger.rules.render import render
from trigger.settings import KafkaCluster, Settings


def fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        if isinstance(info.default, BaseModel):
            names.extend(fields(type(info.default), f"{prefix}{name}."))
        else:
            names.append(prefix + name)
    return names


def test_every_setting_is_in_the_readme() -> None:
    """Each settings field appears in the README's configuration table."""
    readme = (REPO / "README.md").read_text()
    wanted = fields(Settings) + fields(KafkaCluster, "kafka.clusters.NAME.")
    missing = [name for name in wanted if f"| `{name}` |" not in readme]
    assert not missing, missing


def test_readme_opens_with_the_two_commands() -> None:
    """The first code block runs the daemon and then the tests, as CI does."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("```sh", 1)[1].split("```", 1)[0]
    assert "trigger run" in block and "pytest" in block
    assert "pytest -q" in (REPO / ".ci" / "run").read_text()


# --- the README's examples, run as written --------------------------------------------------

TRIGGER = [sys.executable, "-m", "trigger.cli"]
RULE_SOURCES = ("oss", "kafka", "cron", "webhook", "workflow")


def blocks(kind: str) -> list[str]:
    """The README's fenced code blocks of one kind (```console, ```sh, ```yaml)."""
    readme = (REPO / "README.md").read_text()
    return re.findall(rf"^```{kind}\n(.*?)^```$", readme, flags=re.MULTILINE | re.DOTALL)


def console_examples() -> list[tuple[str, str]]:
    """Each `$ trigger ...` command of a ```console block, with the output shown after it."""
    examples = []
    for block in blocks("console"):
        for chunk in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
            command, _, output = chunk.partition("\n")
            examples.append((command, output))
    return examples


def readme_rule(name: str) -> str:
    """The ```yaml block of the README that defines rule `name`."""
    for block in blocks("yaml"):
        doc = yaml.safe_load(block)
        if isinstance(doc, dict) and doc.get("metadata", {}).get("name") == name:
            return block
    raise AssertionError(f"the README defines no rule {name!r}")


def run_trigger(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `trigger ARGS` from the repository, as a reader of the README would. A `--rules`
    file that is not in the repository is the README's own rule of that name, saved there."""
    args = list(args)
    for i, arg in enumerate(args[:-1]):
        if arg == "--rules" and not (REPO / args[i + 1]).exists():
            saved = tmp_path / args[i + 1]
            saved.write_text(readme_rule(args[1]))
            args[i + 1] = str(saved)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIGGER_")}
    return subprocess.run(
        [*TRIGGER, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_readme_has_console_examples() -> None:
    """The README shows `trigger schedule` and `trigger match` with their output."""
    commands = [shlex.split(command)[:2] for command, _ in console_examples()]
    assert ["trigger", "schedule"] in commands and ["trigger", "match"] in commands


@pytest.mark.parametrize(("command", "output"), console_examples())
def test_console_example_prints_what_the_readme_shows(
    command: str, output: str, tmp_path: Path
) -> None:
    """Each ```console example, run from a checkout against the shipped rules, prints exactly the lines shown."""
    args = shlex.split(command)
    assert args[0] == "trigger", command
    result = run_trigger(args[1:], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == output


def test_quick_start_commands_run(tmp_path: Path) -> None:
    """Every `trigger match` line of a ```sh block runs on the shipped rules and events, exit 0."""
    lines = [
        line.strip()
        for block in blocks("sh")
        for line in block.splitlines()
        if re.match(r"\s*(\.venv/bin/)?trigger match ", line)
    ]
    assert lines
    for line in lines:
        args = [
            path
            for arg in shlex.split(line)[2:]
            for path in (sorted(glob.glob(arg, root_dir=REPO)) if "*" in arg else [arg])
        ]
        result = run_trigger(["match", *args], tmp_path)
        assert result.returncode == 0, (line, result.stderr)
        assert "cannot read" not in result.stderr and "error" not in result.stderr


def test_quick_start_names_the_workflow_that_match_renders(tmp_path: Path) -> None:
    """The Workflow name the quick start's curl answer and `ls` show is the one its event gives."""
    (block,) = [b for b in blocks("sh") if "curl" in b]
    event = re.search(r"--data-binary @(\S+)", block)
    assert event is not None
    shown = set(re.findall(r"ingest-csv-[a-z2-7]{20}", block))
    result = run_trigger(["match", "-o", "json", event.group(1)], tmp_path)
    assert result.returncode == 0, result.stderr
    names = {json.loads(line)["metadata"]["name"] for line in result.stdout.splitlines()}
    assert len(shown) == 1 and shown == names


def rule_comments() -> list[tuple[str, str, str]]:
    """(file, rule name, the comment above it) for every shipped rule."""
    found = []
    for path in sorted(EXAMPLE_RULES.glob("*.yaml")):
        for chunk in re.split(r"^---$", path.read_text(), flags=re.MULTILINE):
            lines = chunk.strip("\n").splitlines()
            comment = " ".join(
                line.lstrip("# ")
                for line in itertools.takewhile(lambda x: x.startswith("#"), lines)
            )
            found.append((path.name, yaml.safe_load(chunk)["metadata"]["name"], comment))
    return found


CLAIM = re.compile(r"([\w.-]+\.(?:json|xml))\b.*?\brenders (\w+)=(\S+?)\.?(?=\s|$)")


@pytest.mark.parametrize(("file", "name", "comment"), rule_comments())
def test_shipped_rule_comment_says_what_it_renders(file: str, name: str, comment: str) -> None:
    """Each shipped rule's comment names an example event and a parameter it renders, truly."""
    claims = CLAIM.findall(comment)
    assert claims, f"{file}: rule {name}: the comment says nothing it renders: {comment!r}"
    rules = load_rules([str(EXAMPLE_RULES)])
    for event_file, parameter, value in claims:
        events = decode_file(EXAMPLE_EVENTS / event_file)
        if any(r.gate is not None and r.gate.rule.name == name for r in rules.rules):
            workflow = gate_workflow(rules, events, name)
        else:
            (event,) = events
            (match,) = [m for m in rules.route(event).matches if m.rule.name == name]
            workflow = render(match.rule, match.event)
        parameters = workflow["spec"]["arguments"]["parameters"]
        assert {p["name"]: p["value"] for p in parameters}[parameter] == value, comment


def gate_workflow(rules: Any, events: list[Any], name: str) -> dict[str, Any]:
    """The one Workflow the gate rule `name` fires over `events` (as `trigger match` plays it)."""
    replay, fired = GateReplay(), []
    for event in events:
        for match in rules.route(event).matches:
            if match.rule.gate is not None and match.rule.gate.rule.name == name:
                firings, _ = replay.add(match.rule, match.event)
                fired += [render(match.rule.gate.rule, firing) for firing in firings]
    (workflow,) = fired
    return workflow


@pytest.mark.parametrize("source", RULE_SOURCES)
def test_a_minimal_example_event_per_source(source: str) -> None:
    """trigger/examples/events/SOURCE-minimal.json exists, is listed in the README, and fires a shipped rule."""
    path = EXAMPLE_EVENTS / f"{source}-minimal.json"
    (event,) = decode_file(path)
    assert event.source == source
    assert rules_matching(event)
    assert f"`{path.name}`" in (REPO / "README.md").read_text()


def rules_matching(event: Any) -> list[str]:
    return [m.rule.name for m in load_rules([str(EXAMPLE_RULES)]).route(event).matches]


# --- the defaults a user would otherwise find by trial ----------------------------------------


BARE_RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: bare}
spec:
  source: {kafka: {topics: [orders]}}
  workflow: {template: t}
"""


def test_documented_workflow_defaults(tmp_path: Path) -> None:
    """A rule without `namespace` and `generateName` gets what the README's rule example says."""
    readme = (REPO / "README.md").read_text()
    namespace = re.search(r"^\s+namespace: \S+\s+# default: (\S+)$", readme, re.MULTILINE)
    prefix = re.search(r'^\s+generateName: .*# .*default: the rule\'s name and "-"$', readme, re.M)
    assert namespace is not None and prefix is not None
    (tmp_path / "bare.yaml").write_text(BARE_RULE)
    (event,) = decode_file(EXAMPLE_EVENTS / "kafka-minimal.json")
    (match,) = load_rules([str(tmp_path)]).route(event).matches
    metadata = render(match.rule, match.event)["metadata"]
    assert metadata["namespace"] == namespace.group(1)
    assert re.fullmatch(r"bare-[a-z2-7]{20}", metadata["name"])


@pytest.mark.parametrize(
    ("event_file", "time"),
    [
        ("eventbridge-put-csv.json", "2025-01-01T08:00:00Z"),  # data.eventTime
        ("oss-minimal.json", "2025-01-02T08:00:00Z"),  # no data.eventTime: the CloudEvent's time
        ("mns-push.xml", "2025-01-03T04:05:06Z"),  # the record's eventTime
        ("kafka-order.json", "2025-01-01T08:00:00.123Z"),  # the record's timestamp
        ("kafka-minimal.json", "1970-01-01T00:00:00Z"),  # none
        ("cron-minimal.json", "2025-01-01T18:00:00Z"),  # scheduledTime
        ("webhook-request.json", "2025-01-01T03:15:00Z"),  # the file's time
        ("webhook-minimal.json", "1970-01-01T00:00:00Z"),  # none
    ],
)
def test_event_time_comes_from_where_the_readme_says(event_file: str, time: str) -> None:
    """`event.time` of each example event is the field the README's table names."""
    readme = (REPO / "README.md").read_text()
    assert "`event.time` is when the thing happened, as its source says:" in readme
    (event,) = decode_file(EXAMPLE_EVENTS / event_file)
    assert event.doc["time"] == time


def test_dns1123_does_what_the_readme_says() -> None:
    """The README's `dns1123` example renders as shown."""
    from trigger.rules.templating import TemplateEngine

    readme = (REPO / "README.md").read_text()
    example = re.search(r"\(`([^`]+)` → `([^`]+)`; a value with no ASCII", readme)
    assert example is not None
    given, shown = example.groups()
    assert TemplateEngine().compile(f"{{{{ '{given}' | dns1123 }}}}").render({}) == shown
