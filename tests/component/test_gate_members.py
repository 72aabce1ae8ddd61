"""Gate members from the cron source and a webhook, on a virtual clock: the cron source
runs as `trigger run` runs it, the webhook request is decoded as the receiver does."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from tests.component.test_cron_source import START, Harness, RecordingSink
from tests.component.test_gate_pipeline import dead_letters, parameters, workflows
from trigger.core.gatekeeper import GateKeeper
from trigger.core.state import FileStateStore
from trigger.decoders.webhook import decode_webhook
from trigger.events import Event
from trigger.rules.router import RuleSet
from trigger.sources.base import SourceContext
from trigger.submit.local import LocalSink

RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: approved-report}
spec:
  gate:
    key: "{{ event.time[:10] }}"
    window: 6h
    members:
      tick:
        source: {cron: {schedules: ["0 2 * * *"]}}
      approval:
        source: {webhook: {path: /hooks/approve}}
        filter: {pattern: {body: {approved: [true]}}}
  workflow:
    template: report
    namespace: data
    parameters:
      day: "{{ gate.key }}"
      at: "{{ gate.members.tick[0].scheduledTime }}"
      by: "{{ gate.members.approval[0].body.by }}"
"""


class GateHarness(Harness):
    """The cron harness with the gate keeper `trigger run` adds once the store is open."""

    def context(self, rules: RuleSet) -> SourceContext:
        ctx = super().context(rules)
        pipeline = ctx.pipeline
        pipeline.gates = GateKeeper(self.state, pipeline.submitter, pipeline.dead_letters, self.clock)  # fmt: skip
        return ctx

    async def idle(self, workers: int | None = None) -> None:
        """Only cron rules (here the cron member) have a task, besides the wall watch."""
        assert self.rules is not None
        await super().idle(sum(r.kind == "cron" for r in self.rules.rules) + 1)


def approval(harness: Harness, by: str) -> Event:
    """The webhook receiver's event for an approval posted now (virtual time)."""
    body = json.dumps({"approved": True, "by": by}).encode()
    return decode_webhook(
        "/hooks/approve",
        "POST",
        {"Content-Type": "application/json", "X-Request-Id": f"approve-{by}"},
        {},
        body,
        received=harness.clock.now(),
    )


async def test_cron_tick_and_webhook_approval_fire_one_gate(tmp_path: Path) -> None:
    """A day's 02:00 tick and that day's earlier approval fire one Workflow with both; the
    next day's tick alone opens a new gate and fires nothing."""
    state = await FileStateStore.open(tmp_path / "state.json")
    harness = GateHarness(tmp_path, RecordingSink(LocalSink(tmp_path / "workflows")), state)
    try:
        await state.put("cron/approved-report.tick", {"scheduledTime": "2025-06-01T00:00:00Z"})
        await harness.start(RULES)
        assert harness.source is not None
        pipeline = harness.source._ctx.pipeline
        await harness.at(START + timedelta(hours=1))
        await pipeline.handle(approval(harness, "ana"))  # 01:00, before the tick
        assert workflows(tmp_path) == []
        await harness.at(START + timedelta(hours=2, minutes=1))  # the tick completes the gate
        [workflow] = workflows(tmp_path)
        assert parameters(workflow) == {
            "day": "2025-06-01",
            "at": "2025-06-01T02:00:00Z",
            "by": "ana",
        }
        await harness.at(START + timedelta(days=1, hours=2, minutes=1))  # tick, no approval
        assert len(workflows(tmp_path)) == 1 and dead_letters(tmp_path) == []
        assert len(await state.keys("gate/approved-report/")) == 2
    finally:
        await harness.stop()
        await harness.sink.close()
        await state.close()
