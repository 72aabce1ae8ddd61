"""Kafka crash consistency: two daemons in one group, one SIGKILLed again and again.

Three rules read one topic of 6 partitions; the third drops every record of kind `c` (a
third of them). While the records become Workflows, a seeded random daemon is killed at
seeded random moments — chosen by progress, "once N Workflows exist" — and started again.
In the end every (record, matching rule) has exactly one Workflow, and nothing else
exists. Short form: 2,000 records, 2 kills; `pytest --long`: 20,000 records, 5 kills.
"""

from __future__ import annotations

import json
import random
import signal
from collections import Counter
from functools import partial

from tests.daemon import wait_for
from tests.e2e.harness import Delivered, Emulator, Harness, kafka_partitions, wait_for_workflows

TOPIC = "orders"
PARTITIONS = 6
SEED = 14
KINDS = ("a", "b", "c")
RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: every-a}
spec:
  source: {kafka: {topics: [orders], format: json}}
  workflow: {template: process, namespace: default, parameters: {n: "{{ event.value.n }}"}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: every-b}
spec:
  source: {kafka: {topics: [orders], format: json}}
  workflow: {template: process, namespace: default, parameters: {key: "{{ event.key }}"}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: not-c}
spec:
  source: {kafka: {topics: [orders], format: json}}
  filter: {pattern: {value: {kind: [a, b]}}}
  workflow: {template: process, namespace: default, parameters: {n: "{{ event.value.n }}"}}
"""


def records(count: int) -> list[tuple[int, bytes, bytes]]:
    return [
        (n % PARTITIONS, f"k{n}".encode(), json.dumps({"n": n, "kind": KINDS[n % 3]}).encode())
        for n in range(count)
    ]


def expected(delivered: list[Delivered]) -> Counter[tuple[str, str]]:
    """One Workflow per (rule, event id) for each rule the record matches."""
    wanted: Counter[tuple[str, str]] = Counter()
    for n, place in enumerate(delivered):
        wanted["every-a", place.event_id] = 1
        wanted["every-b", place.event_id] = 1
        if KINDS[n % 3] != "c":
            wanted["not-c", place.event_id] = 1
    return wanted


def diff(found: Counter[tuple[str, str]], wanted: Counter[tuple[str, str]]) -> str:
    missing = sorted(k for k in wanted if k not in found)
    doubled = sorted(k for k, v in found.items() if v > 1)
    extra = sorted(k for k in found if k not in wanted)
    return f"missing {len(missing)} {missing[:5]}, doubled {len(doubled)} {doubled[:5]}, " + (
        f"extra {len(extra)} {extra[:5]}"
    )


def test_every_record_one_workflow_per_rule_across_kills(harness: Harness, long_run: bool) -> None:
    """SIGKILLed and restarted daemons of one group leave exactly one Workflow per
    (record, matching rule), none for filtered records, none extra."""
    count, kills = (20_000, 5) if long_run else (2_000, 2)
    broker = harness.broker({TOPIC: PARTITIONS})
    emulator: Emulator = harness.emulator()
    emulator.add_template("process")
    daemons = [harness.daemon(name, RULES, emulator, broker) for name in ("d1", "d2")]
    for daemon in daemons:  # both at work before the stream starts
        wait_for(partial(kafka_partitions, daemon), timeout=120, what="the group's rebalance")
    delivered = harness.producer(broker).produce(TOPIC, records(count))
    wanted = expected(delivered)
    total = sum(wanted.values())

    chance = random.Random(SEED)
    moments = sorted(chance.sample(range(total // 10, total * 9 // 10), kills))
    for moment in moments:
        wait_for_workflows(emulator, moment, timeout=300)
        victim = chance.choice(daemons)
        held = sorted(kafka_partitions(victim))
        harness.restart(victim)  # SIGKILL by PID, then start again until ready
        print(f"killed {victim.workdir.name} holding {held} once {moment}/{total} existed")
        # The next kill hits a daemon at work: the restarted one has rejoined the group.
        wait_for(partial(kafka_partitions, victim), timeout=120, what="the group's rebalance")

    wait_for_workflows(emulator, total, timeout=600)
    for daemon in daemons:  # a graceful stop: whatever was still in flight is finished
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0, daemon.log()[-2000:]
    redone = sum(
        e.get("event") == "workflow already exists (redelivery)"
        for d in daemons
        for e in d.log_events()
    )
    print(f"{total} Workflows; {redone} redeliveries found their Workflow already there")
    found = emulator.workflows()
    assert found == wanted, diff(found, wanted)
    assert not any(d.dead_letters.exists() and d.dead_letters.read_text() for d in daemons)
