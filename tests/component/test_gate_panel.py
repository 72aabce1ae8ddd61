"""Open gates on the status page and in `/api/gates`, and each member event's `gated`
detail in `/api/events`, `trigger why` and `trigger events --outcome gated`, against a
running daemon whose gate's members are webhooks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from tests.daemon import DaemonProcess, running
from tests.statuspage import XSS_KEY, post
from trigger.clock import VirtualClock
from trigger.core.gatekeeper import GateKeeper
from trigger.core.state import ConfigMapStateStore, FileStateStore, StateStore, configmap_name
from trigger.decoders.webhook import decode_webhook
from trigger.rules.loader import load_rules
from trigger.rules.router import RuleSet
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.local import LocalSink
from trigger.submit.submitter import Submitter
from trigger.testing.kubeapi import KubeEmulator

RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: batch}
spec:
  gate:
    key: "{{ event.body.day }}"
    window: 1h
    members:
      part: {source: {webhook: {path: /parts}}, count: 2}
      done: {source: {webhook: {path: /done}}}
  workflow: {template: load, namespace: data, parameters: {day: "{{ gate.key }}"}}
"""
DAY = "2026-12-06"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    workdir = tmp_path_factory.mktemp("gate-panel")
    (workdir / "rules").mkdir()
    (workdir / "rules" / "rules.yaml").write_text(RULES)
    with running(workdir, workdir / "rules") as started:
        yield started


def api(daemon: DaemonProcess, path: str) -> Any:
    answer = daemon.get(path)
    assert answer.status == 200, answer.body
    return answer.json()


def detail(daemon: DaemonProcess, event_id: str) -> str:
    found = api(daemon, "/api/events/" + urllib.parse.quote(event_id, safe=""))
    [entry] = [r for r in found["rules"] if r["outcome"] == "gated"]
    return str(entry["detail"])


def gates(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    [rule] = api(daemon, "/api/gates")["gates"]
    assert (rule["rule"], rule["window"]) == ("batch", 3600)
    assert rule["members"] == {"part": 2, "done": 1}
    return {gate["key"]: gate for gate in rule["gates"]}


def trigger(daemon: DaemonProcess, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "trigger.cli", *args, "--server", daemon.url],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout


def test_each_member_event_says_what_its_gate_lacks_and_the_panel_shows_it(
    daemon: DaemonProcess,
) -> None:
    """After each member event its `gated` detail names the key and what is missing; the
    open gates (a `<script>` key escaped) are in /api/gates and on the page until complete."""
    gate = f"gate batch key {DAY}"
    assert post(daemon, "/parts", "part-1", {"day": DAY}) == 200
    assert detail(daemon, "part-1") == f"{gate}: missing part (1), done (1)"
    assert post(daemon, "/parts", "part-2", {"day": DAY}) == 200
    assert detail(daemon, "part-2") == f"{gate}: missing done (1)"
    assert post(daemon, "/parts", "part-xss", {"day": XSS_KEY}) == 200
    assert detail(daemon, "part-xss") == f"gate batch key {XSS_KEY}: missing part (1), done (1)"

    found = gates(daemon)
    assert sorted(found) == sorted([DAY, XSS_KEY])
    day = found[DAY]
    assert day["members"] == {"part": {"have": 2, "need": 2}, "done": {"have": 0, "need": 1}}
    assert day["missing"] == {"done": 1}
    assert day["firstEvent"] == "part-1"
    assert day["deadline"] > day["opened"]

    page = daemon.get("/").body.decode()
    assert "<h2>Open gates</h2>" in page
    assert f"<td>{DAY}</td>" in page and "part 2/2, done 0/1" in page
    assert "<td>done (1)</td>" in page
    assert XSS_KEY not in page
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in page

    assert post(daemon, "/done", "done-1", {"day": DAY}) == 200
    assert detail(daemon, "done-1") == f"{gate}: complete"
    assert sorted(gates(daemon)) == [XSS_KEY]
    assert len(daemon.workflow_files()) == 1


def test_why_and_events_show_the_gated_detail(daemon: DaemonProcess) -> None:
    """`trigger why` prints the member's gated detail; `trigger events --outcome gated`
    lists exactly the member events."""
    assert post(daemon, "/parts", "part-9", {"day": "2026-12-09"}) == 200
    said = trigger(daemon, "why", "part-9", "-o", "table")
    assert "rule batch.part: gated: gate batch key 2026-12-09: missing part (1), done (1)" in said
    listed = trigger(daemon, "events", "--outcome", "gated", "-o", "json").splitlines()
    ids = [json.loads(line)["id"] for line in listed]
    assert "part-9" in ids and all(i.startswith(("part-", "done-")) for i in ids)


async def open_three(tmp_path: Path, store: StateStore) -> tuple[GateKeeper, RuleSet]:
    """A gate keeper over `store` with the gates of days a, b and c open."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    loaded = load_rules([rules])
    sink = LocalSink(tmp_path / "workflows")
    letters = FileDeadLetterSink(tmp_path / "dead.jsonl")
    clock = VirtualClock()
    keeper = GateKeeper(store, Submitter(sink, letters, clock), letters, clock)
    for day in ("a", "b", "c"):
        body = json.dumps({"day": day}).encode()
        headers = {"Content-Type": "application/json", "X-Request-Id": day}
        event = decode_webhook("/parts", "POST", headers, {}, body, received=clock.now())
        await keeper.record(loaded.by_name["batch.part"], event)
    return keeper, loaded


async def test_open_gates_are_bounded_per_rule_and_say_how_many_were_not_read(
    tmp_path: Path,
) -> None:
    """Past `limit` open gates a rule shows `limit` and counts the keys it did not read."""
    keeper, loaded = await open_three(tmp_path, await FileStateStore.open(tmp_path / "s.json"))
    [rule] = await keeper.open_gates(loaded, limit=2, within=10.0)
    assert (len(rule["gates"]), rule["keys"], rule["unread"], rule["error"]) == (2, 3, 1, None)
    [rule] = await keeper.open_gates(loaded, limit=5, within=10.0)
    assert sorted(g["key"] for g in rule["gates"]) == ["a", "b", "c"] and rule["unread"] == 0


async def test_a_store_that_does_not_answer_shows_what_was_read_and_says_so(
    tmp_path: Path,
) -> None:
    """ConfigMap state whose second gate read hangs: the read ends at `within` with the
    first gate shown and the rule saying the store did not answer."""
    async with KubeEmulator(namespaces=["trigger"]) as kube:
        api_client = client.ApiClient(configuration=kube.client_configuration())
        try:
            store = ConfigMapStateStore(
                api_client, "trigger", "trigger-state", clock=VirtualClock()
            )
            keeper, loaded = await open_three(tmp_path, store)
            second = (await store.keys("gate/batch/"))[1]
            held = kube.delay(
                math.inf, method="GET", path_contains=configmap_name("trigger-state", second)
            )
            [rule] = await keeper.open_gates(loaded, limit=5, within=0.2)
            held.release()
        finally:
            await api_client.close()
    assert len(rule["gates"]) == 1 and (rule["keys"], rule["unread"]) == (3, 2)
    assert rule["error"] == "the state store did not answer within 0.2s"
