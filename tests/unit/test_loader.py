"""Rule loading: schema, compilation and problems reported as file:line:column."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import pytest

from trigger.errors import RuleError
from trigger.rules.loader import load_rules

GOOD = """
apiVersion: trigger/v1
kind: Rule
metadata:
  name: ingest-csv
spec:
  source:
    oss:
      bucket: raw-data
      key: {prefix: incoming/, suffix: .csv}
  workflow:
    template: ingest
    parameters:
      input: "oss://{{ event.bucket }}/{{ event.key }}"
      retries: 3
      dry: true
"""


def problems(write: Callable[..., Path], text: str) -> list[str]:
    path = write(text)
    with pytest.raises(RuleError) as caught:
        load_rules([path])
    return [str(p).replace(str(path), "F") for p in caught.value.problems]


def test_valid_rule_loads_with_defaults(write_rules: Callable[..., Path]) -> None:
    """A minimal OSS rule loads, with defaults for namespace, events and generateName."""
    rules = load_rules([write_rules(GOOD)])
    rule = rules.by_name["ingest-csv"]
    assert rule.kind == "oss"
    assert rule.workflow.namespace == "default"
    assert rule.oss.events == ["ObjectCreated:*"]
    assert rule.generate_name == "ingest-csv-"
    assert rule.key_prefix == "incoming/"
    assert dict((k, t.source) for k, t in rule.parameters)["retries"] == "3"
    assert dict((k, t.source) for k, t in rule.parameters)["dry"] == "true"


def test_several_documents_per_file(write_rules: Callable[..., Path]) -> None:
    """Several YAML documents in one file are several rules."""
    second = GOOD.replace("ingest-csv", "ingest-two")
    rules = load_rules([write_rules(GOOD + "---\n" + second)])
    assert sorted(rules.by_name) == ["ingest-csv", "ingest-two"]


def test_directory_is_searched_recursively(tmp_path: Path) -> None:
    """A directory argument loads every .yaml and .yml file below it."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.yaml").write_text(GOOD)
    (tmp_path / "two.yml").write_text(GOOD.replace("ingest-csv", "other"))
    (tmp_path / "notes.txt").write_text("not a rule")
    assert sorted(load_rules([tmp_path]).by_name) == ["ingest-csv", "other"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("ingest-csv", "Ingest_CSV"),
            "F:4:9: rule Ingest_CSV: metadata.name: name 'Ingest_CSV' must be a DNS-1123 label",
        ),
        (
            GOOD.replace("  workflow:\n", "  bogus: 1\n  workflow:\n"),
            "F:10:3: rule ingest-csv: bogus: unknown field (spec has: source, gate, filter, workflow, idempotencyKey, rateLimit, retry)",
        ),
        (
            GOOD.replace("    template: ingest\n", ""),
            "F:10:3: rule ingest-csv: workflow.template: required field is missing",
        ),
        (
            GOOD.replace("apiVersion: trigger/v1", "apiVersion: trigger/v2"),
            "F:1:13: rule ingest-csv: apiVersion: Input should be 'trigger/v1'",
        ),
        (
            GOOD.replace("    oss:\n", "    kafka: {topics: [x]}\n    oss:\n"),
            "F:7:5: rule ingest-csv: source: source needs exactly one of oss, kafka, cron, webhook, workflow (got oss, kafka)",
        ),
        (
            GOOD.replace("{{ event.key }}", "{{ event.key "),
            "F:13:14: rule ingest-csv: workflow.parameters.input: line 1: unexpected end of template",
        ),
        (
            GOOD.replace("{{ event.key }}", "{{ secrets.key }}"),
            "F:13:14: rule ingest-csv: workflow.parameters.input: unknown name(s) secrets",
        ),
        (
            GOOD.replace("retries: 3", "retries: [3]"),
            "F:14:16: rule ingest-csv: workflow.parameters.retries: must be a string, number or boolean",
        ),
        (
            GOOD.replace("suffix: .csv", "suffix: 5"),
            "F:9:40: rule ingest-csv: source.oss.key.suffix: suffix takes a string",
        ),
        (
            GOOD + "  filter:\n    expr: 'event.size >'\n",
            "F:17:11: rule ingest-csv: filter.expr: Failed to parse expression",
        ),
        (
            GOOD + "  filter:\n    expr: 'secret > 1'\n",
            "F:17:11: rule ingest-csv: filter.expr: unknown variable(s) secret",
        ),
        (
            GOOD + "  filter:\n    pattern: {size: [{numeric: ['>']}]}\n",
            "F:17:32: rule ingest-csv: filter.pattern.size[0].numeric: numeric takes",
        ),
        (
            GOOD + "  rateLimit: {perSecond: 0}\n",
            "F:16:26: rule ingest-csv: rateLimit.perSecond: Input should be greater than 0",
        ),
        (
            GOOD + "  retry: {backoff: {initial: soon}}\n",
            "F:16:30: rule ingest-csv: retry.backoff.initial: expected a duration",
        ),
        ("a: [1, 2\n", "F:2:1: invalid YAML"),
        ("- just\n- a list\n", "F:1:1: a rule document must be a mapping"),
        (
            GOOD.replace("    oss:\n", "    oss:\n      bucket: x\n"),
            "F:9:7: invalid YAML: duplicate key 'bucket'",
        ),
        (
            GOOD.replace("ObjectCreated", "x").replace(
                "      bucket: raw-data\n",
                "      bucket: raw-data\n      events: ['Object Created']\n",
            ),
            "F:9:16: rule ingest-csv: source.oss.events[0]: 'Object Created' is not an OSS event name",
        ),
    ],
)
def test_problem_is_located(write_rules: Callable[..., Path], text: str, expected: str) -> None:
    """Each kind of problem names file:line:column, the rule and the field."""
    found = problems(write_rules, text)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported(write_rules: Callable[..., Path]) -> None:
    """All problems of all documents are reported, not only the first."""
    bad = GOOD.replace("template: ingest", "template: Bad_Name").replace(
        "bucket: raw-data", "bucket: 7x\n      extra: 1"
    )
    second = GOOD.replace("ingest-csv", "second").replace("{{ event.key }}", "{{ nope }}")
    found = problems(write_rules, bad + "---\n" + second)
    assert len(found) == 3, found
    assert any("rule second:" in p and "nope" in p for p in found)


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    """A rule name used twice is reported at the second place, naming the first."""
    (tmp_path / "a.yaml").write_text(GOOD.lstrip())
    (tmp_path / "b.yaml").write_text(GOOD.lstrip())
    with pytest.raises(RuleError) as caught:
        load_rules([tmp_path])
    (problem,) = caught.value.problems
    assert problem.file.endswith("b.yaml") and (problem.line, problem.column) == (4, 9)
    assert f"first defined at {tmp_path / 'a.yaml'}:4:9" in problem.message


def test_alias_bomb_is_refused(write_rules: Callable[..., Path]) -> None:
    """A billion-laughs document is refused quickly instead of expanding."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    found = problems(write_rules, "\n".join(lines) + "\n")
    assert "alias bomb" in found[0]


def test_oversized_file_is_refused(write_rules: Callable[..., Path]) -> None:
    """A rule file over the size limit is refused with a clear message."""
    found = problems(write_rules, "# " + "x" * (1 << 20) + "\n")
    assert found == ["F:1:1: file is larger than 1048576 bytes"]


def test_unsafe_tags_are_refused(write_rules: Callable[..., Path]) -> None:
    """Python-object tags are not constructed (safe loading)."""
    found = problems(write_rules, "a: !!python/object/apply:os.system ['true']\n")
    assert found == [
        "F:1:4: invalid YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"
    ]


def test_missing_path_is_a_problem(tmp_path: Path) -> None:
    """A rules path that does not exist is reported, not ignored."""
    with pytest.raises(RuleError) as caught:
        load_rules([tmp_path / "nope.yaml"])
    assert "cannot read rule file" in str(caught.value)


def test_cron_schedule_and_timezone_are_checked(write_rules: Callable[..., Path]) -> None:
    """Bad cron expressions and unknown timezones are load errors."""
    text = """
    apiVersion: trigger/v1
    kind: Rule
    metadata: {name: nightly}
    spec:
      source:
        cron: {schedules: ["0 2 * * *", "61 * * * *", "@sometimes"], timezone: Mars/Olympus}
      workflow: {template: report}
    """
    found = problems(write_rules, text)
    assert any("schedules[1]" in p for p in found)
    assert any("schedules[2]" in p and "unknown macro" in p for p in found)
    assert any("timezone" in p and "Mars/Olympus" in p for p in found)


def test_example_rules_are_valid() -> None:
    """Every example rule shipped in rules/ loads."""
    from tests.conftest import EXAMPLE_RULES

    rules = load_rules([EXAMPLE_RULES])
    assert {r.kind for r in rules.rules} == {"oss", "kafka", "cron", "webhook", "workflow"}


def test_mounted_configmap_snapshot_is_not_read_twice(tmp_path: Path) -> None:
    """A ConfigMap mount's hidden ..timestamp directory is skipped; its ..data root still works."""
    snapshot = tmp_path / "..2025_01_01_00_00_00.1"
    snapshot.mkdir()
    (snapshot / "rules.yaml").write_text(GOOD)
    (tmp_path / "..data").symlink_to(snapshot.name)
    (tmp_path / "rules.yaml").symlink_to("..data/rules.yaml")
    assert sorted(load_rules([tmp_path]).by_name) == ["ingest-csv"]
    assert sorted(load_rules([tmp_path / "..data"]).by_name) == ["ingest-csv"]


def test_rules_on_one_webhook_path_share_auth(write_rules: Callable[..., Path]) -> None:
    """Two rules on one webhook path with different authentication is a load error."""
    one = "apiVersion: trigger/v1\nkind: Rule\nmetadata: {name: a}\nspec:\n  source: {webhook: {path: /h, auth: {hmacSecretEnv: A}}}\n  workflow: {template: t}\n"
    two = one.replace("name: a", "name: b").replace("hmacSecretEnv: A", "bearerTokenEnv: B")
    found = problems(write_rules, one + "---\n" + two)
    assert len(found) == 1 and found[0].startswith(
        "F:12:38: rule b: source.webhook.auth differs from rule a"
    )
    same = one + "---\n" + one.replace("name: a", "name: c")
    assert sorted(load_rules([write_rules(same, "same.yaml")]).by_name) == ["a", "c"]


def test_identical_patterns_are_compiled_once(write_rules: Callable[..., Path]) -> None:
    """Rules repeating a pattern share one compiled Pattern; a bad one is reported per rule."""
    doc = "apiVersion: trigger/v1\nkind: Rule\nmetadata: {name: NAME}\nspec:\n  source: {kafka: {topics: [t]}}\n  filter: {pattern: {value: {n: [{numeric: ['>', 1]}]}}}\n  workflow: {template: t}\n"
    rules = load_rules([write_rules("---\n".join(doc.replace("NAME", n) for n in ("a", "b")))])
    assert rules.by_name["a"].pattern is rules.by_name["b"].pattern
    bad = doc.replace("['>', 1]", "['>']")
    found = problems(write_rules, "---\n".join(bad.replace("NAME", n) for n in ("c", "d")))
    assert [p.split(":")[3].strip() for p in found] == ["rule c", "rule d"]


# --- validate checks what it can know (issue 13, item 4) ------------------------------------


def test_every_problem_in_a_pattern_is_reported(write_rules: Callable[..., Path]) -> None:
    """A pattern with three problems gives three lines, each at its own place."""
    text = GOOD + (
        "  filter:\n"
        "    pattern:\n"
        "      size: [{numeric: ['>']}]\n"
        "      key: [{prefix: 5}, {wildcard: 'a**'}]\n"
    )
    found = problems(write_rules, text)
    assert found == [
        "F:18:24: rule ingest-csv: filter.pattern.size[0].numeric: numeric takes [op, n] or [>|>=, low, <|<=, high]",
        "F:19:22: rule ingest-csv: filter.pattern.key[0].prefix: prefix takes a string",
        "F:19:37: rule ingest-csv: filter.pattern.key[1].wildcard: wildcard: consecutive * are not allowed",
    ]


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("61 2 * * *", "'61 2 * * *': minute (field 1) 61 is outside 0-59"),
        ("0 2 * * 8", "'0 2 * * 8': day of week (field 5) 8 is outside 0-7 (or SUN-SAT)"),
        ("*/0 * * * *", "'*/0 * * * *': minute (field 1) */0: a step must be at least 1"),
        ("0 25-3 * * *", "'0 25-3 * * *': hour (field 2) 25-3: 25 is outside 0-23"),
        ("0 2 * JANUARY *", "'0 2 * JANUARY *': month (field 4) JANUARY is not a number or a name (JAN-DEC)"),
        ("0 2 1-40/2 * *", "'0 2 1-40/2 * *': day of month (field 3) 1-40/2: 40 is outside 1-31"),
        ("70 0 2 * * *", "'70 0 2 * * *': second (field 1) 70 is outside 0-59"),
        ("0 0 30 2 *", "'0 0 30 2 *' never fires: day of month 30 does not occur in month 2"),
        ("0 0 31 4,6,9 *", "'0 0 31 4,6,9 *' never fires: day of month 31 does not occur in month 4,6,9"),
        ("0 2 * *", "schedule '0 2 * *' has 4 fields: use 5 (minute hour day-of-month month day-of-week) or 6 with a leading seconds field"),
    ],
)
def test_bad_cron_field_is_named_with_why(
    write_rules: Callable[..., Path], schedule: str, message: str
) -> None:
    """A bad cron expression says which field is wrong and why."""
    text = f"apiVersion: trigger/v1\nkind: Rule\nmetadata: {{name: n}}\nspec:\n  source: {{cron: {{schedules: ['{schedule}']}}}}\n  workflow: {{template: t}}\n"
    (found,) = problems(write_rules, text)
    assert found == f"F:5:31: rule n: source.cron.schedules[0]: {message}"


def test_field_paths_are_spelled_one_way(write_rules: Callable[..., Path]) -> None:
    """Every message spells its field one way (below spec, indices in brackets), in file order."""
    text = """
    apiVersion: trigger/v1
    kind: Rule
    metadata: {name: spelling}
    spec:
      source:
        oss: {bucket: b, events: ["Object Created"], key: {suffix: 5}}
      filter: {expr: 'event.size >', pattern: {key: [{prefix: 1}]}}
      workflow:
        template: t
        labels: {"bad key!": x}
        parameters: {input: "{{ event.key ", retries: [3]}
      idempotencyKey: "{{ nope }}"
      rateLimit: {perSecond: 0}
    """
    found = problems(write_rules, text)
    fields = [p.split(": ")[2] for p in found]
    assert fields == [
        "source.oss.events[0]",
        "source.oss.key.suffix",
        "filter.expr",
        "filter.pattern.key[0].prefix",
        "workflow.labels.bad key!",
        "workflow.parameters.input",
        "workflow.parameters.retries",
        "idempotencyKey",
        "rateLimit.perSecond",
    ], found


def test_schema_problems_do_not_hide_the_others(write_rules: Callable[..., Path]) -> None:
    """A schema problem elsewhere in the rule still lets patterns, templates and schedules be checked."""
    text = """
    apiVersion: trigger/v1
    kind: Rule
    metadata: {name: n}
    spec:
      source: {cron: {schedules: ["61 * * * *"], catchUp: sometimes}}
      filter: {pattern: {sise: [1]}}
      workflow: {template: t, parameters: {a: "{{ event.nope }}"}}
    """
    found = problems(write_rules, text)
    assert [p.split(": ")[2] for p in found] == [
        "source.cron.schedules[0]",
        "source.cron.catchUp",
        "filter.pattern.sise",
        "workflow.parameters.a",
    ], found


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "---\n# only comments\n---\n"])
def test_empty_rule_file_is_a_warning(tmp_path: Path, text: str) -> None:
    """A rule file with no rules in it loads, with a warning naming it."""
    (tmp_path / "empty.yaml").write_text(text)
    (tmp_path / "good.yaml").write_text(GOOD)
    rules = load_rules([tmp_path])
    assert sorted(rules.by_name) == ["ingest-csv"]
    assert [str(w) for w in rules.warnings] == [
        f"{tmp_path / 'empty.yaml'}:1:1: warning: the file holds no rules"
    ]


EXAMPLES = Path(__file__).resolve().parents[2] / "rules"


def test_loading_makes_no_cyclic_garbage() -> None:
    """A load leaves nothing for the cyclic collector (so freezing its heap leaks nothing)."""
    gc.collect()
    gc.disable()  # load_rules neither freezes nor collects when the collector is off
    try:
        rules = load_rules([EXAMPLES])
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert rules.rules


def test_load_freezes_the_rule_set_and_reloads_do_not_pile_up() -> None:
    """The loaded rules are out of the collector's scans; replaced sets are collected."""
    rules = load_rules([EXAMPLES])
    assert gc.get_freeze_count() > 0
    assert gc.is_tracked(rules.rules[0]) and not _young(rules.rules[0])
    rules = load_rules([EXAMPLES])
    frozen = gc.get_freeze_count()
    for _ in range(10):
        rules = load_rules([EXAMPLES])
    assert gc.get_freeze_count() <= frozen + 50  # a loop's few objects, not ten rule sets


def _young(obj: object) -> bool:
    """True when `obj` is in a generation the collector scans (not frozen)."""
    return any(any(o is obj for o in gc.get_objects(generation)) for generation in range(3))
