"""A `trigger run` daemon that has seen one event of each kind of decision — created,
duplicate, filtered, dead-lettered, and one whose body has a `<script>` key — for the
tests of the status page, the API and `trigger events` / `trigger why`."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.daemon import DaemonProcess, running, wait_for

RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: big-orders}
spec:
  source: {webhook: {path: /orders}}
  filter: {pattern: {body: {amount: [{numeric: [">=", 100]}]}}}
  workflow: {template: fraud-check, namespace: shop, queue: fraud-checks, priority: 5}
---
apiVersion: trigger/v1
kind: Queue
metadata: {name: fraud-checks}
spec: {limit: 3}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: broken}
spec:
  source: {webhook: {path: /broken}}
  workflow:
    template: broken
    namespace: shop
    parameters: {id: "{{ event.body.missing }}"}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: nightly}
spec:
  source: {cron: {schedules: ["0 2 * * *"]}}
  workflow: {template: nightly, namespace: ops}
"""

XSS_KEY = "<script>document.title='pwned'</script>"


def post(daemon: DaemonProcess, path: str, event_id: str, body: object) -> int:
    headers = {"Content-Type": "application/json", "Idempotency-Key": event_id}
    return daemon.post(path, json.dumps(body).encode(), headers).status


@contextmanager
def seeded(workdir: Path, env: Mapping[str, str] | None = None) -> Iterator[DaemonProcess]:
    """The daemon, after: order-1 created, then again (duplicate), order-2 filtered,
    broken-1 dead-lettered, order-xss filtered with a `<script>` key."""
    rules = workdir / "rules"
    rules.mkdir()
    (rules / "rules.yaml").write_text(RULES)
    with running(workdir, rules, env=dict(env or {})) as daemon:
        assert post(daemon, "/orders", "order-1", {"amount": 150}) == 200
        assert post(daemon, "/orders", "order-1", {"amount": 150}) == 200
        assert post(daemon, "/orders", "order-2", {"amount": 5}) == 200
        assert post(daemon, "/broken", "broken-1", {"id": 1}) == 200
        assert post(daemon, "/orders", "order-xss", {XSS_KEY: 1, "amount": 1}) == 200
        wait_for(daemon.dead_letters.exists, what="the dead letter")
        yield daemon
