"""`trigger validate` knows each source's event fields: a pattern or template that names a
field the rule's source never has is a load error that suggests the nearest real one."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_EVENTS, REPO
from trigger.decoders.detect import decode_file
from trigger.errors import RuleError
from trigger.rules.loader import load_rules

SOURCES = {
    "oss": "{oss: {bucket: b}}",
    "oss-poll": "{oss: {bucket: b, poll: {endpoint: 'http://127.0.0.1:1', region: r}}}",
    "kafka": "{kafka: {topics: [t]}}",
    "kafka-text": "{kafka: {topics: [t], format: text}}",
    "cron": "{cron: {schedules: ['0 2 * * *']}}",
    "webhook": "{webhook: {path: /h}}",
}


def rule(source: str, *, pattern: str | None = None, parameter: str | None = None) -> str:
    text = f"apiVersion: trigger/v1\nkind: Rule\nmetadata: {{name: r}}\nspec:\n  source: {SOURCES[source]}\n"
    if pattern is not None:
        text += f"  filter: {{pattern: {pattern}}}\n"
    text += "  workflow:\n    template: t\n"
    if parameter is not None:
        text += f"    parameters: {{p: {parameter!r}}}\n"
    return text


def problems(write: Callable[..., Path], text: str) -> list[str]:
    path = write(text)
    with pytest.raises(RuleError) as caught:
        load_rules([path])
    return [str(p).replace(str(path), "F") for p in caught.value.problems]


@pytest.mark.parametrize(
    ("source", "pattern", "expected"),
    [
        (
            "oss",
            "{sise: [1]}",
            "F:6:22: rule r: filter.pattern.sise: oss events have no field 'sise'; did you mean 'size'?",
        ),
        (
            "kafka",
            "{topik: [t]}",
            "F:6:22: rule r: filter.pattern.topik: kafka events have no field 'topik'; did you mean 'topic'?",
        ),
        (
            "webhook",
            "{$or: [{body: {a: [1]}}, {heders: {x: [y]}}]}",
            "F:6:47: rule r: filter.pattern.$or[1].heders: webhook events have no field 'heders'; did you mean 'headers'?",
        ),
        (
            "cron",
            "{rule: {name: [x]}}",
            "F:6:29: rule r: filter.pattern.rule.name: event.rule is a single value; it has no field 'name'",
        ),
        (
            "kafka-text",
            "{value: {amount: [1]}}",
            "F:6:30: rule r: filter.pattern.value.amount: event.value is a single value; it has no field 'amount'",
        ),
        (
            "oss",
            "{storageClass: [Standard]}",
            "F:6:22: rule r: filter.pattern.storageClass: oss events have no field 'storageClass'",
        ),
    ],
)
def test_pattern_naming_an_unknown_field_is_an_error(
    write_rules: Callable[..., Path], source: str, pattern: str, expected: str
) -> None:
    """A pattern field the source never has is a problem at its place, with the nearest field."""
    found = problems(write_rules, rule(source, pattern=pattern))
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("source", "template", "expected"),
    [
        (
            "oss",
            "{{ event.doesNotExist }}",
            "workflow.parameters.p: event.doesNotExist: oss events have no field 'doesNotExist' "
            "(they have: id, source, type, subject, time, data, bucket, key, size, etag, region, "
            "account, eventName, sourceIp, requestId, contentType, userMeta)",
        ),
        (
            "kafka",
            "{{ event.kee | upper }}",
            "workflow.parameters.p: event.kee: kafka events have no field 'kee'; did you mean 'key'?",
        ),
        (
            "cron",
            "{{ event['scheduledtime'] }}",
            "workflow.parameters.p: event.scheduledtime: cron events have no field "
            "'scheduledtime'; did you mean 'scheduledTime'?",
        ),
        (
            "webhook",
            "{{ rule.nmae }}",
            "workflow.parameters.p: rule.nmae: rules have no field 'nmae'; did you mean 'name'?",
        ),
        (
            "cron",
            "{% if event.size > 1 %}x{% endif %}",
            "workflow.parameters.p: event.size: cron events have no field 'size'",
        ),
    ],
)
def test_template_naming_an_unknown_field_is_an_error(
    write_rules: Callable[..., Path], source: str, template: str, expected: str
) -> None:
    """A template naming a field the source never has is a load error, with the nearest field."""
    found = problems(write_rules, rule(source, parameter=template))
    assert any(p.split(": ", 2)[2].startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("source", "pattern", "template"),
    [
        ("oss", "{data: {oss: {bucket: {name: [b]}}}}", "{{ event.data.anything.at.all }}"),
        ("oss", "{userMeta: {x-oss-meta-team: [a]}}", "{{ event.userMeta.team }}"),
        ("oss-poll", "{storageClass: [Standard], polled: [true]}", "{{ event.storageClass }}"),
        ("kafka", "{value: {amount: [1]}, headers: {x: [y]}}", "{{ event.value.a[0].b }}"),
        ("kafka", "{data: {amount: [1]}}", "{{ event.headers['trace-id'] }}"),
        ("webhook", "{body: {a: [1]}, query: {q: [x]}}", "{{ event.query.q }}{{ event.body.z }}"),
        ("cron", "{rule: [r], fireTime: [{exists: true}]}", "{{ event.keys() | list }}"),
        ("cron", "{schedule: [x]}", "{{ event.rule.upper() }}{{ rule.labels.team }}"),
        ("kafka", "{key: [k]}", "{% set event = {'x': 1} %}{{ event.x }}"),
    ],
)
def test_open_fields_take_any_name(
    write_rules: Callable[..., Path], source: str, pattern: str, template: str
) -> None:
    """Free-form payloads take any name below them; methods and shadowed names are no fields."""
    load_rules([write_rules(rule(source, pattern=pattern, parameter=template))])


def readme_field_table() -> dict[str, set[str]]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### What filters and templates see", 1)[1].split("`event.time`", 1)[0]
    table = {}
    for source, fields in re.findall(r"^\| (\w+) \| `([^`]+)`", section, re.MULTILINE):
        table[source] = {f.strip() for f in fields.split(",")}
    return table


def test_field_table_is_the_readme_table() -> None:
    """The fields validate knows are the README's table, plus the common ones."""
    from trigger.decoders.fields import COMMON, event_fields

    table = readme_field_table()
    assert set(table) == {"oss", "kafka", "cron", "webhook", "workflow"}
    for source, fields in table.items():
        assert set(event_fields(source)) == fields | set(COMMON), source  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "event_file",
    sorted(p.name for p in EXAMPLE_EVENTS.iterdir()),
)
def test_decoded_events_have_exactly_the_known_fields(event_file: str) -> None:
    """What the decoders produce is what the field table says (kept in step both ways)."""
    from trigger.decoders.fields import event_fields

    for event in decode_file(EXAMPLE_EVENTS / event_file):
        assert set(event.doc) == set(event_fields(event.source)), event_file


def test_polled_events_have_the_polled_fields() -> None:
    """A polled object's event has the push fields and storageClass, polled."""
    from types import SimpleNamespace

    from trigger.decoders.fields import event_fields
    from trigger.sources.oss.poll import object_event

    listed = SimpleNamespace(
        key="a.csv", size=1, etag='"E"', last_modified=0, owner=None, storage_class="Standard"
    )
    event = object_event("b", "cn-hangzhou", listed, None)
    assert set(event.doc) == set(event_fields("oss", polled=True))
