"""Whether each Kafka cluster's brokers answer, as the consumer groups on it see them.

Every group member reports after each fetch whether the cluster answered lately (a fetch
response for one of its partitions, or else a metadata request). A cluster is *down* from
the first report that it does not answer until every group on it answers again. While it
is down:

- `/readyz` lists it under `problems.kafka` (the answer stays 200: a broker outage is
  every replica's alike, and taking the replica out of its Service would stop its
  webhooks and pushes too);
- `trigger_kafka_broker_up{cluster}` is 0 (1 while it answers);
- the log has one warning when it goes (`kafka brokers unreachable`) and one line when it
  is back (`kafka brokers reachable again`, with `down_for` in seconds) — the client
  library's own repeated lines are rate-limited by the daemon's log configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from trigger.clock import Clock
from trigger.core.metrics import Metrics

log = structlog.get_logger("trigger.sources.kafka.source")


@dataclass
class _Cluster:
    bootstrap: str
    down: set[str] = field(default_factory=set)  # groups that cannot reach it
    since: float | None = None  # monotonic time it went down


class BrokerHealth:
    """The reachability of every cluster the Kafka source consumes from."""

    def __init__(self, clock: Clock, metrics: Metrics) -> None:
        self._clock = clock
        self._metrics = metrics
        self._clusters: dict[str, _Cluster] = {}

    def report(self, cluster: str, bootstrap: str, group: str, up: bool) -> None:
        """What one group member saw just now."""
        state = self._clusters.setdefault(cluster, _Cluster(bootstrap))
        was_down = bool(state.down)
        if up:
            state.down.discard(group)
        else:
            state.down.add(group)
        if not was_down and state.down:
            state.since = self._clock.monotonic()
            log.warning(
                "kafka brokers unreachable",
                cluster=cluster,
                bootstrap_servers=bootstrap,
                groups=sorted(state.down),
            )
        elif was_down and not state.down:
            down_for = self._down_for(state)
            state.since = None
            log.info("kafka brokers reachable again", cluster=cluster, down_for=round(down_for, 3))
        self._metrics.child(self._metrics.kafka_broker_up, cluster).set(0 if state.down else 1)

    def forget(self, cluster: str, group: str) -> None:
        """A group stopped: it no longer says anything about its cluster."""
        state = self._clusters.get(cluster)
        if state is not None and group in state.down:
            self.report(cluster, state.bootstrap, group, up=True)

    def problems(self) -> list[str]:
        """One line per cluster that is down, for /readyz."""
        return [
            f"cluster {name}: brokers unreachable for {self._down_for(state):.0f}s "
            f"({state.bootstrap}); consuming resumes when they answer"
            for name, state in sorted(self._clusters.items())
            if state.down
        ]

    def _down_for(self, state: _Cluster) -> float:
        return 0.0 if state.since is None else self._clock.monotonic() - state.since
