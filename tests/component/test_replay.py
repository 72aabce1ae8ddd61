"""`trigger replay`: dead letters re-driven through the current rules and templates.

The dead letters are written the daemon's way (its Submitter and file sink, or its Kafka
dead-letter writer) for events the Kafka decoder made; the replays run through the CLI —
in-process into the local sink, as a subprocess against the Kubernetes API emulator (whose
WorkflowTemplates decide what fails) or when it is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.component.test_kafka_source import committed, read_topic
from tests.daemon import wait_for
from trigger.cli import main
from trigger.clock import SystemClock
from trigger.daemon.replay import Replay, Selection, group_for, replay_file
from trigger.decoders.kafka import decode_kafka_record
from trigger.events import Event
from trigger.rules.loader import load_rules
from trigger.rules.render import render
from trigger.submit.deadletter import DeadLetter, FileDeadLetterSink
from trigger.submit.deadletter_kafka import (
    KafkaDeadLetterSink,
    KafkaOrigin,
    KafkaTopicWriter,
    origin_scope,
)
from trigger.submit.local import LocalSink
from trigger.submit.submitter import Submitter
from trigger.testing.kafka import KafkaBroker

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def rule(name: str, parameter: str, extra: str = "", template: str = "process") -> str:
    return f"""
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: {name}}}
spec:
  source: {{kafka: {{topics: [orders], format: json}}}}
  workflow:
    template: {template}
    namespace: data
    parameters: {{order: "{{{{ event.value.{parameter} }}}}"}}
  {extra}
"""


def order(offset: int, **value: Any) -> Event:
    """The event the daemon's Kafka decoder makes of one record of `orders`."""
    body = json.dumps({"n": offset, **value}).encode()
    return decode_kafka_record("orders", 0, offset, 1_700_000_000_000 + offset, b"k", body, [])


async def dead_letters_of(
    rules_text: str, events: list[Event], dead: Path, tmp_path: Path
) -> None:
    """Submit `events` through the daemon's Submitter with `rules_text`: what fails is
    dead-lettered into `dead` as the daemon does it."""
    source = tmp_path / "first-rules.yaml"
    source.write_text(rules_text)
    rules = load_rules([str(source)])
    sink = LocalSink(tmp_path / "unused")
    letters = FileDeadLetterSink(dead)
    submitter = Submitter(sink, letters, SystemClock())
    try:
        for event in events:
            for match in rules.route(event).matches:
                await submitter.submit(match.rule, match.event, on_exhausted="dead-letter")
    finally:
        await sink.close()
        await letters.close()


def records(dead: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in dead.read_bytes().splitlines() if line.startswith(b"{")]


def workflows(directory: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: yaml.safe_load(p.read_text()) for p in directory.rglob("*.yaml")}


def replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["replay", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


async def test_a_mix_of_records_ends_created_duplicate_failed_and_bad(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    valid_workflow: Callable[[dict[str, Any]], None],
) -> None:
    """Fixed rule → created; one already created → duplicate; still broken → failed again
    (kept, reason and replays updated); a bad line → reported and kept; exit 1."""
    dead, out = tmp_path / "dead.jsonl", tmp_path / "wf"
    broken = rule("ingest", "id") + rule("report", "missing")
    events = [order(i, id=f"o-{i}") for i in range(4)]
    await dead_letters_of(broken.replace("value.id", "value.orderId"), events, dead, tmp_path)
    assert len(records(dead)) == 8
    with dead.open("ab") as handle:
        handle.write(b"this is not a record\n")
    fixed = tmp_path / "rules.yaml"
    fixed.write_text(broken)
    already = render(load_rules([str(fixed)]).by_name["ingest"], events[0])
    await LocalSink(out).create(already)

    code, text = await asyncio.to_thread(
        replay, capsys, str(dead), "--rules", str(fixed), "--sink", f"local:{out}"
    )
    assert code == 1, text
    assert "3 created, 1 duplicate, 4 failed again (0 filtered out, 1 bad, 0 not selected," in text
    assert f"duplicate {already['metadata']['name']}" in text
    assert "failed again: RenderError: rule report: workflow.parameters.order" in text
    assert "line 9: bad, kept" in text
    made = workflows(out)
    assert len(made) == 4
    for workflow in made.values():
        valid_workflow(workflow)
    left = dead.read_bytes().splitlines()
    assert left[-1] == b"this is not a record"
    kept = records(dead)
    assert [r["rule"] for r in kept] == ["report"] * 4
    assert all(r["replays"] == 1 and r["error"] == "RenderError" for r in kept)

    code, text = await asyncio.to_thread(
        replay, capsys, f"file:{dead}", "--rules", str(fixed), "--sink", f"local:{out}"
    )
    assert "0 created, 0 duplicate, 4 failed again" in text
    assert all(r["replays"] == 2 for r in records(dead))


async def test_rule_and_since_select_and_leave_the_rest_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--rule and --since replay only their records; the others stay byte for byte."""
    dead, out = tmp_path / "dead.jsonl", tmp_path / "wf"
    fixed = tmp_path / "rules.yaml"
    fixed.write_text(rule("ingest", "id") + rule("report", "id"))
    old = DeadLetter.of(order(0, id="a"), rule="ingest", error="RenderError", message="m",
                        time=datetime(2025, 1, 1, tzinfo=UTC))  # fmt: skip
    new = DeadLetter.of(order(1, id="b"), rule="ingest", error="RenderError", message="m",
                        time=datetime(2025, 6, 1, tzinfo=UTC))  # fmt: skip
    other = DeadLetter.of(order(2, id="c"), rule="report", error="RenderError", message="m",
                          time=datetime(2025, 6, 1, tzinfo=UTC))  # fmt: skip
    sink = FileDeadLetterSink(dead)
    for record in (old, new, other):
        await sink.write(record)
    await sink.close()
    before = dead.read_bytes().splitlines()

    code, text = await asyncio.to_thread(
        replay, capsys, str(dead), "--rules", str(fixed), "--sink", f"local:{out}",
        "--rule", "ingest", "--since", "2025-03-01",
    )  # fmt: skip
    assert code == 0, text
    assert "1 created, 0 duplicate, 0 failed again (0 filtered out, 0 bad, 2 not selected" in text
    assert dead.read_bytes().splitlines() == [before[0], before[2]]
    assert len(workflows(out)) == 1

    code, text = await asyncio.to_thread(
        replay, capsys, str(dead), "--rules", str(fixed), "--sink", f"local:{out}", "--dry-run",
        "-o", "json",
    )  # fmt: skip
    assert code == 0, text
    printed = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert sorted(w["spec"]["arguments"]["parameters"][0]["value"] for w in printed) == ["a", "c"]
    assert dead.read_bytes().splitlines() == [before[0], before[2]]
    assert len(workflows(out)) == 1


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file, a bad --since, --parallel 0, an unconfigured cluster: exit 2."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(rule("ingest", "id"))
    dead = tmp_path / "dead.jsonl"
    dead.write_text("")
    for args, message in [
        ([str(tmp_path / "nope.jsonl")], "no dead-letter file"),
        ([str(dead), "--since", "yesterday"], "cannot parse time"),
        ([str(dead), "--parallel", "0"], "--parallel must be at least 1"),
        (["kafka:dlq", "--cluster", "eu"], "Kafka cluster 'eu' is not configured"),
    ]:
        code, text = replay(capsys, *args, "--rules", str(rules))
        assert code == 2, text
        assert message in text


async def test_appends_during_a_replay_survive_the_rewrite(tmp_path: Path) -> None:
    """A daemon's sink keeps appending (its descriptor opened before) while a replay
    rewrites the file: every appended record is in the file after, none twice."""
    dead, out = tmp_path / "dead.jsonl", tmp_path / "wf"
    fixed = tmp_path / "rules.yaml"
    fixed.write_text(rule("ingest", "id", "rateLimit: {perSecond: 50, burst: 1}"))
    daemon = FileDeadLetterSink(dead)
    for i in range(30):
        await daemon.write(DeadLetter.of(order(i, id=f"o-{i}"), rule="ingest", error="E",
                                         message="m", time=datetime.now(UTC)))  # fmt: skip
    rules = load_rules([str(fixed)])
    sink = LocalSink(out)
    job = Replay(rules, Submitter(sink, FileDeadLetterSink(tmp_path / "x"), SystemClock()),
                 SystemClock())  # fmt: skip
    task = asyncio.ensure_future(replay_file(dead, job, Selection(), parallel=2))
    appended = 0
    while not task.done() or appended < 40:
        appended += 1
        await daemon.write(DeadLetter.of(None, rule="late", error="E", message=str(appended),
                                         time=datetime.now(UTC)))  # fmt: skip
    await task
    await daemon.write(DeadLetter.of(None, rule="late", error="E", message="after",
                                     time=datetime.now(UTC)))  # fmt: skip
    await daemon.close()
    await sink.close()
    assert job.tally.created == 30
    left = records(dead)
    assert [r["message"] for r in left] == [*map(str, range(1, appended + 1)), "after"]


def test_killed_half_way_then_rerun_creates_each_once(
    tmp_path: Path, valid_workflow: Callable[[dict[str, Any]], None]
) -> None:
    """SIGKILL in the middle of a replay (paced by the rule's rate limit): the file is the
    old one, whole; the rerun creates the rest, every Workflow exactly once."""
    dead, out = tmp_path / "dead.jsonl", tmp_path / "wf"
    count = 60
    broken = rule("ingest", "orderId", "rateLimit: {perSecond: 20, burst: 1}")
    events = [order(i, id=f"o-{i}") for i in range(count)]
    asyncio.run(dead_letters_of(broken, events, dead, tmp_path))
    asyncio.run(dead_letters_of(rule("gone", "missing"), [order(99)], dead, tmp_path))
    before = dead.read_bytes()
    fixed = tmp_path / "rules.yaml"
    fixed.write_text(broken.replace("orderId", "id"))
    argv = [sys.executable, "-m", "trigger.cli", "replay", str(dead), "--rules", str(fixed),
            "--sink", f"local:{out}"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        wait_for(lambda: len(list(out.rglob("*.yaml"))) >= 10, what="10 Workflows replayed")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    made = len(list(out.rglob("*.yaml")))
    assert 10 <= made < count
    assert dead.read_bytes() == before

    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                           check=False)  # fmt: skip
    assert rerun.returncode == 1, rerun.stdout + rerun.stderr
    assert f"{count - made} created, {made} duplicate, 1 failed again" in rerun.stdout
    names = sorted(p.stem for p in out.rglob("*.yaml"))
    assert len(names) == len(set(names)) == count
    for path in out.rglob("*.yaml"):
        valid_workflow(yaml.safe_load(path.read_text()))
    assert [r["rule"] for r in records(dead)] == ["gone"]
    assert os.listdir(tmp_path).count("dead.jsonl") == 1


async def kafka_dead_letters(broker: KafkaBroker, tmp_path: Path, events: list[Event]) -> None:
    """Dead-letter `events` the daemon's way: its Submitter, inside the consumed record's
    origin scope, into the cluster's dead-letter topic `dlq`; plus one foreign record."""
    source = tmp_path / "first-rules.yaml"
    source.write_text(rule("ingest", "orderId") + rule("report", "missing"))
    rules = load_rules([str(source)])
    writer = KafkaTopicWriter("dlq", {"bootstrap_servers": broker.bootstrap})
    sink = LocalSink(tmp_path / "unused")
    letters = KafkaDeadLetterSink(FileDeadLetterSink(tmp_path / "fallback.jsonl"), {"default": writer})
    submitter = Submitter(sink, letters, SystemClock())
    try:
        for event in events:
            f = event.fields
            origin = KafkaOrigin("default", "orders", f["partition"], f["offset"], b"k",
                                 event.raw, (), f["timestamp"])  # fmt: skip
            with origin_scope(origin):
                for match in rules.route(event).matches:
                    await submitter.submit(match.rule, match.event, on_exhausted="dead-letter")
        await writer.send(b"x", b"not one of ours", [])
    finally:
        await sink.close()
        await letters.close()
    assert not (tmp_path / "fallback.jsonl").exists()


def test_kafka_topic_replay_commits_and_produces_what_stays(
    tmp_path: Path,
    broker: KafkaBroker,
    capsys: pytest.CaptureFixture[str],
    valid_workflow: Callable[[dict[str, Any]], None],
) -> None:
    """kafka:TOPIC: fixed records are created with the daemon's names, a failing one is
    produced again (trigger.replays 1) with the foreign one as it was, the group commits
    the end read to, and a rerun reads only what was produced again."""
    out, fixed = tmp_path / "wf", tmp_path / "rules.yaml"
    fixed.write_text(rule("ingest", "id") + rule("report", "missing"))
    events = [order(i, id=f"o-{i}") for i in range(2)]
    asyncio.run(broker.create_topics({"dlq": 1}))
    asyncio.run(kafka_dead_letters(broker, tmp_path, events))
    args = ["kafka:dlq", "--kafka-bootstrap", broker.bootstrap, "--rules", str(fixed),
            "--sink", f"local:{out}"]  # fmt: skip

    code, text = replay(capsys, *args, "--dry-run")
    assert code == 1 and "rule report" in text, text
    assert asyncio.run(committed(broker.bootstrap, group_for("dlq"), "dlq", 1)) == {0: -1}

    code, text = replay(capsys, *args)
    assert code == 1, text
    assert "2 created, 0 duplicate, 2 failed again (0 filtered out, 1 bad, 0 not selected, 5 read)" in text
    ingest = load_rules([str(fixed)]).by_name["ingest"]
    made = workflows(out)
    assert sorted(made) == sorted(render(ingest, e)["metadata"]["name"] for e in events)
    for workflow in made.values():
        valid_workflow(workflow)
    assert asyncio.run(committed(broker.bootstrap, group_for("dlq"), "dlq", 1)) == {0: 5}
    again = asyncio.run(read_topic(broker.bootstrap, "dlq", 8))[5:]
    assert [m.value for m in again] == [events[0].raw, events[1].raw, b"not one of ours"]
    heads = [dict(m.headers) for m in again]
    assert [h.get("trigger.replays") for h in heads] == [b"1", b"1", None]
    assert heads[0]["trigger.original.timestamp"] == str(events[0].fields["timestamp"]).encode()

    code, text = replay(capsys, *args)
    assert "0 created, 0 duplicate, 2 failed again (0 filtered out, 1 bad, 0 not selected, 3 read)" in text
    assert len(workflows(out)) == 2


def template(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "WorkflowTemplate",
        "metadata": {"name": name, "namespace": "data"},
        "spec": {"arguments": {"parameters": [{"name": "order"}]}},
    }


async def test_a_template_created_since_lets_its_records_through(
    tmp_path: Path, valid_workflow: Callable[[dict[str, Any]], None]
) -> None:
    """Against the API emulator: records dead-lettered for a missing WorkflowTemplate are
    created once it exists; those whose template is still missing fail again."""
    from trigger.submit.checked import CheckedSink
    from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink
    from trigger.submit.templates import TemplateCatalog
    from trigger.testing.kubeapi import KubeEmulator

    rules = tmp_path / "rules.yaml"
    rules.write_text(rule("ingest", "id", template="ingest") + rule("report", "id", template="report"))
    dead = tmp_path / "dead.jsonl"
    events = [order(i, id=f"o-{i}") for i in range(2)]
    async with KubeEmulator(namespaces=["data"]) as kube:
        kubeconfig = kube.kubeconfig(tmp_path / "kubeconfig")
        sink = await KubernetesSink.connect(KubernetesOptions(kubeconfig=str(kubeconfig)))
        catalog = TemplateCatalog(sink.api_client, namespaces=["data"], cluster_templates=False)
        await catalog.load()
        letters = FileDeadLetterSink(dead)
        checked = CheckedSink(sink, catalog, SystemClock(), grace=0.0)
        submitter = Submitter(checked, letters, SystemClock())
        loaded = load_rules([str(rules)])
        for event in events:
            for match in loaded.route(event).matches:
                await submitter.submit(match.rule, match.event, on_exhausted="dead-letter")
        await sink.close()
        await letters.close()
        assert {r["error"] for r in records(dead)} == {"PermanentSubmitError"}
        assert len(records(dead)) == 4
        kube.put_object("argoproj.io", "v1alpha1", "workflowtemplates", template("ingest"))

        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "trigger.cli", "replay", str(dead), "--rules", str(rules),
            "--sink", "kubernetes", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=tmp_path, env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        text = out.decode() + err.decode()
        assert process.returncode == 1, text
        assert "2 created, 0 duplicate, 2 failed again" in text
        assert "failed again: PermanentSubmitError: WorkflowTemplate data/report not found" in text
        created = kube.objects("argoproj.io", "v1alpha1", "workflows")
        assert sorted(w["metadata"]["labels"]["trigger.dev/rule"] for w in created) == ["ingest"] * 2
        for workflow in created:
            valid_workflow(workflow)
    assert [r["rule"] for r in records(dead)] == ["report", "report"]


def test_ctrl_c_stops_cleanly_and_keeps_only_what_is_left(tmp_path: Path) -> None:
    """SIGINT half-way: exit 130 with the summary marked interrupted; the file already
    lacks what was created, and the rerun creates the rest."""
    dead, out = tmp_path / "dead.jsonl", tmp_path / "wf"
    count = 40
    broken = rule("ingest", "orderId", "rateLimit: {perSecond: 20, burst: 1}")
    asyncio.run(dead_letters_of(broken, [order(i, id=f"o-{i}") for i in range(count)], dead,
                                tmp_path))  # fmt: skip
    fixed = tmp_path / "rules.yaml"
    fixed.write_text(broken.replace("orderId", "id"))
    argv = [sys.executable, "-m", "trigger.cli", "replay", str(dead), "--rules", str(fixed),
            "--sink", f"local:{out}"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)  # fmt: skip
    try:
        wait_for(lambda: len(list(out.rglob("*.yaml"))) >= 5, what="5 Workflows replayed")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted:" in stderr
    made, left = len(list(out.rglob("*.yaml"))), len(records(dead))
    # A create the stop cut short after the sink wrote it keeps its record (at most one per
    # worker): the rerun finds that Workflow as a duplicate.
    in_flight = left - (count - made)
    assert 0 <= in_flight <= 4 and made < count
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                           check=False)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{count - made} created, {in_flight} duplicate, 0 failed again" in rerun.stdout
    assert len(list(out.rglob("*.yaml"))) == count
    assert records(dead) == []


def test_a_filter_that_rejects_drops_and_one_that_fails_keeps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record its rule's filter now rejects ends filtered out and leaves the file; one
    whose filter expression fails on it ends failed again and stays."""
    dead, out = tmp_path / "dead.jsonl", tmp_path / "wf"
    sink = FileDeadLetterSink(dead)
    for name, offset in (("skip", 0), ("broken", 1)):
        asyncio.run(sink.write(DeadLetter.of(order(offset, id="x"), rule=name, error="E",
                                             message="m", time=T0)))  # fmt: skip
    asyncio.run(sink.close())
    fixed = tmp_path / "rules.yaml"
    fixed.write_text(
        rule("skip", "id", "filter: {pattern: {value: {id: [nothing-like-it]}}}")
        + rule("broken", "id", "filter: {expr: 'event.value.absent > 1'}")
    )
    code, text = replay(capsys, str(dead), "--rules", str(fixed), "--sink", f"local:{out}")
    assert code == 1, text
    assert "(rule skip, event orders/0/0): filtered out" in text
    assert "(rule broken, event orders/0/1): failed again: ExpressionError:" in text
    assert "0 created, 0 duplicate, 1 failed again (1 filtered out," in text
    assert [r["rule"] for r in records(dead)] == ["broken"]
    assert not out.exists() or not list(out.rglob("*.yaml"))
