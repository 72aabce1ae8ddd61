"""The harness itself: every part is killed by its PID and comes back where it was."""

from __future__ import annotations

import os

import oss2
import pytest

from tests.daemon import wait_for
from tests.e2e.harness import Harness, kafka_partitions, wait_for_workflows

RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: echo}
spec:
  source: {kafka: {topics: [t], format: json}}
  workflow: {template: process, namespace: default, parameters: {n: "{{ event.value.n }}"}}
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True  # the harness reaps what it kills: no zombie answers here


def test_parts_restart_by_pid_on_the_same_address(harness: Harness) -> None:
    """kill() ends each part's process; restart() serves the same address again."""
    broker = harness.broker({"t": 2})
    emulator = harness.emulator()
    oss = harness.oss(["bucket"])
    addresses = (broker.bootstrap, emulator.url, oss.url)
    for part in (broker, emulator, oss):
        pid = part.pid
        assert pid is not None
        harness.kill(part)
        assert not alive(pid)
        harness.restart(part)
        assert part.pid not in (None, pid)
    assert (broker.bootstrap, emulator.url, oss.url) == addresses
    bucket = oss2.Bucket(oss2.AnonymousAuth(), oss.url, "bucket", connect_timeout=10)
    bucket.put_object("a/b.csv", b"x")
    assert bucket.get_object("a/b.csv").read() == b"x"
    assert emulator.workflow_count() == 0


def test_a_daemon_turns_records_into_counted_workflows(harness: Harness) -> None:
    """Produced records become Workflows counted under (rule, event id); the daemon's
    partitions are read from its log (restarts are the crash suite's)."""
    broker = harness.broker({"t": 2})
    emulator = harness.emulator()
    emulator.add_template("process")
    daemon = harness.daemon("d", RULE, emulator, broker)
    wait_for(lambda: kafka_partitions(daemon) == {"t/0", "t/1"}, what="the daemon's partitions")
    placed = harness.producer(broker).produce("t", [(0, None, b'{"n": 1}'), (1, b"k", b'{"n": 2}')])
    wait_for_workflows(emulator, 2)
    assert emulator.workflows() == {("echo", d.event_id): 1 for d in placed}


@pytest.mark.parametrize("count", [0, 3])
def test_producer_reports_where_each_record_landed(harness: Harness, count: int) -> None:
    """Each produced record's partition and offset come back in the order sent."""
    broker = harness.broker({"t": 2})
    placed = harness.producer(broker).produce("t", [(1, None, b"x")] * count)
    assert [(d.partition, d.offset) for d in placed] == [(1, n) for n in range(count)]
