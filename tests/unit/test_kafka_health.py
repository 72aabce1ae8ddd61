"""Whether a Kafka cluster answers: `BrokerHealth` as the groups on it report."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from trigger.clock import VirtualClock
from trigger.core.metrics import Metrics
from trigger.sources.kafka.health import BrokerHealth


def gauge(metrics: Metrics, cluster: str) -> float | None:
    value = metrics.registry.get_sample_value("trigger_kafka_broker_up", {"cluster": cluster})
    return value


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


async def test_loss_and_recovery_are_one_line_each(clock: VirtualClock) -> None:
    """Repeated reports of one outage give one warning, and its end one line with the
    outage's length; the metric and the problems follow."""
    metrics = Metrics()
    health = BrokerHealth(clock, metrics)
    with capture_logs() as logs:
        health.report("default", "k:9092", "g", up=True)
        assert gauge(metrics, "default") == 1 and health.problems() == []
        for _ in range(5):
            health.report("default", "k:9092", "g", up=False)
            await clock.advance(2)
        assert gauge(metrics, "default") == 0
        assert health.problems() == [
            "cluster default: brokers unreachable for 10s (k:9092); "
            "consuming resumes when they answer"
        ]
        health.report("default", "k:9092", "g", up=True)
        health.report("default", "k:9092", "g", up=True)
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [
        ("kafka brokers unreachable", "warning"),
        ("kafka brokers reachable again", "info"),
    ]
    assert logs[1]["down_for"] == 10.0
    assert gauge(metrics, "default") == 1 and health.problems() == []


def test_a_cluster_is_down_while_any_group_cannot_reach_it(clock: VirtualClock) -> None:
    """Two groups on one cluster: down from the first that cannot reach it until both can;
    another cluster is unaffected."""
    metrics = Metrics()
    health = BrokerHealth(clock, metrics)
    health.report("other", "o:9092", "g", up=True)
    health.report("default", "k:9092", "a", up=False)
    health.report("default", "k:9092", "b", up=True)
    assert gauge(metrics, "default") == 0 and gauge(metrics, "other") == 1
    health.report("default", "k:9092", "a", up=True)
    assert gauge(metrics, "default") == 1


def test_a_stopped_group_no_longer_holds_its_cluster_down(clock: VirtualClock) -> None:
    """A group that stops while it cannot reach its cluster leaves no problem behind."""
    health = BrokerHealth(clock, Metrics())
    health.report("default", "k:9092", "a", up=False)
    health.forget("default", "a")
    assert health.problems() == []
