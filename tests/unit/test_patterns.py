"""EventBridge content patterns: the AWS documentation's own examples, edge cases, errors."""

from __future__ import annotations

from typing import Any

import pytest

from trigger.errors import PatternError, TriggerError
from trigger.rules.patterns import Pattern, compile_pattern, match_leaf

# The sample event of the EventBridge content-filtering guide and event-ruler's README.
EC2_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "ddddd4-aaaa-7777-4444-345dd43cc333",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "012345679012",
    "time": "2017-10-02T16:24:49Z",
    "region": "us-east-1",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"],
    "detail": {
        "c-count": 5,
        "d-count": 3,
        "x-limit": 301.8,
        "source-ip": "10.0.0.33",
        "instance-id": "i-000000aaaaaa00000",
        "state": "running",
    },
}

# The sample event of the guide's "null values and empty strings" page.
NULL_EVENT: dict[str, Any] = {
    "version": "0",
    "detail-type": "EC2 Instance Launch Successful",
    "source": "aws.autoscaling",
    "resources": [],
    "detail": {"eventVersion": "", "responseElements": None},
}

CLOUDWATCH_EVENT: dict[str, Any] = {
    "source": "aws.cloudwatch",
    "metricName": "CPUUtilization",
    "namespace": "AWS/RDS",
    "detail": {"detail-type": "CloudWatch Alarm State Change"},
}

EMPLOYEES_EVENT: dict[str, Any] = {
    "employees": [
        [
            {"firstName": "John", "lastName": "Doe"},
            {"firstName": "Anna", "lastName": "Smith"},
        ],
        [{"firstName": "Peter", "lastName": "Jones"}],
    ]
}


def detail(**fields: Any) -> dict[str, Any]:
    """An event whose `detail` object holds the given fields."""
    return {"detail": fields}


DOC_CASES = [
    # eb-event-patterns: the EC2 instance-termination example.
    pytest.param(
        {
            "source": ["aws.ec2"],
            "detail-type": ["EC2 Instance State-change Notification"],
            "detail": {"state": ["running"]},
        },
        EC2_EVENT,
        True,
        id="doc-exact-nested",
    ),
    pytest.param({"detail": {"state": ["terminated"]}}, EC2_EVENT, False, id="doc-exact-miss"),
    pytest.param({"source": ["aws.ec2", "aws.fargate"]}, EC2_EVENT, True, id="doc-value-list-or"),
    pytest.param(
        {"source": ["aws.ec2"], "detail": {"missing": ["x"]}},
        EC2_EVENT,
        False,
        id="doc-every-field-required",
    ),
    # Arrays: the event array and the pattern array intersect.
    pytest.param(
        {
            "resources": [
                "arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000",
                "arn:aws:ec2:us-east-1:111122223333:instance/i-b188560f",
            ]
        },
        EC2_EVENT,
        True,
        id="doc-array-intersection",
    ),
    pytest.param({"resources": ["arn:other"]}, EC2_EVENT, False, id="doc-array-disjoint"),
    # Null values and empty strings.
    pytest.param({"detail": {"eventVersion": [""]}}, NULL_EVENT, True, id="doc-empty-string"),
    pytest.param({"detail": {"responseElements": [None]}}, NULL_EVENT, True, id="doc-null"),
    pytest.param(
        {"detail": {"responseElements": [""]}}, NULL_EVENT, False, id="doc-empty-not-null"
    ),
    pytest.param({"detail": {"eventVersion": [None]}}, NULL_EVENT, False, id="doc-null-not-empty"),
    # Prefix and suffix, with and without case.
    pytest.param({"time": [{"prefix": "2017-10-02"}]}, EC2_EVENT, True, id="doc-prefix"),
    pytest.param({"time": [{"prefix": "2017-10-03"}]}, EC2_EVENT, False, id="doc-prefix-miss"),
    pytest.param({"source": [{"suffix": "ec2"}]}, EC2_EVENT, True, id="doc-suffix"),
    pytest.param(
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        detail(service="eventbridge"),
        True,
        id="doc-prefix-ignore-case",
    ),
    pytest.param(
        {"detail": {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}},
        detail(service="xEVENTB"),
        False,
        id="doc-prefix-ignore-case-miss",
    ),
    pytest.param(
        {"detail": {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}},
        detail(FileName="IMAGE.PNG"),
        True,
        id="doc-suffix-ignore-case",
    ),
    pytest.param(
        {"FileName": [{"suffix": ".png"}]},
        {"FileName": "a.PNG"},
        False,
        id="doc-suffix-is-case-sensitive",
    ),
    pytest.param(
        {"source": [{"equals-ignore-case": "AWS.EC2"}]},
        EC2_EVENT,
        True,
        id="doc-equals-ignore-case",
    ),
    pytest.param(
        {"Name": [{"equals-ignore-case": "alice"}]},
        {"Name": "Alicia"},
        False,
        id="doc-equals-ignore-case-whole-value",
    ),
    # Wildcards.
    pytest.param(
        {"EventBusArn": [{"wildcard": "arn:aws:events:us-east-1:*:event-bus/*"}]},
        {"EventBusArn": "arn:aws:events:us-east-1:123456789012:event-bus/default"},
        True,
        id="doc-wildcard",
    ),
    pytest.param(
        {"FileName": [{"wildcard": "dir/*.png"}]},
        {"FileName": "dir/a/b.png"},
        True,
        id="doc-wildcard-spans-slashes",
    ),
    pytest.param(
        {"FileName": [{"wildcard": "dir/*.png"}]},
        {"FileName": "dir/a.jpg"},
        False,
        id="doc-wildcard-miss",
    ),
    # Anything-but.
    pytest.param(
        {"detail": {"state": [{"anything-but": "initializing"}]}},
        EC2_EVENT,
        True,
        id="doc-anything-but-string",
    ),
    pytest.param(
        {"detail": {"state": [{"anything-but": "running"}]}},
        EC2_EVENT,
        False,
        id="doc-anything-but-string-excluded",
    ),
    pytest.param(
        {"detail": {"x-limit": [{"anything-but": 123}]}},
        EC2_EVENT,
        True,
        id="doc-anything-but-number",
    ),
    pytest.param(
        {"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}},
        EC2_EVENT,
        True,
        id="doc-anything-but-list",
    ),
    pytest.param(
        {"detail": {"state": [{"anything-but": ["stopped", "running"]}]}},
        EC2_EVENT,
        False,
        id="doc-anything-but-list-excluded",
    ),
    pytest.param(
        {"detail": {"x-limit": [{"anything-but": [100, 200, 301.8]}]}},
        EC2_EVENT,
        False,
        id="doc-anything-but-number-list",
    ),
    pytest.param(
        {"detail": {"state": [{"anything-but": {"prefix": "init"}}]}},
        EC2_EVENT,
        True,
        id="doc-anything-but-prefix",
    ),
    pytest.param(
        {"detail": {"state": [{"anything-but": {"prefix": "run"}}]}},
        EC2_EVENT,
        False,
        id="doc-anything-but-prefix-excluded",
    ),
    pytest.param(
        {"detail": {"FileName": [{"anything-but": {"suffix": ".txt"}}]}},
        detail(FileName="notes.txt"),
        False,
        id="doc-anything-but-suffix",
    ),
    pytest.param(
        {
            "detail": {
                "state": [{"anything-but": {"equals-ignore-case": ["Stopped", "OverLoaded"]}}]
            }
        },
        detail(state="STOPPED"),
        False,
        id="doc-anything-but-ignore-case-list",
    ),
    pytest.param(
        {"detail": {"state": [{"anything-but": {"equals-ignore-case": "Stopped"}}]}},
        detail(state="running"),
        True,
        id="doc-anything-but-ignore-case",
    ),
    pytest.param(
        {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]},
        {"FilePath": "/usr/lib/x.so"},
        False,
        id="doc-anything-but-wildcard",
    ),
    pytest.param(
        {"FilePath": [{"anything-but": {"wildcard": ["*/lib/*", "*/bin/*"]}}]},
        {"FilePath": "/home/x"},
        True,
        id="doc-anything-but-wildcard-list",
    ),
    # Numeric.
    pytest.param(
        {
            "detail": {
                "c-count": [{"numeric": [">", 0, "<=", 5]}],
                "d-count": [{"numeric": ["<", 10]}],
                "x-limit": [{"numeric": ["=", 3.018e2]}],
            }
        },
        EC2_EVENT,
        True,
        id="doc-numeric",
    ),
    pytest.param(
        {"detail": {"c-count": [{"numeric": [">", 5, "<=", 10]}]}},
        EC2_EVENT,
        False,
        id="doc-numeric-open-lower-bound",
    ),
    pytest.param({"Price": [100]}, {"Price": 100.0}, True, id="doc-number-equals"),
    # IP addresses.
    pytest.param(
        {"detail": {"source-ip": [{"cidr": "10.0.0.0/24"}]}}, EC2_EVENT, True, id="doc-cidr"
    ),
    pytest.param(
        {"detail": {"source-ip": [{"cidr": "10.0.1.0/24"}]}}, EC2_EVENT, False, id="doc-cidr-miss"
    ),
    # Exists: only leaf nodes count.
    pytest.param({"detail": {"c-count": [{"exists": True}]}}, EC2_EVENT, True, id="doc-exists"),
    pytest.param(
        {"detail": {"c-count": [{"exists": False}]}}, EC2_EVENT, False, id="doc-not-exists-present"
    ),
    pytest.param(
        {"detail": {"e-count": [{"exists": False}]}}, EC2_EVENT, True, id="doc-not-exists-absent"
    ),
    pytest.param(
        {"detail": {"c-count": [{"exists": False}]}},
        detail(**{"c-count": {"c1": 100}}),
        True,
        id="doc-not-exists-object-is-not-leaf",
    ),
    pytest.param(
        {"detail": {"c-count": [{"exists": True}]}},
        detail(**{"c-count": {"c1": 100}}),
        False,
        id="doc-exists-object-is-not-leaf",
    ),
    # $or.
    pytest.param(
        {
            "source": ["aws.cloudwatch"],
            "$or": [
                {"metricName": ["CPUUtilization", "ReadLatency"]},
                {"namespace": ["AWS/EC2", "AWS/ES"]},
            ],
        },
        CLOUDWATCH_EVENT,
        True,
        id="doc-or",
    ),
    pytest.param(
        {
            "source": ["aws.cloudwatch"],
            "$or": [{"metricName": ["ReadLatency"]}, {"namespace": ["AWS/EC2"]}],
        },
        CLOUDWATCH_EVENT,
        False,
        id="doc-or-no-branch",
    ),
    pytest.param(
        {
            "$or": [{"metricName": ["ReadLatency"]}, {"namespace": ["AWS/RDS"]}],
            "detail": {
                "$or": [
                    {"source": ["aws.cloudwatch"]},
                    {"detail-type": ["CloudWatch Alarm State Change"]},
                ]
            },
        },
        CLOUDWATCH_EVENT,
        True,
        id="doc-or-parallel",
    ),
    pytest.param(
        {
            "source": ["aws.cloudwatch"],
            "$or": [
                {"metricName": ["ReadLatency"]},
                {
                    "namespace": ["AWS/RDS"],
                    "metricName": ["CPUUtilization"],
                    "$or": [{"metricId": [1234]}, {"detail": {"detail-type": ["x"]}}],
                },
            ],
        },
        CLOUDWATCH_EVENT,
        False,
        id="doc-or-nested-inner-fails",
    ),
    pytest.param(
        {
            "source": ["aws.cloudwatch"],
            "$or": [
                {"metricName": ["ReadLatency"]},
                {
                    "namespace": ["AWS/RDS"],
                    "$or": [
                        {"metricId": [1234]},
                        {"detail": {"detail-type": [{"prefix": "CloudWatch"}]}},
                    ],
                },
            ],
        },
        CLOUDWATCH_EVENT,
        True,
        id="doc-or-nested",
    ),
    # Arrays of objects: matched element by element (event-ruler's array consistency).
    pytest.param(
        {"employees": {"firstName": ["Anna"]}}, EMPLOYEES_EVENT, True, id="doc-array-of-objects"
    ),
    pytest.param(
        {"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}},
        EMPLOYEES_EVENT,
        False,
        id="doc-array-consistency",
    ),
    pytest.param(
        {"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}},
        EMPLOYEES_EVENT,
        True,
        id="doc-array-same-element",
    ),
]

EDGE_CASES = [
    # Types: numbers compare numerically, never with strings or booleans.
    pytest.param({"n": [5]}, {"n": 5.0}, True, id="int-matches-float"),
    pytest.param({"n": [5.0]}, {"n": 5}, True, id="float-matches-int"),
    pytest.param({"n": [5]}, {"n": "5"}, False, id="number-not-string"),
    pytest.param({"n": ["5"]}, {"n": 5}, False, id="string-not-number"),
    pytest.param({"n": [1]}, {"n": True}, False, id="one-not-true"),
    pytest.param({"n": [True]}, {"n": 1}, False, id="true-not-one"),
    pytest.param({"n": [False]}, {"n": False}, True, id="false-matches-false"),
    pytest.param({"n": [0]}, {"n": False}, False, id="zero-not-false"),
    pytest.param({"n": [None]}, {}, False, id="null-not-missing"),
    pytest.param({"n": [""]}, {}, False, id="empty-not-missing"),
    pytest.param({"n": ["true"]}, {"n": True}, False, id="string-true-not-true"),
    pytest.param({"n": [{"numeric": [">", 1]}]}, {"n": "5"}, False, id="numeric-not-string"),
    pytest.param({"n": [{"numeric": [">", 0]}]}, {"n": True}, False, id="numeric-not-bool"),
    pytest.param({"n": [{"numeric": [">=", 5]}]}, {"n": 5}, True, id="numeric-ge-inclusive"),
    pytest.param({"n": [{"numeric": ["<=", -1.5]}]}, {"n": -2}, True, id="numeric-negative"),
    pytest.param({"n": [{"numeric": [">", 0, "<", 1]}]}, {"n": 1}, False, id="numeric-open-top"),
    pytest.param({"n": [{"numeric": [">", 0]}]}, {"n": [-1, 3]}, True, id="numeric-any-element"),
    pytest.param({"n": [{"prefix": "a"}]}, {"n": 123}, False, id="prefix-only-strings"),
    pytest.param({"n": [{"prefix": ""}]}, {"n": "anything"}, True, id="empty-prefix"),
    # Arrays in the event.
    pytest.param({"tags": ["b"]}, {"tags": ["a", "b"]}, True, id="array-any-element"),
    pytest.param({"tags": ["c"]}, {"tags": [["a"], ["b", ["c"]]]}, True, id="nested-arrays"),
    pytest.param({"tags": [{"exists": True}]}, {"tags": []}, False, id="empty-array-not-exists"),
    pytest.param({"tags": [{"exists": False}]}, {"tags": []}, True, id="empty-array-absent"),
    pytest.param(
        {"tags": [{"anything-but": "a"}]}, {"tags": ["a", "b"]}, True, id="anything-but-any-element"
    ),
    pytest.param(
        {"tags": [{"anything-but": "a"}]}, {"tags": ["a"]}, False, id="anything-but-only-excluded"
    ),
    pytest.param(
        {"a": {"b": [{"exists": False}]}},
        {"a": [{"c": 1}, {"b": 2}]},
        False,
        id="absent-means-in-no-element",
    ),
    pytest.param(
        {"a": {"b": [{"exists": False}]}},
        {"a": [{"c": 1}, {"c": 2}]},
        True,
        id="absent-in-every-element",
    ),
    pytest.param(
        {"a": {"b": [1], "c": [{"exists": False}]}},
        {"a": [{"b": 1}, {"c": 2}]},
        False,
        id="absent-and-positive-in-array",
    ),
    # Missing, null, objects and scalars where the pattern expects something else.
    pytest.param({"n": [{"anything-but": "x"}]}, {}, False, id="anything-but-needs-field"),
    pytest.param({"n": [{"anything-but": "x"}]}, {"n": None}, True, id="anything-but-null"),
    pytest.param({"n": [{"anything-but": "x"}]}, {"n": 5}, True, id="anything-but-other-type"),
    pytest.param({"n": [{"anything-but": 5}]}, {"n": "5"}, True, id="anything-but-number-string"),
    pytest.param(
        {"n": [{"anything-but": {"prefix": "a"}}]},
        {"n": 1},
        True,
        id="anything-but-prefix-non-string",
    ),
    pytest.param(
        {"n": [{"anything-but": "x"}]}, {"n": {"x": 1}}, False, id="anything-but-object-is-not-leaf"
    ),
    pytest.param({"n": [{"exists": True}]}, {"n": None}, True, id="exists-null"),
    pytest.param({"n": [{"exists": False}]}, {"n": None}, False, id="not-exists-null"),
    pytest.param({"n": [{"exists": False}]}, {"n": ""}, False, id="not-exists-empty-string"),
    pytest.param({"n": ["x", {"exists": False}]}, {}, True, id="value-or-absent-absent"),
    pytest.param({"n": ["x", {"exists": False}]}, {"n": "y"}, False, id="value-or-absent-other"),
    pytest.param({"a": {"b": ["x"]}}, {"a": "x"}, False, id="object-pattern-scalar-event"),
    pytest.param({"a": {"b": [{"exists": False}]}}, {"a": "x"}, True, id="absent-under-scalar"),
    pytest.param({"a": {"b": [{"exists": False}]}}, {}, True, id="absent-under-missing"),
    pytest.param({"a": ["x"]}, {"a": {"b": "x"}}, False, id="leaf-pattern-object-event"),
    # Wildcard escapes.
    pytest.param({"f": [{"wildcard": "a\\*b"}]}, {"f": "a*b"}, True, id="wildcard-escaped-star"),
    pytest.param({"f": [{"wildcard": "a\\*b"}]}, {"f": "axb"}, False, id="wildcard-literal-only"),
    pytest.param({"f": [{"wildcard": "a\\\\b"}]}, {"f": "a\\b"}, True, id="wildcard-backslash"),
    pytest.param({"f": [{"wildcard": "*"}]}, {"f": ""}, True, id="wildcard-star-empty"),
    pytest.param({"f": [{"wildcard": "a*a"}]}, {"f": "a"}, False, id="wildcard-no-overlap"),
    pytest.param({"f": [{"wildcard": "*ab*ab*"}]}, {"f": "xabyab"}, True, id="wildcard-middle"),
    pytest.param({"f": [{"wildcard": "*ab*ab"}]}, {"f": "abab"}, True, id="wildcard-adjacent"),
    pytest.param({"f": [{"wildcard": "a*b*c"}]}, {"f": "acb"}, False, id="wildcard-order"),
    pytest.param(
        {"f": [{"wildcard": "a\\**"}]}, {"f": "a*xyz"}, True, id="wildcard-escaped-then-star"
    ),
    # Case folding.
    pytest.param(
        {"s": [{"equals-ignore-case": "STRASSE"}]}, {"s": "straße"}, True, id="ignore-case-casefold"
    ),
    pytest.param(
        {"s": [{"equals-ignore-case": "abc"}]}, {"s": 1}, False, id="ignore-case-only-strings"
    ),
    # CIDR, IPv4 and IPv6.
    pytest.param({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8:1::7"}, True, id="cidr-v6"),
    pytest.param(
        {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db9::1"}, False, id="cidr-v6-miss"
    ),
    pytest.param(
        {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "10.0.0.1"}, False, id="cidr-v6-rejects-v4"
    ),
    pytest.param(
        {"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "::ffff:a00:1"}, False, id="cidr-v4-rejects-v6"
    ),
    pytest.param({"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "not-an-ip"}, False, id="cidr-not-an-ip"),
    pytest.param(
        {"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": 167772161}, False, id="cidr-only-strings"
    ),
    pytest.param(
        {"ip": [{"cidr": "10.1.2.3/16"}]}, {"ip": "10.1.200.1"}, True, id="cidr-host-bits-ignored"
    ),
    pytest.param({"ip": [{"cidr": "10.0.0.5/32"}]}, {"ip": "10.0.0.5"}, True, id="cidr-host"),
    # $or at depth, and $or against arrays of objects.
    pytest.param(
        {"d": {"$or": [{"a": [1]}, {"b": {"$or": [{"c": [2]}, {"e": [3]}]}}]}},
        {"d": {"b": {"e": 3}}},
        True,
        id="or-nested-deep",
    ),
    pytest.param(
        {"d": {"$or": [{"a": [1]}, {"b": [2]}]}},
        {"d": [{"a": 0}, {"b": 2}]},
        True,
        id="or-in-array-element",
    ),
    pytest.param(
        {"$or": [{"a": [{"exists": False}]}, {"b": [1]}]},
        {"a": 1, "b": 2},
        False,
        id="or-exists-false-branch",
    ),
    pytest.param(
        {"$or": [{"a": [{"exists": False}]}, {"b": [1]}]},
        {"b": 2},
        True,
        id="or-absent-branch-matches",
    ),
]


@pytest.mark.parametrize(("pattern", "event", "expected"), DOC_CASES + EDGE_CASES)
def test_pattern_matches_event(
    pattern: dict[str, Any], event: dict[str, Any], expected: bool
) -> None:
    """A pattern matches exactly the events EventBridge's semantics say it matches."""
    assert compile_pattern(pattern).matches(event) is expected


INVALID_CASES = [
    pytest.param([], (), id="pattern-not-object"),
    pytest.param({}, (), id="pattern-empty"),
    pytest.param({"a": {}}, ("a",), id="nested-empty"),
    pytest.param({"a": "x"}, ("a",), id="leaf-not-array"),
    pytest.param({"a": {"b": 5}}, ("a", "b"), id="nested-leaf-not-array"),
    pytest.param({"a": []}, ("a",), id="leaf-empty-array"),
    pytest.param({1: ["x"]}, (1,), id="key-not-string"),
    pytest.param({"a": [["x"]]}, ("a", 0), id="value-is-array"),
    pytest.param({"a": ["x", float("nan")]}, ("a", 1), id="value-nan"),
    pytest.param({"a": [{}]}, ("a", 0), id="operator-empty"),
    pytest.param({"a": [{"prefix": "x", "suffix": "y"}]}, ("a", 0), id="operator-two-keys"),
    pytest.param({"a": [{"contains": "x"}]}, ("a", 0, "contains"), id="operator-unknown"),
    pytest.param({"a": [{"prefix": 1}]}, ("a", 0, "prefix"), id="prefix-not-string"),
    pytest.param(
        {"a": [{"prefix": {"wildcard": "x"}}]}, ("a", 0, "prefix"), id="prefix-bad-object"
    ),
    pytest.param(
        {"a": [{"suffix": {"equals-ignore-case": 1}}]},
        ("a", 0, "suffix", "equals-ignore-case"),
        id="suffix-ignore-case-not-string",
    ),
    pytest.param(
        {"a": [{"equals-ignore-case": ["x"]}]},
        ("a", 0, "equals-ignore-case"),
        id="equals-ignore-case-list",
    ),
    pytest.param({"a": [{"exists": "true"}]}, ("a", 0, "exists"), id="exists-not-bool"),
    pytest.param({"a": [{"wildcard": 3}]}, ("a", 0, "wildcard"), id="wildcard-not-string"),
    pytest.param({"a": [{"wildcard": "a**b"}]}, ("a", 0, "wildcard"), id="wildcard-double-star"),
    pytest.param({"a": [{"wildcard": "a\\b"}]}, ("a", 0, "wildcard"), id="wildcard-bad-escape"),
    pytest.param(
        {"a": [{"wildcard": "ab\\"}]}, ("a", 0, "wildcard"), id="wildcard-trailing-backslash"
    ),
    pytest.param({"a": [{"numeric": 5}]}, ("a", 0, "numeric"), id="numeric-not-array"),
    pytest.param({"a": [{"numeric": [">"]}]}, ("a", 0, "numeric"), id="numeric-too-short"),
    pytest.param({"a": [{"numeric": [">", 1, "<"]}]}, ("a", 0, "numeric"), id="numeric-three"),
    pytest.param({"a": [{"numeric": ["!=", 1]}]}, ("a", 0, "numeric", 0), id="numeric-bad-op"),
    pytest.param(
        {"a": [{"numeric": [">", "1"]}]}, ("a", 0, "numeric", 1), id="numeric-string-operand"
    ),
    pytest.param(
        {"a": [{"numeric": [">", True]}]}, ("a", 0, "numeric", 1), id="numeric-bool-operand"
    ),
    pytest.param(
        {"a": [{"numeric": [">", float("inf")]}]}, ("a", 0, "numeric", 1), id="numeric-infinite"
    ),
    pytest.param(
        {"a": [{"numeric": [">", 5, "<", 1]}]}, ("a", 0, "numeric"), id="numeric-lower-above-upper"
    ),
    pytest.param(
        {"a": [{"numeric": [">=", 5, "<=", 5]}]}, ("a", 0, "numeric"), id="numeric-empty-range"
    ),
    pytest.param(
        {"a": [{"numeric": ["<", 5, ">", 1]}]},
        ("a", 0, "numeric", 0),
        id="numeric-range-upper-first",
    ),
    pytest.param(
        {"a": [{"numeric": [">", 1, ">", 5]}]}, ("a", 0, "numeric", 2), id="numeric-range-two-lower"
    ),
    pytest.param(
        {"a": [{"numeric": ["=", 1, "<", 5]}]}, ("a", 0, "numeric", 0), id="numeric-range-equals"
    ),
    pytest.param({"a": [{"cidr": "10.0.0.1"}]}, ("a", 0, "cidr"), id="cidr-no-mask"),
    pytest.param({"a": [{"cidr": "10.0.0.0/33"}]}, ("a", 0, "cidr"), id="cidr-mask-too-long"),
    pytest.param({"a": [{"cidr": "10.0.0/8"}]}, ("a", 0, "cidr"), id="cidr-bad-address"),
    pytest.param({"a": [{"cidr": "2001:db8::/129"}]}, ("a", 0, "cidr"), id="cidr-v6-bad-mask"),
    pytest.param({"a": [{"cidr": ["10.0.0.0/8"]}]}, ("a", 0, "cidr"), id="cidr-not-string"),
    pytest.param({"a": [{"anything-but": None}]}, ("a", 0, "anything-but"), id="anything-but-null"),
    pytest.param({"a": [{"anything-but": True}]}, ("a", 0, "anything-but"), id="anything-but-bool"),
    pytest.param(
        {"a": [{"anything-but": []}]}, ("a", 0, "anything-but"), id="anything-but-empty-list"
    ),
    pytest.param(
        {"a": [{"anything-but": ["x", 1]}]}, ("a", 0, "anything-but"), id="anything-but-mixed-list"
    ),
    pytest.param(
        {"a": [{"anything-but": ["x", None]}]},
        ("a", 0, "anything-but", 1),
        id="anything-but-null-in-list",
    ),
    pytest.param(
        {"a": [{"anything-but": [{"prefix": "x"}]}]},
        ("a", 0, "anything-but", 0),
        id="anything-but-object-in-list",
    ),
    pytest.param(
        {"a": [{"anything-but": {"numeric": [">", 1]}}]},
        ("a", 0, "anything-but", "numeric"),
        id="anything-but-numeric",
    ),
    pytest.param(
        {"a": [{"anything-but": {"prefix": ""}}]},
        ("a", 0, "anything-but", "prefix"),
        id="anything-but-empty-prefix",
    ),
    pytest.param(
        {"a": [{"anything-but": {"suffix": ["x"]}}]},
        ("a", 0, "anything-but", "suffix"),
        id="anything-but-suffix-list",
    ),
    pytest.param(
        {"a": [{"anything-but": {"prefix": "x", "suffix": "y"}}]},
        ("a", 0, "anything-but"),
        id="anything-but-two-keys",
    ),
    pytest.param(
        {"a": [{"anything-but": {"equals-ignore-case": [1]}}]},
        ("a", 0, "anything-but", "equals-ignore-case", 0),
        id="anything-but-ignore-case-number",
    ),
    pytest.param(
        {"a": [{"anything-but": {"wildcard": ["ok*", "a**"]}}]},
        ("a", 0, "anything-but", "wildcard", 1),
        id="anything-but-bad-wildcard",
    ),
    pytest.param({"$or": {"a": ["x"]}}, ("$or",), id="or-not-array"),
    pytest.param({"$or": [{"a": ["x"]}]}, ("$or",), id="or-one-branch"),
    pytest.param({"$or": [{"a": ["x"]}, "b"]}, ("$or", 1), id="or-branch-not-object"),
    pytest.param({"$or": [{"a": ["x"]}, {}]}, ("$or", 1), id="or-branch-empty"),
    pytest.param(
        {"$or": [{"a": ["x"]}, {"prefix": ["y"]}]}, ("$or", 1, "prefix"), id="or-operator-as-field"
    ),
    pytest.param(
        {"d": {"$or": [{"a": ["x"]}, {"b": {"numeric": [1]}}]}},
        ("d", "$or", 1, "b", "numeric"),
        id="or-nested-operator-as-field",
    ),
    pytest.param(
        {"d": {"$or": [{"a": ["x"]}, {"b": [{"numeric": ["<", "x"]}]}]}},
        ("d", "$or", 1, "b", 0, "numeric", 1),
        id="or-deep-error-path",
    ),
]


@pytest.mark.parametrize(("pattern", "path"), INVALID_CASES)
def test_invalid_pattern_is_rejected_with_its_path(pattern: Any, path: tuple[Any, ...]) -> None:
    """An invalid pattern raises PatternError whose path points at the offending spot."""
    with pytest.raises(PatternError) as caught:
        compile_pattern(pattern)
    assert caught.value.path == path
    assert str(caught.value)


def test_pattern_error_is_a_trigger_error() -> None:
    """PatternError belongs to the trigger exception tree, so the loader can catch it."""
    with pytest.raises(TriggerError):
        compile_pattern({"a": "x"})


def test_pattern_keeps_its_source() -> None:
    """A compiled pattern exposes the pattern it was compiled from."""
    source = {"a": [{"prefix": "x"}]}
    compiled = compile_pattern(source)
    assert isinstance(compiled, Pattern)
    assert compiled.source == source


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({}, id="empty"),
        pytest.param({"a": None, "b": None, "c": None, "d": None}, id="nulls"),
        pytest.param({"a": [[], [[]], {}], "b": {"c": [1, {"d": {}}]}}, id="nested-containers"),
        pytest.param({"a": {1, 2}, "b": b"\xff", "c": object(), "d": float("nan")}, id="odd-types"),
        pytest.param({"a": "x" * 10000, "b": ["::1", "999.1.1.1"], "c": -1e308}, id="big-values"),
        pytest.param({"a": [[[[[[[[[["deep"]]]]]]]]]]}, id="deep-arrays"),
    ],
)
def test_matching_never_raises(doc: dict[str, Any]) -> None:
    """Matching any JSON-like document returns a bool instead of raising."""
    pattern = compile_pattern(
        {
            "a": [{"anything-but": {"wildcard": "*y*"}}, {"prefix": {"equals-ignore-case": "x"}}],
            "b": [{"cidr": "::/0"}, {"numeric": [">", 0, "<", 1]}, "b", None, True],
            "c": [{"exists": True}],
            "d": [{"numeric": ["=", 1]}],
            "$or": [{"b": {"c": [{"exists": False}]}}, {"a": [{"suffix": "z"}]}],
        }
    )
    assert pattern.matches(doc) in (True, False)


def test_matching_a_document_that_is_not_an_object_finds_no_fields() -> None:
    """A non-object document behaves like one with no fields."""
    pattern = compile_pattern({"a": [{"exists": False}], "b": {"c": [{"exists": False}]}})
    assert pattern.matches([1, 2]) is True  # type: ignore[arg-type]
    assert compile_pattern({"a": ["x"]}).matches("a") is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("conditions", "value", "expected"),
    [
        pytest.param([{"prefix": "incoming/"}], "incoming/a.csv", True, id="prefix"),
        pytest.param([{"prefix": "incoming/"}], "outgoing/a.csv", False, id="prefix-miss"),
        pytest.param([{"suffix": ".csv"}], "incoming/a.csv", True, id="suffix"),
        pytest.param([{"prefix": "in/"}, {"suffix": ".csv"}], "x.csv", True, id="either"),
        pytest.param([{"wildcard": "in/*.csv"}], "in/2024/a.csv", True, id="wildcard"),
        pytest.param(["a", "b"], ["c", "b"], True, id="array-value"),
        pytest.param([{"exists": False}], {"nested": 1}, True, id="object-is-absent"),
        pytest.param([{"numeric": [">", 0]}], 0, False, id="numeric"),
    ],
)
def test_match_leaf_compiles_one_condition_list(
    conditions: list[Any], value: Any, expected: bool
) -> None:
    """match_leaf gives a predicate over one field's value, with the same semantics."""
    assert match_leaf(conditions)(value) is expected


@pytest.mark.parametrize(
    ("conditions", "path"),
    [
        pytest.param([], (), id="empty"),
        pytest.param("prefix", (), id="not-array"),
        pytest.param([{"prefix": None}], (0, "prefix"), id="bad-operand"),
    ],
)
def test_match_leaf_rejects_invalid_conditions(conditions: Any, path: tuple[Any, ...]) -> None:
    """match_leaf raises PatternError with the path inside the condition list."""
    with pytest.raises(PatternError) as caught:
        match_leaf(conditions)
    assert caught.value.path == path
