"""Prometheus metrics, owned by one registry per daemon (no module-level global state).

One vocabulary names a source in every metric's `source` label: `webhook`, `oss-push`
(EventBridge and MNS deliveries), `oss-poll`, `kafka`, `cron`, `workflow` — the names
`/readyz` and the log use too. (An event's own `source` field says only `oss` for both ways
OSS events come.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trigger.events import Event

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
SOURCES: Final = ("webhook", "oss-push", "oss-poll", "kafka", "cron", "workflow")


def source_label(event: Event) -> str:
    """The `source` label for `event`: its source, with OSS split into push and poll."""
    if event.source == "oss":
        return "oss-poll" if event.fields.get("polled") else "oss-push"
    return event.source


@dataclass
class Metrics:
    """Every metric the daemon exports, registered in its own registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.events_received = Counter(
            "trigger_events_received", "Events decoded, by source.", ["source"], registry=r
        )
        self.events_rejected = Counter(
            "trigger_events_rejected",
            "Deliveries refused before decoding or routing, by source and reason.",
            ["source", "reason"],
            registry=r,
        )
        self.events_matched = Counter(
            "trigger_events_matched", "Events that matched a rule, by rule.", ["rule"], registry=r
        )
        self.expression_errors = Counter(
            "trigger_expression_errors",
            "CEL filters that failed for an event (counted as no match), by rule.",
            ["rule"],
            registry=r,
        )
        self.workflows = Counter(
            "trigger_workflows",
            "Submission outcomes by rule: created, duplicate, failed (with error kind).",
            ["rule", "outcome", "error"],
            registry=r,
        )
        self.retries = Counter(
            "trigger_submit_retries",
            "Temporary submit failures retried, by rule.",
            ["rule"],
            registry=r,
        )
        self.dead_letters = Counter(
            "trigger_dead_letters",
            "Records written to the dead-letter sink, by rule and error.",
            ["rule", "error"],
            registry=r,
        )
        self.name_collisions = Counter(
            "trigger_workflow_name_collisions",
            "Workflow names found taken by another rule or idempotency key (the next "
            "deterministic name is tried), by rule.",
            ["rule"],
            registry=r,
        )
        self.storage_errors = Counter(
            "trigger_storage_errors",
            "Writes of the daemon's own files that failed (nothing was acknowledged), by "
            "target (local-sink, dead-letters, state) and error (ENOSPC, EDQUOT, EIO, …).",
            ["target", "error"],
            registry=r,
        )
        self.flow_limit = Gauge(
            "trigger_flow_rate_limit",
            "The flow controller's current limit on creates per second, by backend.",
            ["backend"],
            registry=r,
        )
        self.flow_in_flight = Gauge(
            "trigger_flow_in_flight",
            "Creates sent to the backend and not yet answered, by backend.",
            ["backend"],
            registry=r,
        )
        self.flow_failing = Gauge(
            "trigger_flow_failing",
            "1 while the backend fails and only probes go out, by backend.",
            ["backend"],
            registry=r,
        )
        self.flow_paused = Counter(
            "trigger_flow_paused_seconds",
            "Seconds every create waited for a Retry-After, by backend.",
            ["backend"],
            registry=r,
        )
        self.flow_answers = Counter(
            "trigger_flow_answers",
            "Answers to creates, by backend and outcome (ok, throttled: 429, error: 5xx, "
            "timeouts, transport).",
            ["backend", "outcome"],
            registry=r,
        )
        self.submit_latency = Histogram(
            "trigger_submit_latency_seconds",
            "From submit start to the Workflow created.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.event_latency = Histogram(
            "trigger_event_to_workflow_seconds",
            "From the event's own time to its Workflow created.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rules_loaded = Gauge(
            "trigger_rules_loaded", "Rules in the active rule set.", registry=r
        )
        self.reloads = Counter(
            "trigger_rule_reloads", "Rule reloads, by result (ok, error).", ["result"], registry=r
        )
        self.leader = Gauge(
            "trigger_leader", "1 while this replica leads the singleton sources.", registry=r
        )
        self.in_flight = Gauge(
            "trigger_submissions_in_flight", "Submissions under way.", registry=r
        )
        self.source_up = Gauge(
            "trigger_source_running", "1 while a source task runs.", ["source"], registry=r
        )
        self.source_restarts = Counter(
            "trigger_source_restarts",
            "Source tasks restarted after a failure.",
            ["source"],
            registry=r,
        )
        # The Kafka source binds these to its process-wide budget (read at scrape time).
        self.kafka_records_in_flight = Gauge(
            "trigger_kafka_records_in_flight",
            "Kafka records taken from any partition and not yet finished (kafka.max_in_flight).",
            registry=r,
        )
        self.kafka_records_in_flight_peak = Gauge(
            "trigger_kafka_records_in_flight_peak",
            "The most Kafka records that were in flight at once.",
            registry=r,
        )
        self.kafka_broker_up = Gauge(
            "trigger_kafka_broker_up",
            "1 while the cluster's brokers answer every consumer group of this replica, 0 "
            "while one cannot reach them, by cluster.",
            ["cluster"],
            registry=r,
        )
        self.kafka_offset_resets = Counter(
            "trigger_kafka_offset_resets",
            "Partitions whose fetch position was reset by the cluster's auto_offset_reset "
            "because the log no longer held it (a topic deleted and re-created, or "
            "truncated), by cluster, topic and reason (end-moved-back, end-before-position, "
            "offsets-went-back, committed-moved-back).",
            ["cluster", "topic", "reason"],
            registry=r,
        )
        self.cron_skipped = Counter(
            "trigger_cron_ticks_skipped",
            "Cron ticks not fired, by rule and reason (forbid: a Workflow of the rule was "
            "still Pending or Running; missed: dropped by catchUp or startingDeadline).",
            ["rule", "reason"],
            registry=r,
        )
        self.gate_events = Counter(
            "trigger_gate_events",
            "Events of gate members as their gate recorded them, by gate rule and outcome "
            "(opened: the first of a gate; added; duplicate: already in the gate or in one "
            "that closed within its window; surplus: beyond the member's count).",
            ["rule", "outcome"],
            registry=r,
        )
        self.gates_closed = Counter(
            "trigger_gates_closed",
            "Gates that closed, by gate rule and outcome (fired: complete; timeout-fired, "
            "timeout-dead-letter, timeout-dropped: per onTimeout). Counted by the replica "
            "that performs the action; one a crash interrupted is performed, and counted, "
            "again.",
            ["rule", "outcome"],
            registry=r,
        )
        self.gates_open = Gauge(
            "trigger_gates_open",
            "Gates collecting events, by gate rule, as the leader's last sweep found them.",
            ["rule"],
            registry=r,
        )
        self.gate_state_bytes = Histogram(
            "trigger_gate_state_bytes",
            "Size of a gate key's stored state (JSON bytes) after each event recorded in it.",
            ["rule"],
            buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576),
            registry=r,
        )
        self.workflow_watch_restarts = Counter(
            "trigger_workflow_watch_restarts",
            "Watches of finished Workflows that ended early, by reason (gone: the watermark "
            "was too old, 410, and the scope was listed again; error: the API server failed).",
            ["reason"],
            registry=r,
        )
        self.http_connections = Gauge(
            "trigger_http_connections_open",
            "Open connections of the HTTP server (every listener together).",
            registry=r,
        )
        self.http_closed = Counter(
            "trigger_http_connections_closed",
            "Connections the HTTP server closed on its own, by reason (header-timeout, idle, "
            "evicted: to admit a new one at http.max_connections, refused: a new one at the "
            "limit while every connection was inside a request).",
            ["reason"],
            registry=r,
        )
        self.queue_sync_errors = Counter(
            "trigger_queue_sync_errors",
            "Attempts of the leader to keep the queues' semaphore ConfigMaps that did not put "
            "every declared limit in place, by reason (failed: the API refused or failed; "
            "foreign: a queue's key was written by another owner and left alone).",
            ["reason"],
            registry=r,
        )
        self.state_errors = Counter(
            "trigger_state_errors",
            "State store operations that failed, by the key's kind (cron, oss-poll) and "
            "reason (too_large, forbidden, rejected, invalid, conflict, unavailable, io).",
            ["key_kind", "reason"],
            registry=r,
        )

    def watch_decisions(self, kept: Callable[[], int], dropped: Callable[[], int]) -> None:
        """Serve the decision ring's size and drops, read when scraped (not per event)."""
        self.registry.register(_Decisions(kept, dropped))

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, cached: prometheus_client's own lookup takes a lock and
        validates the labels every time, which adds up on the per-event path."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        return generate_latest(_WithoutCreated(self.registry))


class _WithoutCreated(Collector):
    """A registry's metrics without the `<name>_created` series prometheus_client adds to
    every counter, histogram and summary: a Unix time in a series that reads like a count.

    prometheus_client can only turn them off for the whole process (a module-level switch,
    or an environment variable read when it is imported); leaving them out here keeps it
    a property of this registry, whoever else uses prometheus_client in the process.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            created = f"{family.name}_created"
            family.samples = [s for s in family.samples if s.name != created]
            yield family


class _Decisions(Collector):
    """The decision ring's figures, read at scrape time."""

    def __init__(self, kept: Callable[[], int], dropped: Callable[[], int]) -> None:
        self._kept = kept
        self._dropped = dropped

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "trigger_decisions_kept", "Decision records in the ring.", value=self._kept()
        )
        yield CounterMetricFamily(
            "trigger_decisions_dropped",
            "Decision records pushed out of the full ring (the oldest first).",
            value=self._dropped(),
        )
