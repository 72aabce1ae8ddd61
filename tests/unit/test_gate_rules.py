"""Gate rules at load: members compile like sources and filters, key and templates are checked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from trigger.errors import RuleError
from trigger.rules.loader import load_rules

GATE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: nightly-load}
spec:
  gate:
    key: "{{ event.key | dirname }}"
    window: 2h
    onTimeout: dead-letter
    members:
      hourly:
        source: {oss: {bucket: raw-data, key: {prefix: sales/}}}
        filter: {pattern: {key: [{suffix: .csv}]}}
        count: 24
      marker:
        source: {oss: {bucket: raw-data, key: {prefix: sales/}}}
        filter: {pattern: {key: [{suffix: /_SUCCESS}]}}
  workflow:
    template: nightly-load
    namespace: data
    parameters:
      day: "{{ gate.key }}"
      files: "{{ gate.members.hourly | length }}"
"""


def problems(write: Callable[..., Path], text: str) -> list[str]:
    path = write(text)
    with pytest.raises(RuleError) as caught:
        load_rules([path])
    return [str(p).replace(str(path), "F") for p in caught.value.problems]


def test_gate_rule_loads_as_one_rule_per_member(write_rules: Callable[..., Path]) -> None:
    """A gate compiles to a routed rule per member sharing the gate rule that fires."""
    rules = load_rules([write_rules(GATE)])
    assert sorted(rules.by_name) == ["nightly-load.hourly", "nightly-load.marker"]
    hourly, marker = rules.by_name["nightly-load.hourly"], rules.by_name["nightly-load.marker"]
    assert hourly.kind == "oss" and hourly.oss.bucket == "raw-data" and hourly.gate is not None
    assert marker.gate is not None and marker.gate.rule is hourly.gate.rule
    assert hourly.gate.shape.counts == {"hourly": 24, "marker": 1}
    assert hourly.gate.shape.window == 7200.0
    fires = hourly.gate.rule
    assert fires.name == "nightly-load" and fires.generate_name == "nightly-load-"
    assert [name for name, _ in fires.parameters] == ["day", "files"]
    assert hourly.pattern is not None and marker.pattern is not None
    assert hourly.gate.state_key("sales/2026-12-06").startswith("gate/nightly-load/")


def test_members_may_come_from_different_sources(write_rules: Callable[..., Path]) -> None:
    """An OSS file and a Kafka approval can be members of one gate."""
    text = GATE.replace(
        "source: {oss: {bucket: raw-data, key: {prefix: sales/}}}\n"
        "        filter: {pattern: {key: [{suffix: /_SUCCESS}]}}",
        "source: {kafka: {topics: [approvals]}}",
    ).replace("{{ event.key | dirname }}", "{{ event.subject }}")
    rules = load_rules([write_rules(text)])
    assert rules.by_name["nightly-load.marker"].kind == "kafka"
    assert rules.kafka_topics() == {("default", None): {"approvals"}}


def test_key_must_name_a_field_of_every_member(write_rules: Callable[..., Path]) -> None:
    """A key field one member's events lack is an error naming that member."""
    text = GATE.replace(
        "source: {oss: {bucket: raw-data, key: {prefix: sales/}}}\n"
        "        filter: {pattern: {key: [{suffix: /_SUCCESS}]}}",
        "source: {kafka: {topics: [approvals]}}",
    ).replace("{{ event.key | dirname }}", "{{ event.bucket }}")
    found = problems(write_rules, text)
    assert len(found) == 1
    assert "gate.key: event.bucket:" in found[0] and "(member marker)" in found[0]


def test_member_filters_are_checked_at_their_place(write_rules: Callable[..., Path]) -> None:
    """A member's bad pattern field is reported at spec.gate.members.NAME.filter."""
    found = problems(
        write_rules, GATE.replace("{key: [{suffix: .csv}]}", "{kee: [{suffix: .csv}]}")
    )
    assert len(found) == 1 and "gate.members.hourly.filter.pattern.kee" in found[0]
    assert "did you mean 'key'" in found[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("{{ gate.key }}", "{{ event.key }}"), "unknown name(s) event (templates see only gate"),
        (("gate.members.hourly", "gate.members.hours"), "the gate has no member 'hours'"),
        (("{{ gate.key }}", "{{ gate.kee }}"), "gate has no field 'kee'"),
        (("window: 2h", "window: 0s"), "gate.window: window must be longer than zero"),
        (("count: 24", "count: 0"), "count"),
        (("      marker:\n", "      bad-name:\n"), "member name 'bad-name'"),
        (("onTimeout: dead-letter", "onTimeout: later"), "gate.onTimeout"),
        (("  gate:\n", "  filter: {expr: 'true'}\n  gate:\n"), "no filter of its own"),
    ],
)
def test_gate_mistakes_are_load_errors(
    write_rules: Callable[..., Path], change: tuple[str, str], expected: str
) -> None:
    """Each mistake in a gate is reported at load, with its place and cause."""
    found = problems(write_rules, GATE.replace(*change))
    assert any(expected in p for p in found), found


def test_source_and_gate_together_is_an_error(write_rules: Callable[..., Path]) -> None:
    """A rule has a source or a gate, not both."""
    text = GATE.replace("  gate:\n", "  source: {kafka: {topics: [t]}}\n  gate:\n")
    assert any("exactly one of source and gate" in p for p in problems(write_rules, text))


def test_rule_without_source_or_gate_is_told_its_source_is_missing(
    write_rules: Callable[..., Path],
) -> None:
    """A plain rule without a source hears about the source, not about gates, at once."""
    text = "apiVersion: trigger/v1\nkind: Rule\nmetadata: {name: x}\nspec: {}\n"
    found = problems(write_rules, text)
    assert any("F:4:1: rule x: source: required field is missing" in p for p in found), found
    assert not any("gate" in p for p in found)
