"""Routing: the index finds candidates by exact key, then patterns and CEL decide."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trigger.decoders.cron import cron_tick
from trigger.decoders.kafka import decode_kafka_record
from trigger.decoders.oss import decode_eventbridge
from trigger.decoders.webhook import decode_webhook
from trigger.events import Event
from trigger.rules.loader import load_rules
from trigger.rules.router import RuleSet

RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: csv}
spec:
  source: {oss: {bucket: raw, key: {prefix: in/, suffix: .csv}}}
  workflow: {template: t}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: any-in-raw}
spec:
  source: {oss: {bucket: raw, events: ["oss:ObjectRemoved:*"]}}
  workflow: {template: t}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: big}
spec:
  source: {oss: {bucket: raw, key: {prefix: in/}}}
  filter: {pattern: {size: [{numeric: [">", 1000]}]}}
  workflow: {template: t}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: orders}
spec:
  source: {kafka: {topics: [orders, returns]}}
  filter: {expr: 'event.value.amount >= 100'}
  workflow: {template: t}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: orders-text}
spec:
  source: {kafka: {topics: [orders], format: text}}
  workflow: {template: t}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: other-cluster}
spec:
  source: {kafka: {topics: [orders], cluster: eu}}
  workflow: {template: t}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: hook}
spec:
  source: {webhook: {path: /hooks/a}}
  filter: {pattern: {body: {action: [opened]}}}
  workflow: {template: t}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: hook-put}
spec:
  source: {webhook: {path: /hooks/a, methods: [PUT]}}
  workflow: {template: t}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: nightly}
spec:
  source: {cron: {schedules: ["0 2 * * *"]}}
  workflow: {template: t}
"""


@pytest.fixture
def rules(write_rules: Callable[..., Path]) -> RuleSet:
    return load_rules([write_rules(RULES)])


def oss(
    key: str, *, bucket: str = "raw", size: int = 10, kind: str = "ObjectCreated:PutObject"
) -> Event:
    (event,) = decode_eventbridge(
        {
            "specversion": "1.0",
            "id": f"id-{key}",
            "source": "acs.oss",
            "type": f"oss:{kind}",
            "time": "2025-01-01T08:00:00Z",
            "data": {
                "eventName": kind,
                "eventTime": "2025-01-01T08:00:00Z",
                "region": "cn-hangzhou",
                "oss": {
                    "bucket": {"name": bucket, "ownerIdentity": "1"},
                    "object": {"key": key, "size": size, "eTag": "AB"},
                },
            },
        }
    )
    return event


def kafka(value: bytes, topic: str = "orders") -> Event:
    return decode_kafka_record(topic, 0, 7, 1735718400123, b"k", value, [])


def names(rules: RuleSet, event: Event, **kw: str) -> list[str]:
    return sorted(m.rule.name for m in rules.route(event, **kw).matches)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (oss("in/a.csv"), ["csv"]),
        (oss("in/a.csv", size=5000), ["big", "csv"]),
        (oss("in/a.json", size=5000), ["big"]),
        (oss("out/a.csv"), []),
        (oss("in/a.csv", bucket="other"), []),
        (oss("in/a.csv", kind="ObjectRemoved:DeleteObject"), ["any-in-raw"]),
        (oss("in", size=5000), []),
    ],
)
def test_oss_routing(rules: RuleSet, event: Event, expected: list[str]) -> None:
    """OSS events match by bucket, event type, key filter and pattern."""
    assert names(rules, event) == expected


def test_kafka_routing_by_topic_and_cluster(rules: RuleSet) -> None:
    """Kafka events meet only the rules of their (cluster, topic)."""
    assert names(rules, kafka(b'{"amount": 150}')) == ["orders", "orders-text"]
    assert names(rules, kafka(b'{"amount": 150}', topic="returns")) == ["orders"]
    assert names(rules, kafka(b'{"amount": 150}'), cluster="eu") == ["other-cluster"]
    assert names(rules, kafka(b'{"amount": 1}', topic="nope")) == []


def test_undecodable_value_is_poison_for_json_rules_only(rules: RuleSet) -> None:
    """A value a json rule cannot decode fails that rule; a text rule still matches."""
    routed = rules.route(kafka(b"not json"))
    assert [m.rule.name for m in routed.matches] == ["orders-text"]
    assert [(f.rule.name, f.kind) for f in routed.failures] == [("orders", "decode")]


def test_expression_error_is_no_match(rules: RuleSet) -> None:
    """A CEL evaluation error is reported as a failure and counts as no match."""
    routed = rules.route(kafka(b'{"other": 1}', topic="returns"))
    assert routed.matches == ()
    assert [(f.rule.name, f.kind) for f in routed.failures] == [("orders", "expression")]


def test_webhook_routing(rules: RuleSet) -> None:
    """Webhook events match by path, then pattern on the body."""
    at = datetime(2025, 1, 1, tzinfo=UTC)
    opened = decode_webhook(
        "/hooks/a",
        "POST",
        {"content-type": "application/json"},
        {},
        b'{"action": "opened"}',
        received=at,
    )
    closed = decode_webhook(
        "/hooks/a",
        "POST",
        {"content-type": "application/json"},
        {},
        b'{"action": "closed"}',
        received=at,
    )
    elsewhere = decode_webhook(
        "/hooks/b",
        "POST",
        {"content-type": "application/json"},
        {},
        b'{"action": "opened"}',
        received=at,
    )
    assert names(rules, opened) == ["hook"]
    assert names(rules, closed) == []
    assert names(rules, elsewhere) == []


def hook(method: str, path: str = "/hooks/a") -> Event:
    body = b'{"action": "opened"}'
    at = datetime(2025, 1, 1, tzinfo=UTC)
    return decode_webhook(path, method, {"content-type": "application/json"}, {}, body, received=at)


@pytest.mark.parametrize(
    ("method", "expected"), [("POST", ["hook"]), ("PUT", ["hook-put"]), ("GET", [])]
)
def test_webhook_rules_take_only_their_methods(
    rules: RuleSet, method: str, expected: list[str]
) -> None:
    """Rules sharing a path each match only the methods they list."""
    assert names(rules, hook(method)) == expected


def test_webhook_methods_are_the_union_on_a_path(rules: RuleSet) -> None:
    """A path accepts the methods of all its rules; an unknown path accepts none."""
    assert rules.webhook_methods("/hooks/a") == frozenset({"POST", "PUT"})
    assert rules.webhook_methods("/hooks/b") == frozenset()


def test_cron_tick_routes_to_its_rule(rules: RuleSet) -> None:
    """A cron tick matches exactly the rule it names."""
    at = datetime(2025, 1, 1, 2, tzinfo=UTC)
    assert names(rules, cron_tick("nightly", "0 2 * * *", at, "UTC")) == ["nightly"]
    assert names(rules, cron_tick("csv", "0 2 * * *", at, "UTC")) == []


@pytest.mark.parametrize(
    ("rule", "event", "reason"),
    [
        ("csv", oss("out/a.csv"), "key 'out/a.csv' does not match"),
        ("csv", oss("in/a.csv", bucket="x"), "bucket 'x' is not 'raw'"),
        ("any-in-raw", oss("in/a.csv"), "event type 'ObjectCreated:PutObject' is not one of"),
        ("big", oss("in/a.csv"), "filter.pattern: event.size is 10, expected numeric > 1000"),
        ("orders", kafka(b'{"amount": 1}'), "filter.expr is false"),
        ("orders", kafka(b"nope"), "value is not json"),
        ("hook", oss("in/a.csv"), "rule takes webhook events, not oss events"),
        ("hook-put", hook("POST"), "method 'POST' is not one of ['PUT']"),
    ],
)
def test_explain_says_why(rules: RuleSet, rule: str, event: Event, reason: str) -> None:
    """explain() names the first reason a rule does not match."""
    assert reason in (rules.explain(rules.by_name[rule], event) or "")


def test_explain_names_every_failing_field(write_rules: Callable[..., Path]) -> None:
    """A pattern miss names each failing field, the value seen (or missing) and what was expected."""
    text = (
        "apiVersion: trigger/v1\nkind: Rule\nmetadata: {name: big-orders}\nspec:\n"
        "  source: {kafka: {topics: [orders]}}\n"
        "  filter: {pattern: {value: {type: [created, paid], amount: [{numeric: ['>=', 100]}],"
        " region: [{prefix: cn-}]}}}\n  workflow: {template: t}\n"
    )
    rules = load_rules([write_rules(text)])
    reason = rules.explain(rules.by_name["big-orders"], kafka(b'{"type": "refund", "amount": 50}'))
    assert reason == (
        'filter.pattern: event.value.type is "refund", expected "created" or "paid"; '
        "event.value.amount is 50, expected numeric >= 100; "
        'event.value.region is missing, expected prefix "cn-"'
    )


def test_explain_groups_the_rules_of_other_sources(rules: RuleSet) -> None:
    """explain_misses puts every rule of another source on one line, by source."""
    lines = rules.explain_misses(hook("PUT"), {"hook-put"})
    assert lines == [
        "7 rules are for other sources (cron: nightly; kafka: orders, orders-text, "
        "other-cluster; oss: csv, any-in-raw, big)",
        "rule hook: no match: method 'PUT' is not one of ['POST']",
    ]


def test_explain_is_none_on_match(rules: RuleSet) -> None:
    """explain() returns None for a rule that matches."""
    assert rules.explain(rules.by_name["csv"], oss("in/a.csv")) is None


def test_candidates_do_not_grow_with_unrelated_rules(tmp_path: Path) -> None:
    """With 2,000 rules on other buckets and prefixes, an event meets only its own rules."""
    docs = []
    for i in range(1000):
        docs.append(
            f"apiVersion: trigger/v1\nkind: Rule\nmetadata: {{name: b{i}}}\nspec:\n  source: {{oss: {{bucket: bucket-{i}}}}}\n  workflow: {{template: t}}\n"
        )
        docs.append(
            f"apiVersion: trigger/v1\nkind: Rule\nmetadata: {{name: p{i}}}\nspec:\n  source: {{oss: {{bucket: shared, key: {{prefix: p{i}/}}}}}}\n  workflow: {{template: t}}\n"
        )
    (tmp_path / "many.yaml").write_text("---\n".join(docs))
    rules = load_rules([tmp_path])
    assert [r.name for r in rules.candidates(oss("p7/x", bucket="shared"))] == ["p7"]
    assert [r.name for r in rules.candidates(oss("x", bucket="bucket-3"))] == ["b3"]


def test_poll_rules_take_only_polled_events(write_rules: Callable[..., Path]) -> None:
    """A rule with poll: takes only events its poller lists; push rules only pushed ones."""
    text = (
        RULES.split("---", maxsplit=1)[0]
        + "---\n"
        + (
            "apiVersion: trigger/v1\nkind: Rule\nmetadata: {name: polled}\nspec:\n"
            "  source: {oss: {bucket: raw, key: {prefix: in/}, poll: {endpoint: 'http://127.0.0.1:1', region: cn-hangzhou}}}\n"
            "  workflow: {template: t}\n"
        )
    )
    rules = load_rules([write_rules(text)])
    pushed = oss("in/a.csv")
    polled = Event(
        pushed.id,
        pushed.source,
        pushed.type,
        pushed.subject,
        pushed.time,
        pushed.data,
        {**pushed.fields, "polled": True},
    )
    assert names(rules, pushed) == ["csv"]
    assert names(rules, polled) == ["polled"]
    assert "rule polls its bucket" in (rules.explain(rules.by_name["polled"], pushed) or "")
