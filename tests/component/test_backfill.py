"""`trigger backfill RULE --from T --to T`: a rule's past Workflows, created once each.

Cron backfills go through the CLI into the local sink (and in-process beside a live
CronSource); the tick counts are computed here by brute force over every minute, not by
the schedule code under test. OSS backfills list the OSS test server with oss2.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from tests.component.test_cron_source import START, Harness, RecordingSink, rule_yaml
from tests.daemon import wait_for
from trigger.cli import main
from trigger.core.state import FileStateStore
from trigger.daemon.backfill import Backfill, cron_events
from trigger.daemon.runs import Progress, Tally
from trigger.events import format_time
from trigger.rules.loader import load_rules
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.local import LocalSink
from trigger.submit.submitter import Submitter
from trigger.testing.ossserver import OssServer

MINUTE = timedelta(minutes=1)


def cron_rule(schedule: str, timezone: str = "UTC", extra: str = "") -> str:
    return f"""
apiVersion: trigger/v1
kind: Rule
metadata: {{name: nightly}}
spec:
  source:
    cron: {{schedules: ["{schedule}"], timezone: {timezone}}}
  workflow:
    template: report
    namespace: data
    parameters: {{at: "{{{{ event.scheduledTime }}}}"}}
  {extra}
"""


def workflows(directory: Path) -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted(directory.rglob("*.yaml"))]


def scheduled(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["spec"]["arguments"]["parameters"][0]["value"] for d in docs)


def wall_ticks(tz: ZoneInfo, start: datetime, end: datetime, minutes: set[int]) -> int:
    """Brute force: the real minutes in [start, end] whose local minute is in `minutes`."""
    count, moment = 0, start.astimezone(UTC)
    while moment <= end:
        count += moment.astimezone(tz).minute in minutes
        moment += MINUTE
    return count


# zone, local day before a transition, day after it
DST_WINDOWS = [
    ("Europe/Berlin", "2025-03-29", "2025-03-31"),  # 02:00 -> 03:00
    ("Europe/Berlin", "2025-10-25", "2025-10-27"),  # 03:00 -> 02:00
    ("Asia/Shanghai", "1988-04-16", "1988-04-18"),  # 02:00 -> 03:00 (China's DST years)
    ("Asia/Shanghai", "1988-09-10", "1988-09-12"),  # 02:00 -> 01:00
]


def backfill(
    capsys: pytest.CaptureFixture[str], rules: Path, sink: Path, *args: str
) -> tuple[int, str]:
    code = main(["backfill", "nightly", "--rules", str(rules), "--sink", f"local:{sink}",
                 "--dead-letter", f"file:{sink.parent / 'dead.jsonl'}", *args])  # fmt: skip
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(("zone", "first", "last"), DST_WINDOWS)
def test_cron_backfill_across_dst_follows_the_daemon_policy(  # noqa: PLR0917 - fixtures plus one argument per column
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    write_rules: Callable[..., Path],
    valid_workflow: Callable[[dict[str, Any]], None],
    zone: str,
    first: str,
    last: str,
) -> None:
    """Across a DST change, a wall-clock rule fires at every matching real instant and a
    fixed-time rule once a day; each valid, once, and a rerun creates nothing."""
    tz = ZoneInfo(zone)
    start = datetime.fromisoformat(first).replace(tzinfo=tz)
    end = datetime.fromisoformat(last).replace(tzinfo=tz)
    for schedule, expected in [
        ("*/30 * * * *", wall_ticks(tz, start, end, {0, 30})),
        ("30 2 * * *", (end.date() - start.date()).days),
    ]:
        sink = tmp_path / schedule.replace("/", "_").replace(" ", "_") / "workflows"
        rules = write_rules(cron_rule(schedule, zone))
        code, out = backfill(capsys, rules, sink, "--from", first, "--to", last)
        assert code == 0, out
        assert f"{expected} created, 0 duplicate, 0 failed" in out
        docs = workflows(sink)
        assert len(docs) == expected
        assert len({d["metadata"]["name"] for d in docs}) == expected
        for doc in docs:
            valid_workflow(doc)
        if schedule.startswith("30 2"):  # the gap's missing 02:30 fires at 03:00
            local = {datetime.fromisoformat(t).astimezone(tz).strftime("%H:%M")
                     for t in scheduled(docs)}  # fmt: skip
            assert local <= {"02:30", "03:00"}
        code, out = backfill(capsys, rules, sink, "--from", first, "--to", last)
        assert (code, len(workflows(sink))) == (0, expected), out
        assert f"0 created, {expected} duplicate, 0 failed" in out


def test_dry_run_prints_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], write_rules: Callable[..., Path]
) -> None:
    """--dry-run -o json prints one Workflow per tick, and the sink stays empty."""
    rules = write_rules(cron_rule("0 * * * *"))
    sink = tmp_path / "workflows"
    code, out = backfill(
        capsys, rules, sink, "--from", "2025-01-01T00:00Z", "--to", "2025-01-01T05:00Z",
        "--dry-run", "-o", "json",
    )  # fmt: skip
    assert code == 0, out
    import json

    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["spec"]["arguments"]["parameters"][0]["value"] for d in docs] == [
        f"2025-01-01T0{h}:00:00Z" for h in range(6)
    ]
    assert not sink.exists() or not workflows(sink)


def test_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], write_rules: Callable[..., Path]
) -> None:
    """An unknown rule, --to before --from and --parallel 0 are usage errors."""
    rules = write_rules(cron_rule("0 * * * *"))
    sink = tmp_path / "w"
    assert backfill(capsys, rules, sink, "--from", "2025-01-02", "--to", "2025-01-01")[0] == 2
    assert backfill(capsys, rules, sink, "--from", "2025-01-01", "--to", "2025-01-02",
                    "--parallel", "0")[0] == 2  # fmt: skip
    code = main(["backfill", "nope", "--rules", str(rules), "--from", "1", "--to", "2"])
    assert code == 2


async def test_backfill_beside_a_live_cron_source_creates_each_tick_once(tmp_path: Path) -> None:
    """A backfill running while the daemon's cron source fires the same ticks: every tick
    has one Workflow, the live ones count as duplicates or win their own race."""
    state = await FileStateStore.open(tmp_path / "state.json")
    live = Harness(tmp_path, RecordingSink(LocalSink(tmp_path / "workflows")), state)
    await state.put("cron/tick", {"scheduledTime": format_time(START)})
    await live.start(rule_yaml())
    try:
        await live.at(START + timedelta(hours=1))  # 4 ticks fired live
        assert len(live.sink.created) == 4
        (rule,) = load_rules([tmp_path / "rules.yaml"]).rules
        dead = FileDeadLetterSink(tmp_path / "dead.jsonl")
        sink = LocalSink(tmp_path / "workflows")
        job = Backfill(rule, Submitter(sink, dead, live.clock), dead, live.clock, parallel=3)
        end = START + timedelta(hours=3)
        running = asyncio.create_task(job.run(cron_events(rule, START, end)))
        await live.at(START + timedelta(hours=2))  # the source fires 4 more meanwhile
        tally = await asyncio.wait_for(running, 30)
        await sink.close()
        await dead.close()
    finally:
        await live.stop()
        await live.sink.close()
    names = [d["metadata"]["name"] for d in workflows(tmp_path / "workflows")]
    assert len(names) == len(set(names)) == 13  # START .. START+3h every 15 min
    assert tally.total == 13 and tally.failed == 0
    assert tally.created + tally.duplicate == 13 and tally.duplicate >= 4


def test_interrupted_backfill_resumes_by_rerunning(
    tmp_path: Path, write_rules: Callable[..., Path]
) -> None:
    """SIGINT half-way stops cleanly (exit 130, a summary); the rerun creates the rest,
    the ones already made are duplicates, and no tick has two Workflows."""
    slow = write_rules(cron_rule("* * * * *", extra="rateLimit: {perSecond: 20}"), "slow.yaml")
    sink = tmp_path / "workflows"
    argv = [sys.executable, "-m", "trigger.cli", "backfill", "nightly", "--from",
            "2025-01-01T00:00Z", "--to", "2025-01-01T09:59Z", "--sink", f"local:{sink}",
            "--dead-letter", f"file:{tmp_path / 'dead.jsonl'}"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*argv, "--rules", str(slow)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    try:
        wait_for(lambda: len(list(sink.rglob("*.yaml"))) >= 50, what="50 workflows", timeout=30)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err
    made = len(list(sink.rglob("*.yaml")))
    assert 50 <= made < 600
    fast = write_rules(cron_rule("* * * * *"), "fast.yaml")
    rerun = subprocess.run(
        [*argv, "--rules", str(fast)], capture_output=True, text=True, env=env, timeout=60,
        check=False,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    docs = workflows(sink)
    assert len(docs) == len({d["metadata"]["name"] for d in docs}) == 600
    created = 600 - made
    assert f"{created} created, {made} duplicate, 0 failed" in rerun.stdout, rerun.stdout


# --- OSS ---------------------------------------------------------------------------------

AK, SK = "AKIDTEST", "SKTEST"
BUCKET = "raw-data"
IN_RANGE = datetime(2025, 5, 1, 12, tzinfo=UTC)


def oss_rule(endpoint: str) -> str:
    return f"""
apiVersion: trigger/v1
kind: Rule
metadata: {{name: nightly}}
spec:
  source:
    oss:
      bucket: {BUCKET}
      key: {{prefix: in/, suffix: .csv}}
      poll:
        endpoint: {endpoint}
        region: cn-hangzhou
        credentials: {{accessKeyIdEnv: OSS_AK, accessKeySecretEnv: OSS_SK}}
  filter:
    expr: 'event.size > 6'
  workflow:
    template: ingest
    namespace: data
    parameters: {{key: "{{{{ event.key }}}}", etag: "{{{{ event.etag }}}}"}}
"""


async def test_oss_backfill_lists_three_pages_through_the_filter(
    tmp_path: Path,
    write_rules: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    valid_workflow: Callable[[dict[str, Any]], None],
) -> None:
    """Objects under the prefix and suffix modified in the range, over 3 listing pages,
    become the poller's events; the filter drops some; a rerun creates nothing."""
    monkeypatch.setenv("OSS_AK", AK)
    monkeypatch.setenv("OSS_SK", SK)
    async with OssServer([BUCKET], credentials={AK: SK}) as oss:
        for i in range(2500):  # "row N\n": 6 bytes below N=10, which the filter drops
            when = IN_RANGE if i % 5 else IN_RANGE - timedelta(days=40)  # 1 in 5 too old
            oss.put_object(BUCKET, f"in/{i:05d}.csv", f"row {i}\n".encode(), last_modified=when)
        oss.put_object(BUCKET, "in/notes.txt", b"not csv at all", last_modified=IN_RANGE)
        oss.put_object(BUCKET, "out/x.csv", b"another prefix", last_modified=IN_RANGE)
        rules = write_rules(oss_rule(oss.endpoint))
        sink = tmp_path / "workflows"
        argv = ["backfill", "nightly", "--rules", str(rules), "--sink", f"local:{sink}",
                "--from", "2025-04-01T00:00Z", "--to", "2025-05-31T00:00Z"]  # fmt: skip
        first = await asyncio.to_thread(main, argv)
        wanted = [i for i in range(2500) if i % 5 and i >= 10]
        docs = workflows(sink)
        assert first == 0
        assert sorted(d["spec"]["arguments"]["parameters"][0]["value"] for d in docs) == [
            f"in/{i:05d}.csv" for i in wanted
        ]
        for doc in docs[:50]:
            valid_workflow(doc)
        listed = [r for r in oss.requests if r.operation == "ListObjectsV2"]
        assert len(listed) >= 3
        assert await asyncio.to_thread(main, argv) == 0
        assert len(workflows(sink)) == len(wanted)


async def test_oss_backfill_that_cannot_list_says_why_and_exits_1(
    tmp_path: Path, write_rules: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing the server refuses (a wrong secret) ends in one error line and exit 1."""
    monkeypatch.setenv("OSS_AK", AK)
    monkeypatch.setenv("OSS_SK", "wrong")
    async with OssServer([BUCKET], credentials={AK: SK}) as oss:
        oss.put_object(BUCKET, "in/1.csv", b"row 1000\n", last_modified=IN_RANGE)
        rules = write_rules(oss_rule(oss.endpoint))
        argv = ["backfill", "nightly", "--rules", str(rules), "--sink", f"local:{tmp_path / 'w'}",
                "--from", "2025-04-01T00:00Z", "--to", "2025-05-31T00:00Z"]  # fmt: skip
        for extra in ([], ["--dry-run"]):
            assert await asyncio.to_thread(main, [*argv, *extra]) == 1


# --- progress ----------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    """On a TTY the tally updates a tqdm bar; elsewhere one plain line per `every` events."""
    tally = Tally(total=4)
    plain, terminal = io.StringIO(), Terminal()
    lines, bar = Progress(4, plain, every=2), Progress(4, terminal)
    for _ in range(4):
        tally.created += 1
        lines(tally)
        bar(tally)
    lines.close()
    bar.close()
    assert plain.getvalue().splitlines() == [
        "backfill: 2 done: 2 created, 0 duplicate, 0 failed (0 filtered out, 4 in range)",
        "backfill: 4 done: 4 created, 0 duplicate, 0 failed (0 filtered out, 4 in range)",
    ]
    assert "4/4" in terminal.getvalue() and "created=4" in terminal.getvalue()


def test_failures_are_counted_and_exit_1(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    write_rules: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ticks the submitter refuses (too large) are dead-lettered, counted as failed, exit 1."""
    monkeypatch.setenv("TRIGGER_SUBMIT__MAX_WORKFLOW_BYTES", "4096")
    big = cron_rule("0 * * * *").replace('}}"}', '}}", pad: ' + "x" * 5000 + "}")
    rules = write_rules(big)
    sink = tmp_path / "workflows"
    code, out = backfill(capsys, rules, sink, "--from", "2025-01-01T00:00Z", "--to",
                         "2025-01-01T02:00Z")  # fmt: skip
    assert code == 1, out
    assert "0 created, 0 duplicate, 3 failed" in out
    assert "trigger: failed: WorkflowTooLarge" in out
    assert len((tmp_path / "dead.jsonl").read_text().splitlines()) == 3


async def test_backfill_obeys_the_rules_rate_limit(
    tmp_path: Path, write_rules: Callable[..., Path]
) -> None:
    """With rateLimit 1/s, the ticks go out one per second of the (virtual) clock."""
    from tests.component.test_cron_source import until
    from trigger.clock import VirtualClock

    path = write_rules(cron_rule("0 * * * *", extra="rateLimit: {perSecond: 1, burst: 1}"))
    (rule,) = load_rules([path]).rules
    clock = VirtualClock(START)
    dead = FileDeadLetterSink(tmp_path / "dead.jsonl")
    sink = LocalSink(tmp_path / "workflows")
    job = Backfill(rule, Submitter(sink, dead, clock), dead, clock, parallel=4)
    task = asyncio.create_task(job.run(cron_events(rule, START, START + timedelta(hours=4))))
    try:
        for second in range(1, 6):
            await until(lambda n=second: job.tally.created >= n, f"tick {second} created")
            if second < 5:
                await until(lambda: clock.sleeping >= 1, "the next tick waiting on the clock")
                assert job.tally.created == second
                await clock.advance(1.0)
        tally = await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
        await sink.close()
        await dead.close()
    assert (tally.created, tally.failed) == (5, 0)
