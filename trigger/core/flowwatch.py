"""The daemon's observer of flow control: metrics always, a log line when it matters.

The flow controller (trigger.submit.flow) tells of every answer and every change of its
limit or state. Answers and the limit are metrics; a cut, a pause or a backend starting
to fail is one warning per backend every 10 s (trigger.core.lograte), with how many it
left out; a recovery is one info line — never a line per request.
"""

from __future__ import annotations

import structlog

from trigger.clock import Clock
from trigger.core.lograte import LogRate
from trigger.core.metrics import Metrics
from trigger.submit.flow import FlowController, Outcome

log = structlog.get_logger("trigger.flow")
_WORSE = frozenset({"cut", "paused", "failing"})


class FlowWatch:
    """Feeds a flow controller's news into the metrics and the log."""

    def __init__(self, metrics: Metrics, clock: Clock) -> None:
        self._metrics = metrics
        self._rate = LogRate(clock)
        self._paused: dict[str, float] = {}

    def answered(self, controller: FlowController, outcome: Outcome) -> None:
        m, backend = self._metrics, controller.backend
        m.child(m.flow_answers, backend, outcome).inc()
        m.child(m.flow_in_flight, backend).set(controller.in_flight)

    def changed(self, controller: FlowController, why: str) -> None:
        m, backend = self._metrics, controller.backend
        m.child(m.flow_limit, backend).set(controller.rate)
        m.child(m.flow_failing, backend).set(1 if controller.state == "failing" else 0)
        paused = controller.paused_seconds - self._paused.get(backend, 0.0)
        if paused > 0:
            m.child(m.flow_paused, backend).inc(paused)
            self._paused[backend] = controller.paused_seconds
        fields = {"backend": backend, "limit": round(controller.rate, 1), "why": why}
        if why == "recovered":
            log.info("backend answers again: creates flow", **fields)
        elif why in _WORSE and (quiet := self._rate.due((backend, "worse"))) is not None:
            log.warning(
                "backend overloaded or failing: creates slowed down",
                state=controller.state,
                not_logged_since_last=quiet,
                **fields,
            )
