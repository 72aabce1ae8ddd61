"""Each rule's verdict from the rule, the settings and the environment: a table of facts."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trigger.daemon.verdicts import StrictRefusal, judge, loopback_only
from trigger.settings import Settings

RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: orders}
spec:
  source:
    kafka: {topics: [orders]}
  workflow: {template: t, namespace: default}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: signed-hook}
spec:
  source:
    webhook: {path: /hooks/signed, auth: {hmacSecretEnv: HOOK_SECRET}}
  workflow: {template: t, namespace: default}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: open-hook}
spec:
  source:
    webhook: {path: /hooks/open}
  workflow: {template: t, namespace: default}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: pushed}
spec:
  source:
    oss: {bucket: b}
  workflow: {template: t, namespace: default}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: polled}
spec:
  source:
    oss:
      bucket: b
      poll:
        endpoint: http://127.0.0.1:9
        region: cn-hangzhou
        credentials: {accessKeyIdEnv: OSS_ID, accessKeySecretEnv: OSS_SECRET}
  workflow: {template: t, namespace: default}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: nightly}
spec:
  source:
    cron: {schedules: ["0 2 * * *"], concurrencyPolicy: Forbid}
  workflow: {template: t, namespace: default}
"""
EVERYTHING = {"HOOK_SECRET": "s", "OSS_ID": "id", "OSS_SECRET": "secret"}
KAFKA: dict[str, Any] = {"clusters": {"default": {"bootstrap_servers": "k:9092"}}}
BEYOND = "0.0.0.0:8080"
NO_OSS_AUTH = {"push": {"mns_verify_signature": False}}


@pytest.mark.parametrize(
    ("settings", "environ", "idle"),
    [
        pytest.param({"kafka": KAFKA}, EVERYTHING, {}, id="all-configured"),
        pytest.param({}, EVERYTHING, {"orders": "Kafka cluster 'default' is not configured"}, id="no-kafka-cluster"),
        pytest.param({"kafka": KAFKA}, {"OSS_ID": "id", "OSS_SECRET": "s"}, {"signed-hook": "HOOK_SECRET is not set"}, id="no-webhook-secret"),
        pytest.param({"kafka": KAFKA}, {"HOOK_SECRET": "s"}, {"polled": "OSS_ID is not set"}, id="no-poll-credentials"),
        pytest.param({"kafka": KAFKA, "listen": BEYOND}, EVERYTHING, {"open-hook": "beyond loopback"}, id="open-hook-beyond-loopback"),
        pytest.param({"kafka": KAFKA, "listen": BEYOND, "oss": NO_OSS_AUTH}, EVERYTHING, {"open-hook": "beyond loopback", "pushed": "no OSS push receiver"}, id="no-oss-receiver"),
        pytest.param({"kafka": KAFKA, "oss": NO_OSS_AUTH}, EVERYTHING, {}, id="open-receivers-on-loopback"),
        pytest.param({"kafka": KAFKA, "sink": "stdout"}, EVERYTHING, {"nightly": "concurrencyPolicy Forbid"}, id="cron-forbid-on-stdout"),
    ],
)  # fmt: skip
def test_verdicts_follow_the_facts(
    write_rules: Callable[..., Path],
    settings: dict[str, Any],
    environ: dict[str, str],
    idle: dict[str, str],
) -> None:
    """A rule is idle exactly when a fact it needs is missing, and the reason names it."""
    verdicts = judge([str(write_rules(RULES))], Settings(**settings), environ)
    assert set(verdicts.idle) == set(idle)
    for name, words in idle.items():
        assert words in verdicts.idle[name]
    assert {r.name for r in verdicts.active.rules} == set(verdicts.rules.by_name) - set(idle)


def test_idle_problems_point_at_the_field(write_rules: Callable[..., Path]) -> None:
    """An idle rule's line names the file, the line of the field, the rule and the reason."""
    path = write_rules(RULES)
    verdicts = judge([str(path)], Settings(), EVERYTHING)
    (problem,) = verdicts.problems(strict=False)
    assert (problem.file, problem.line, problem.rule) == (str(path), 6, "orders")  # the `kafka:` block: the default cluster is implied there
    assert problem.message.startswith("warning: idle: Kafka cluster 'default'")


def test_strict_mode_refuses_idle_rules(write_rules: Callable[..., Path]) -> None:
    """With strict on, a rule set with an idle rule is refused as a whole, with errors."""
    with pytest.raises(StrictRefusal) as refused:
        judge([str(write_rules(RULES))], Settings(strict=True), EVERYTHING)
    (problem,) = refused.value.problems
    assert problem.message.startswith("idle: ")
    assert refused.value.verdicts.idle.keys() == {"orders"}


@given(st.ip_addresses(), st.integers(min_value=0, max_value=65535))
def test_loopback_only_is_the_address_being_loopback(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> None:
    """Any IPv4 or IPv6 listen address is loopback-only exactly when it is a loopback one."""
    host = f"[{address}]" if address.version == 6 else str(address)
    assert loopback_only(f"{host}:{port}") is address.is_loopback


GATE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: load}
spec:
  gate:
    key: "{{ event.id }}"
    window: 1h
    members:
      files:
        source: {oss: {bucket: b}}
      approval:
        source: {kafka: {topics: [approvals]}}
  workflow: {template: t, namespace: default}
"""


@pytest.mark.parametrize(("settings", "idle"), [({}, True), ({"kafka": KAFKA}, False)])
def test_a_gate_is_one_rule_idle_when_a_member_is(
    write_rules: Callable[..., Path], settings: dict[str, Any], idle: bool
) -> None:
    """A gate counts once; a member idle for lack of a Kafka cluster makes it say it cannot
    complete and why, on the member's line; its other member stays active for routing."""
    path = write_rules(GATE)
    verdicts = judge([str(path)], Settings(**settings), {})
    assert verdicts.rules.written == ("load",)
    assert {r.name for r in verdicts.active.rules} >= {"load.files"}
    if not idle:
        assert (verdicts.active_count, verdicts.idle, verdicts.problems(strict=False)) == (1, {}, [])  # fmt: skip
        return
    assert (verdicts.active_count, list(verdicts.idle)) == (0, ["load"])
    assert verdicts.idle["load"].startswith(
        "the gate cannot complete: member approval is idle: Kafka cluster 'default' is not configured"
    )
    (problem,) = verdicts.problems(strict=False)
    assert (problem.rule, problem.line) == ("load", 12)  # the approval member's `source:`
    assert verdicts.of("load.approval").state == "idle" and verdicts.of("load.files").state == "active"  # fmt: skip
