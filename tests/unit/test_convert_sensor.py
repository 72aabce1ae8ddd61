"""`trigger convert` for Argo Events Sensors and their EventSources."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import EXAMPLE_EVENTS, SHARED_SCHEMA, WorkflowChecker
from tests.convert_helpers import (
    CONVERT,
    convert_fixtures,
    gate_workflows,
    load,
    original,
    resolve,
    workflows,
)
from trigger.rules.convert import Origin, convert, read_objects
from trigger.rules.convert.conditions import ConditionError, alternatives
from trigger.rules.convert.eventdata import data_condition, govaluate_to_cel
from trigger.rules.convert.eventsources import interval_schedule
from trigger.rules.expressions import compile_expression
from trigger.rules.patterns import compile_pattern

ES = "argo-events-eventsource-{}.yaml"
SENSOR = "argo-events-sensor-{}.yaml"


def expected_spec(sensor_file: str, *values: str) -> dict[str, Any]:
    """The original trigger's Workflow spec with its arguments set as Argo Events sets them."""
    sensor = original(sensor_file)
    action = sensor["spec"]["triggers"][0]["template"]
    resource = (action.get("k8s") or action.get("argoWorkflow"))["source"]["resource"]
    spec: dict[str, Any] = copy.deepcopy(resource["spec"])
    for parameter, value in zip(spec["arguments"]["parameters"], values, strict=False):
        parameter["value"] = value
    return spec


def oss_event(bucket: str, key: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EXAMPLE_EVENTS / "oss-minimal.json").read_text())
    event["data"]["oss"]["bucket"]["name"] = bucket
    event["data"]["oss"]["object"]["key"] = key
    return event


@pytest.mark.parametrize(
    ("kind", "event", "value"),
    [
        (
            "webhook",
            {"webhook": {"path": "/example", "body": {"message": "hello"}}},
            '{"message":"hello"}',  # dataKey: body, the JSON text of the body
        ),
        (
            "kafka",
            {"kafka": {"topic": "topic-2", "partition": 1, "offset": 7, "value": {"a": 1}}},
            '{"a":1}',
        ),
        ("minio", oss_event("input", "reports/q1.csv"), "reports/q1.csv"),
        (
            "calendar",
            {
                "cron": {
                    "rule": "calendar-calendar-workflow-trigger",
                    "scheduledTime": "2025-01-01T00:00:10Z",
                }
            },
            "2025-01-01T00:00:10Z",  # eventTime, as RFC 3339 (the report says so)
        ),
    ],
)
def test_sensor_example_creates_the_original_workflow(
    kind: str,
    event: dict[str, Any],
    value: str,
    tmp_path: Path,
    valid_workflow: WorkflowChecker,
) -> None:
    """Each upstream Sensor example, with its EventSource, creates the Workflow it would have."""
    conversion = convert_fixtures(ES.format(kind), SENSOR.format(kind))
    rules = load(conversion, tmp_path)
    (workflow,) = workflows(rules, event)
    ran = resolve(workflow, conversion)
    valid_workflow(ran)
    assert ran["spec"] == expected_spec(SENSOR.format(kind), value)
    resource = original(SENSOR.format(kind))["spec"]["triggers"][0]["template"]["k8s"]
    assert ran["metadata"]["name"].startswith(
        resource["source"]["resource"]["metadata"]["generateName"]
    )


def test_minio_maps_to_the_oss_bucket_and_events(tmp_path: Path) -> None:
    """MinIO's bucket and event names become the OSS rule's; the endpoint is a to-do."""
    conversion = convert_fixtures(ES.format("minio"), SENSOR.format("minio"))
    load(conversion, tmp_path)
    (rule,) = conversion.rules
    assert rule["spec"]["source"] == {
        "oss": {
            "bucket": "input",
            "events": ["ObjectCreated:PutObject", "ObjectRemoved:DeleteObject"],
        }
    }
    assert any(n.severity == "manual" and n.path.endswith(".endpoint") for n in conversion.notes)


@pytest.mark.parametrize(
    ("sensor", "body", "fires"),
    [
        ("filter-with-data-simple-1", {"message": "well hello there"}, True),  # regex search
        ("filter-with-data-simple-1", {"message": "hey"}, True),
        ("filter-with-data-simple-1", {"message": "bye"}, False),
        ("filter-with-data-simple-4", {"value": 50.5}, True),
        ("filter-with-data-simple-4", {"value": 50}, False),
    ],
)
def test_data_filters_keep_their_meaning(
    sensor: str, body: dict[str, Any], fires: bool, tmp_path: Path
) -> None:
    """Upstream data filter examples pass and refuse the same events after conversion."""
    conversion = convert_fixtures(ES.format("webhook"), SENSOR.format(sensor))
    rules = load(conversion, tmp_path)
    created = workflows(rules, {"webhook": {"path": "/example", "body": body}})
    assert bool(created) is fires


def test_special_trigger_reports_args_and_fixed_name(tmp_path: Path) -> None:
    """argoWorkflow submit converts; its CLI args and fixed name are in the report."""
    conversion = convert_fixtures(ES.format("webhook"), SENSOR.format("special-workflow-trigger"))
    rules = load(conversion, tmp_path)
    (workflow,) = workflows(rules, {"webhook": {"path": "/example", "body": "hi"}})
    assert resolve(workflow, conversion)["spec"] == expected_spec(
        SENSOR.format("special-workflow-trigger"), "hi"
    )
    paths = {n.path: n.severity for n in conversion.notes}
    assert paths["spec.triggers[0].template.argoWorkflow.args"] == "dropped"
    assert (
        paths["spec.triggers[0].template.argoWorkflow.source.resource.metadata.name"] == "changed"
    )


MULTI = SENSOR.format("multi-dependencies")
# One batch: the webhook's request an hour before the calendar's tick, as the gate's clock.
WEBHOOK_A = {
    "webhook": {
        "path": "/example",
        "body": {"a": "from the webhook"},
        "time": "2025-01-01T00:00:00Z",
    }
}


def calendar_tick(rule: str) -> dict[str, Any]:
    return {"cron": {"rule": rule, "scheduledTime": "2025-01-01T00:00:10Z"}}


def multi_sensor(conditions: str | None = None, **webhook_dep: Any) -> list[Any]:
    """The upstream multi-dependencies Sensor with its EventSources, the trigger's
    `conditions` and the webhook dependency's fields changed as given."""
    sensor = original(MULTI)
    sensor["spec"]["dependencies"][0].update(webhook_dep)
    if conditions is not None:
        sensor["spec"]["triggers"][0]["template"]["conditions"] = conditions
    objects = [*read_objects((CONVERT / ES.format("webhook")).read_text(), "webhook.yaml")]
    objects += read_objects((CONVERT / ES.format("calendar")).read_text(), "calendar.yaml")
    return [*objects, (sensor, Origin("sensor.yaml", "Sensor", "multi-dependencies"))]


@pytest.mark.parametrize("webhook_first", [True, False])
def test_and_dependencies_become_one_gate_that_fires_the_original_workflow(
    webhook_first: bool, tmp_path: Path, valid_workflow: WorkflowChecker
) -> None:
    """Both dependencies, in either order, fire the gate once with the original Workflow."""
    conversion = convert_fixtures(ES.format("webhook"), ES.format("calendar"), MULTI)
    rules = load(conversion, tmp_path)
    (rule,) = conversion.rules
    name = rule["metadata"]["name"]
    gate = rule["spec"]["gate"]
    assert set(gate["members"]) == {"test_dependency_webhook", "test_dependency_calendar"}
    assert (gate["key"], gate["window"], gate["onTimeout"]) == (name, "24h", "drop")
    tick = calendar_tick(f"{name}.test_dependency_calendar")
    events = [WEBHOOK_A, tick] if webhook_first else [tick, WEBHOOK_A]
    assert gate_workflows(rules, events[:1]) == []
    (workflow,) = gate_workflows(rules, [*events, events[0]])  # a third event waits anew
    ran = resolve(workflow, conversion)
    valid_workflow(ran)
    assert ran["spec"] == expected_spec(MULTI, "from the webhook", "2025-01-01T00:00:10Z")
    assert ran["metadata"]["name"].startswith("multi-signal-workflow-")
    changed = [n.message for n in conversion.notes if n.severity == "changed"]
    assert any("grouped by arrival" in m for m in changed)
    assert any("waits 24h after its first event" in m for m in changed)


def test_a_gate_member_whose_filter_does_not_carry_over_keeps_the_gate_back() -> None:
    """One dependency of an AND with a filter that has no equivalent: no rule at all."""
    conversion = convert(multi_sensor(filters={"time": {"start": "04:00:00", "stop": "05:00:00"}}))
    assert conversion.rules == [] and conversion.templates == []
    messages = [n.message for n in conversion.notes if n.severity == "dropped"]
    assert any(
        "the gate for test-dependency-webhook && test-dependency-calendar" in m for m in messages
    )


def test_and_or_conditions_split_into_a_gate_and_a_plain_rule(tmp_path: Path) -> None:
    """`(a && b) || c`: a gate for a && b, a plain rule for c, the difference reported."""
    sensor = multi_sensor("(test-dependency-webhook && test-dependency-calendar) || solo")
    sensor[-1][0]["spec"]["dependencies"].append(
        {"name": "solo", "eventSourceName": "webhook", "eventName": "example"}
    )
    conversion = convert(sensor)
    rules = load(conversion, tmp_path)
    gate, solo_rule = conversion.rules
    assert set(gate["spec"]["gate"]["members"]) == {
        "test_dependency_webhook",
        "test_dependency_calendar",
    }
    assert solo_rule["metadata"]["name"].endswith("-solo") and "source" in solo_rule["spec"]
    (solo,) = gate_workflows(rules, [WEBHOOK_A])  # the webhook also waits in the gate
    arguments = resolve(solo, conversion)["spec"]["arguments"]["parameters"]
    values = {p["name"]: p["value"] for p in arguments}
    assert values == {"message1": "hello world", "message2": "hello world"}  # not solo's
    assert any("one rule per alternative" in n.message for n in conversion.notes)


@pytest.mark.parametrize(
    ("src", "value"),
    [
        ({"dataTemplate": "a={{ .Input.body.a }}"}, "a=from the webhook"),
        ({}, '{"a":"from the webhook"}'),  # no key: the whole body, as JSON
        ({"contextKey": "subject"}, "/example"),
        ({"dataKey": "body.missing", "value": "fallback"}, "fallback"),
    ],
)
def test_gate_parameters_read_their_members_event(
    src: dict[str, Any], value: str, tmp_path: Path
) -> None:
    """Every kind of parameter source reads the member's event in the gate's templates."""
    objects = multi_sensor()
    parameter = objects[-1][0]["spec"]["triggers"][0]["template"]["k8s"]["parameters"][0]
    parameter["src"] = {"dependencyName": "test-dependency-webhook", **src}
    conversion = convert(objects)
    rules = load(conversion, tmp_path)
    name = conversion.rules[0]["metadata"]["name"]
    (workflow,) = gate_workflows(
        rules, [WEBHOOK_A, calendar_tick(f"{name}.test_dependency_calendar")]
    )
    arguments = resolve(workflow, conversion)["spec"]["arguments"]["parameters"]
    assert arguments[0] == {"name": "message1", "value": value}


def test_conditions_reset_by_cron_is_reported_against_the_gate_window() -> None:
    """`conditionsReset` by cron is not carried over: the report names the gate's window."""
    objects = multi_sensor()
    template = objects[-1][0]["spec"]["triggers"][0]["template"]
    template["conditionsReset"] = [{"byTime": {"cron": "59 23 * * *", "timezone": "UTC"}}]
    conversion = convert(objects)
    assert len(conversion.rules) == 1
    (note,) = [n for n in conversion.notes if n.path.endswith(".conditionsReset")]
    assert note.severity == "dropped"
    assert "59 23 * * *" in note.message and "24h after its first event" in note.message


@pytest.mark.parametrize(
    ("conditions", "why"),
    [
        ("!test-dependency-webhook", "only dependency names"),
        ("test-dependency-webhook &&", "ends where a dependency name"),
        ("(test-dependency-webhook", "not closed"),
        (" && ".join(f"(a{i} || b{i})" for i in range(5)), "more than 16 alternatives"),
    ],
)
def test_conditions_that_are_not_rules_are_reported(conditions: str, why: str) -> None:
    """A negation, a broken expression or a huge expansion: reported, nothing written."""
    conversion = convert(multi_sensor(conditions))
    assert conversion.rules == []
    (note,) = [n for n in conversion.notes if n.path.endswith(".conditions")]
    assert note.severity == "dropped" and why in note.message


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ("a", [("a",)]),
        ("a && b", [("a", "b")]),
        ("a || b", [("a",), ("b",)]),
        ("(a && b) || c", [("a", "b"), ("c",)]),
        ("a && (b || c)", [("a", "b"), ("a", "c")]),
        ("a || (a && b)", [("a",)]),
        ("(a && b) || (b && a)", [("a", "b")]),
        ("dep-1 && dep.2", [("dep-1", "dep.2")]),
        ("((a))", [("a",)]),
    ],
)
def test_conditions_table(conditions: str, expected: list[tuple[str, ...]]) -> None:
    """Conditions become the sets of dependencies that each fire the trigger."""
    assert alternatives(conditions) == expected


Tree = str | tuple[str, Any, Any]
trees: st.SearchStrategy[Tree] = st.recursive(
    st.sampled_from(["a", "b", "c", "d-1"]),
    lambda inner: st.tuples(st.sampled_from(["&&", "||"]), inner, inner),
    max_leaves=8,
)


def _text(tree: Tree) -> str:
    return tree if isinstance(tree, str) else f"({_text(tree[1])} {tree[0]} {_text(tree[2])})"


def _holds(tree: Tree, happened: set[str]) -> bool:
    if isinstance(tree, str):
        return tree in happened
    left, right = _holds(tree[1], happened), _holds(tree[2], happened)
    return left and right if tree[0] == "&&" else left or right


@given(trees)
def test_conditions_become_an_equivalent_or_of_ands(tree: Tree) -> None:
    """For every set of dependencies that happened, some alternative holds iff Argo fires."""
    try:
        found = alternatives(_text(tree))
    except ConditionError as exc:
        assert "more than 16" in str(exc)
        return
    assert all(not set(a) < set(b) for a in found for b in found)  # none absorbs another
    names = ["a", "b", "c", "d-1"]
    for mask in range(1 << len(names)):
        happened = {n for i, n in enumerate(names) if mask >> i & 1}
        assert _holds(tree, happened) == any(set(a) <= happened for a in found)


def test_filters_on_paths_a_webhook_never_has_keep_the_rule_back() -> None:
    """Upstream expr examples name top-level paths: the report says so, no rule fires wider."""
    conversion = convert_fixtures(ES.format("webhook"), SENSOR.format("filter-with-expressions"))
    assert conversion.rules == []
    messages = [n.message for n in conversion.notes if n.origin.kind == "Sensor"]
    assert any("'a'" in m and "webhook data is header and body" in m for m in messages)
    assert any("not converted for this dependency" in m for m in messages)


def test_missing_event_source_is_reported() -> None:
    """A Sensor whose EventSource file was not given names it in the report."""
    conversion = convert_fixtures(SENSOR.format("sensor-to-existing-workflow-template"))
    assert conversion.rules == []
    assert any("EventSource bitbucket is not among" in n.message for n in conversion.notes)


WRITTEN = "written-webhook-or-kafka.yaml"


@pytest.mark.parametrize(
    ("body", "fires"),
    [
        (
            {
                "orderId": "A-1",
                "amount": 150,
                "currency": "USD",
                "region": "eu-west-1",
                "channel": "app",
            },
            True,
        ),
        ({"orderId": "A-1", "amount": 150, "currency": "USD", "region": "ap-south-1"}, False),
        ({"orderId": "A-1", "amount": 50, "currency": "USD", "region": "us-east-1"}, False),
        ({"orderId": "A-1", "amount": 150, "currency": "EUR", "region": "us-east-1"}, False),
    ],
)
def test_or_conditions_make_one_rule_per_dependency(
    body: dict[str, Any], fires: bool, tmp_path: Path, valid_workflow: WorkflowChecker
) -> None:
    """`http || stream`: the webhook side keeps its expr and data filters and parameters."""
    conversion = convert_fixtures(WRITTEN)
    rules = load(conversion, tmp_path)
    assert {r["metadata"]["name"] for r in conversion.rules} == {
        "orders-check-http",
        "orders-check-stream",
    }
    created = workflows(rules, {"webhook": {"path": "/orders", "body": body}})
    assert bool(created) is fires
    if fires:
        ran = resolve(created[0], conversion)
        valid_workflow(ran)
        assert ran["spec"]["arguments"]["parameters"][:2] == [
            {"name": "order", "value": "A-1"},
            {"name": "note", "value": "order app"},  # operation: append
        ]
        assert ran["metadata"]["labels"]["team"] == "risk"


def test_an_and_of_webhook_and_kafka_keeps_each_members_filters(tmp_path: Path) -> None:
    """`http && stream`: each member keeps its filters; the Kafka rate limit is reported."""
    objects = read_objects((CONVERT / WRITTEN).read_text(), WRITTEN)
    sensor = next(o for o, _ in objects if o["kind"] == "Sensor")
    sensor["spec"]["triggers"][0]["template"]["conditions"] = "http && stream"
    conversion = convert(objects)
    rules = load(conversion, tmp_path)
    (gate,) = [r["spec"]["gate"] for r in conversion.rules]
    plain = convert_fixtures(WRITTEN).rules
    for member, side in (("http", "orders-check-http"), ("stream", "orders-check-stream")):
        (rule,) = [r["spec"] for r in plain if r["metadata"]["name"] == side]
        assert gate["members"][member] == {
            "source": rule["source"],
            **({"filter": rule["filter"]} if "filter" in rule else {}),
        }
    refused = {"orderId": "A-1", "amount": 50, "currency": "USD", "region": "us-east-1"}
    assert workflows(rules, {"webhook": {"path": "/orders", "body": refused}}) == []
    assert any(
        "rate limit is not carried over to the gate member stream" in n.message
        for n in conversion.notes
    )


def test_kafka_side_uses_template_defaults_and_image_parameter(
    tmp_path: Path, valid_workflow: WorkflowChecker
) -> None:
    """The Kafka side: dataTemplate, the other side's default, a dest inside the template."""
    conversion = convert_fixtures(WRITTEN)
    rules = load(conversion, tmp_path)
    event = {
        "kafka": {
            "topic": "orders",
            "offset": 3,
            "value": {"orderId": "B-2", "amount": 100, "version": "-v2"},
        }
    }
    (workflow,) = workflows(rules, event)
    ran = resolve(workflow, conversion)
    valid_workflow(ran)
    assert (
        ran["spec"]["templates"][0]["container"]["image"] == "registry.example.com/check:latest-v2"
    )
    values = {p["name"]: p["value"] for p in ran["spec"]["arguments"]["parameters"]}
    assert values["order"] == "B-2" and values["note"] == "order web"
    stream = next(r for r in conversion.rules if r["metadata"]["name"] == "orders-check-stream")
    assert stream["spec"]["source"]["kafka"]["group"] == "order-sensor"
    assert stream["spec"]["rateLimit"] == {"perSecond": 2.0, "burst": 1}  # 120 a minute


def test_workflow_completion_becomes_a_workflow_rule(
    tmp_path: Path, valid_workflow: WorkflowChecker
) -> None:
    """A resource source on finished Workflows becomes a `workflow` rule with its arguments."""
    name = "written-workflow-completion.yaml"
    conversion = convert_fixtures(name)
    rules = load(conversion, tmp_path)
    finished = {
        "metadata": {
            "name": "load-7",
            "namespace": "data",
            "uid": "u-1",
            "labels": {"team": "data"},
        },
        "spec": {"arguments": {"parameters": [{"name": "day", "value": "2025-06-01"}]}},
        "status": {"phase": "Succeeded", "finishedAt": "2025-06-01T03:00:00Z"},
    }
    (workflow,) = workflows(rules, {"workflow": finished})
    valid_workflow(workflow)
    assert workflow["spec"] == {
        "workflowTemplateRef": {"name": "load-report"},
        "arguments": {
            "parameters": [
                {"name": "upstream", "value": "load-7"},
                {"name": "day", "value": "2025-06-01"},
            ]
        },
    }
    failed = copy.deepcopy(finished)
    failed["status"]["phase"] = "Failed"
    assert workflows(rules, {"workflow": failed}) == []
    assert conversion.rules[0]["spec"]["source"]["workflow"]["selector"] == {
        "matchLabels": {"team": "data"}
    }


LITERAL = st.text(
    st.characters(codec="ascii", exclude_characters=".^$*+?()[]{}|\\"), min_size=1, max_size=6
)


@given(
    LITERAL,
    st.sampled_from(["", "^"]),
    st.sampled_from(["", "$"]),
    st.tuples(st.text(max_size=4), st.booleans(), st.text(max_size=4)),
)
def test_regex_filters_become_patterns_that_agree_with_regex_search(
    body: str, start: str, end: str, subject: tuple[str, bool, str]
) -> None:
    """A literal regex, anchored or not, becomes a pattern matching what Go's search does."""
    regex = f"{start}{body}{end}"
    condition, _ = data_condition({"type": "string", "value": [regex]}, ("body", "x"))
    assert condition is not None and condition.alternatives is not None
    pattern = compile_pattern({"body": {"x": condition.alternatives}})
    before, contains, after = subject
    text = before + (body if contains else "") + after
    event = {"body": {"x": text}}
    expected = re.search(regex, text) is not None
    assert pattern.matches(event) is expected
    assert compile_expression(condition.cel).evaluate({"event": event}) is expected


@pytest.mark.parametrize(
    ("expr", "event", "result"),
    [
        ('a == "b" || c == 10', {"a": "x", "c": 10}, True),
        ('a == "b" || c != 10', {"a": "x", "c": 10}, False),
        ("(c + 1) * 2 > 21 && !e", {"c": 10, "e": False}, True),
        ("e == false", {"e": True}, False),
    ],
)
def test_govaluate_expressions_become_cel(expr: str, event: dict[str, Any], result: bool) -> None:
    """govaluate comparisons, arithmetic and logic evaluate the same in CEL."""
    cel, why = govaluate_to_cel(expr, {n: f"event.body.{n}" for n in ("a", "c", "e")})
    assert cel is not None, why
    assert compile_expression(cel).evaluate({"event": {"body": event}}) is result


def test_govaluate_regex_operator_is_refused() -> None:
    """`=~` has no converted form: the reason names it."""
    cel, why = govaluate_to_cel('a =~ "x.*"', {"a": "event.body.a"})
    assert cel is None and why is not None and "=~" in why


@pytest.mark.parametrize(
    ("interval", "schedule"),
    [
        ("10s", "*/10 * * * * *"),
        ("1m", "* * * * *"),
        ("15m", "*/15 * * * *"),
        ("1h", "0 * * * *"),
        ("6h", "0 */6 * * *"),
        ("24h", "0 0 * * *"),
        ("7s", None),
        ("90m", None),
    ],
)
def test_calendar_intervals_become_schedules(interval: str, schedule: str | None) -> None:
    """Intervals that divide a minute, hour or day become cron fields; others are refused."""
    assert interval_schedule(interval) == schedule


def test_source_side_filter_keeps_the_rule_back() -> None:
    """An EventSource's own filter expression cannot be dropped silently: not converted."""
    conversion = convert_fixtures(ES.format("webhook"), SENSOR.format("webhook"))
    assert len(conversion.rules) == 1
    objects = read_objects((CONVERT / ES.format("webhook")).read_text(), "es.yaml")
    objects[0][0]["spec"]["webhook"]["example"]["filter"] = {"expression": "body.a == 'x'"}
    sensor = read_objects((CONVERT / SENSOR.format("webhook")).read_text(), "sensor.yaml")
    conversion = convert([*objects, *sensor])
    assert conversion.rules == []
    (note,) = [n for n in conversion.notes if n.path == "spec.webhook.example.filter"]
    assert note.severity == "dropped" and "not converted" in note.message


def test_fields_no_reader_knows_are_reported() -> None:
    """Kafka's connectionBackoff is read by nobody: the report names it."""
    conversion = convert_fixtures(ES.format("kafka"), SENSOR.format("kafka"))
    paths = {n.path: n.severity for n in conversion.notes}
    assert paths["spec.kafka.example.connectionBackoff"] == "dropped"


def test_repeated_rule_names_are_made_unique() -> None:
    """Two Sensors of one name in two namespaces give two rules of different names."""
    objects = read_objects((CONVERT / ES.format("webhook")).read_text(), "es.yaml")
    for namespace in ("team-a", "team-b"):
        (sensor,) = read_objects((CONVERT / SENSOR.format("webhook")).read_text(), "s.yaml")
        sensor[0]["metadata"]["namespace"] = namespace
        objects.append((sensor[0], Origin("s.yaml", "Sensor", "webhook", namespace)))
    names = [r["metadata"]["name"] for r in convert(objects).rules]
    assert names == ["webhook-webhook-workflow-trigger", "webhook-webhook-workflow-trigger-team-b"]


def test_every_fixture_converts_together_into_valid_objects(tmp_path: Path) -> None:
    """All fixtures at once: one rule set that loads, and templates valid for Argo's schema."""
    conversion = convert_fixtures(*sorted(p.name for p in CONVERT.glob("*.yaml")))
    rules = load(conversion, tmp_path)
    routed = {r.gate.rule.name if r.gate else r.name for r in rules.by_name.values()}
    assert routed == {r["metadata"]["name"] for r in conversion.rules}  # a gate: one per member
    assert len(conversion.rules) >= 15 and any("gate" in r["spec"] for r in conversion.rules)
    if not SHARED_SCHEMA.exists():
        pytest.skip("../shared/argo/schema.json is absent")
    from hera.workflows.models import WorkflowTemplate
    from jsonschema import Draft202012Validator

    definitions = json.loads(SHARED_SCHEMA.read_text())["definitions"]
    schema = Draft202012Validator(
        {
            "$ref": "#/definitions/io.argoproj.workflow.v1alpha1.WorkflowTemplate",
            "definitions": definitions,
        }
    )
    for template in conversion.templates:
        WorkflowTemplate.model_validate(template)
        errors = [f"{list(e.path)}: {e.message}" for e in schema.iter_errors(template)]
        assert not errors, (template["metadata"]["name"], errors)


def test_calendar_details_carry_over(tmp_path: Path) -> None:
    """Exclusion dates filter ticks, metadata is a constant, catch-up replays every tick."""
    calendar = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "EventSource",
        "metadata": {"name": "calendar"},
        "spec": {
            "calendar": {
                "example-with-interval": {
                    "schedule": "30 * * * *",
                    "timezone": "America/New_York",
                    "metadata": {"hello": "world"},
                    "exclusionDates": ["EXDATE:20250102T150405Z"],
                    "persistence": {
                        "catchup": {"enabled": True, "maxDuration": "5m"},
                        "configMap": {"name": "cm", "createIfNotExist": True},
                    },
                }
            }
        },
    }
    sensor = original(SENSOR.format("calendar"))
    sensor["spec"]["triggers"][0]["template"]["k8s"]["parameters"][0]["src"]["dataKey"] = (
        "metadata.hello"
    )
    conversion = convert(
        [
            (calendar, Origin("es.yaml", "EventSource", "calendar")),
            (sensor, Origin("s.yaml", "Sensor", "calendar")),
        ]
    )
    rules = load(conversion, tmp_path)
    (rule,) = conversion.rules
    assert rule["spec"]["source"]["cron"] == {
        "schedules": ["30 * * * *"],
        "timezone": "America/New_York",
        "catchUp": "all",
        "startingDeadline": "5m",
    }
    assert rule["spec"]["workflow"]["parameters"] == {"message": "world"}
    name = rule["metadata"]["name"]
    assert workflows(rules, {"cron": {"rule": name, "scheduledTime": "2025-01-02T15:30:00Z"}}) == []
    (created,) = workflows(rules, {"cron": {"rule": name, "scheduledTime": "2025-01-03T15:30:00Z"}})
    assert created["spec"]["arguments"]["parameters"] == [{"name": "message", "value": "world"}]


def test_webhook_secret_and_unconvertible_template_are_reported() -> None:
    """authSecret becomes a bearer token variable to set; a Go template with functions is refused."""
    (es,) = read_objects((CONVERT / ES.format("webhook")).read_text(), "es.yaml")
    es[0]["spec"]["webhook"]["example"]["authSecret"] = {"name": "hook-token", "key": "token"}
    (sensor,) = read_objects((CONVERT / SENSOR.format("webhook")).read_text(), "s.yaml")
    parameter = sensor[0]["spec"]["triggers"][0]["template"]["k8s"]["parameters"][0]
    parameter["src"] = {"dependencyName": "test-dep", "dataTemplate": "{{ .Input.body | toJson }}"}
    conversion = convert([es, sensor])
    (rule,) = conversion.rules
    assert rule["spec"]["source"]["webhook"]["auth"] == {"bearerTokenEnv": "HOOK_TOKEN_TOKEN"}
    assert "parameters" not in rule["spec"]["workflow"]  # the template's default stays
    severities = {n.path: n.severity for n in conversion.notes}
    assert severities["spec.webhook.example.authSecret"] == "manual"
    assert severities["spec.triggers[0].template.k8s.parameters[0].src.dataTemplate"] == "dropped"


def test_cronjob_with_two_containers_reports_the_second() -> None:
    """A container template runs one container: the others are in the report."""
    (job,) = read_objects((CONVERT / "k8s-cronjob.yaml").read_text(), "job.yaml")[:1]
    pod = job[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["containers"].append({"name": "sidecar", "image": "busybox"})
    conversion = convert([job])
    assert conversion.templates[0]["spec"]["templates"][0]["container"]["image"] == "busybox:1.28"
    assert any(
        n.path.endswith("containers[1:]") and n.severity == "dropped" for n in conversion.notes
    )


def test_webhook_endpoint_a_rule_cannot_have_is_reported() -> None:
    """An endpoint with characters a rule's path refuses is reported, not written invalid."""
    (es,) = read_objects((CONVERT / ES.format("webhook")).read_text(), "es.yaml")
    es[0]["spec"]["webhook"]["example"]["endpoint"] = "/hooks/{id}"
    sensor = read_objects((CONVERT / SENSOR.format("webhook")).read_text(), "s.yaml")
    conversion = convert([es, *sensor])
    assert conversion.rules == []
    assert {n.path: n.severity for n in conversion.notes}[
        "spec.webhook.example.endpoint"
    ] == "dropped"
