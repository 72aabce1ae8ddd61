"""The OSS poller against the OSS server emulator with the real oss2 client."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import oss2
import pytest
import structlog
import yaml

from tests.daemon import DaemonProcess, running, until, wait_for
from trigger.clock import VirtualClock
from trigger.core.metrics import Metrics
from trigger.core.pipeline import MetricsHooks, Pipeline
from trigger.core.state import FileStateStore, load_state_file
from trigger.events import format_time
from trigger.rules.loader import load_rules
from trigger.settings import Settings
from trigger.sources.base import SourceContext
from trigger.sources.oss.checkpoint import digest
from trigger.sources.oss.poll import (
    BucketPoller,
    Checkpoint,
    OssPollError,
    OssPollSource,
    PollMetrics,
    poll_groups,
)
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.local import LocalSink
from trigger.submit.submitter import Submitter
from trigger.testing.ossserver import OssServer

AK, SK = "AKIDTEST", "SKTEST"
BUCKET = "raw-data"
OLD = datetime(2024, 6, 1, tzinfo=UTC)  # long before any scan: outside the lookback window
DEADLINE = 60.0


def rule_yaml(
    endpoint: str, *, name: str = "poll-in", existing: str = "fire", extra: str = ""
) -> str:
    return f"""
apiVersion: trigger/v1
kind: Rule
metadata: {{name: {name}}}
spec:
  source:
    oss:
      bucket: {BUCKET}
      key: {{prefix: in/}}
      {extra}
      poll:
        endpoint: {endpoint}
        region: cn-hangzhou
        interval: 30s
        existing: {existing}
        credentials: {{accessKeyIdEnv: OSS_AK, accessKeySecretEnv: OSS_SK}}
  workflow:
    template: ingest
    namespace: data
    parameters: {{key: "{{{{ event.key }}}}", etag: "{{{{ event.etag }}}}", type: "{{{{ event.type }}}}"}}
"""


@dataclass
class Rig:
    """A poller's world: OSS server, pipeline into a local sink, state file, virtual clock."""

    tmp: Path
    oss: OssServer
    clock: VirtualClock
    sink: LocalSink
    pipeline: Pipeline
    settings: Settings
    environ: dict[str, str]

    @property
    def workflows(self) -> list[Path]:
        return sorted((self.tmp / "workflows").rglob("*.yaml"))

    def params(self) -> list[dict[str, str]]:
        docs = [yaml.safe_load(p.read_text()) for p in self.workflows]
        return [{p["name"]: p["value"] for p in d["spec"]["arguments"]["parameters"]} for d in docs]

    async def context(self, state: Any = None) -> SourceContext:
        """A fresh source context; a new state store instance reads the file again (a restart)."""
        state = state or await FileStateStore.open(self.tmp / "state.json")
        return SourceContext(
            self.pipeline, self.pipeline.metrics, self.clock, self.sink,
            state, self.settings, self.environ,
        )  # fmt: skip

    async def poller(self, state: Any = None, metrics: PollMetrics | None = None) -> BucketPoller:
        ctx = await self.context(state)
        (group,) = poll_groups(self.pipeline.rules).values()
        return BucketPoller(ctx, group, self.settings.oss.poll, asyncio.Event(), metrics)

    def use_rules(self, text: str) -> None:
        path = self.tmp / "rules.yaml"
        path.write_text(text)
        self.pipeline.swap(load_rules([str(path)]))

    async def oss_keys_digests(self, numbers: range) -> list[int]:
        """The checkpoint digests of seeded objects `in/NNNNN.csv`."""
        found = [self.oss.get_object(BUCKET, f"in/{i:05d}.csv") for i in numbers]
        return [digest(o.key, o.etag) for o in found if o is not None]

    def seed(self, count: int, *, prefix: str = "in/", when: datetime = OLD) -> None:
        for i in range(count):
            self.oss.put_object(
                BUCKET, f"{prefix}{i:05d}.csv", f"row {i}\n".encode(), last_modified=when
            )


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    # One clock for the poller and the server's Date and LastModified: advancing it moves both.
    clock = VirtualClock(datetime.now(UTC))
    async with OssServer([BUCKET], credentials={AK: SK}, clock=clock.now) as oss:
        metrics = Metrics()
        dead = FileDeadLetterSink(tmp_path / "dead.jsonl")
        sink = LocalSink(tmp_path / "workflows")
        submitter = Submitter(sink, dead, clock, hooks=MetricsHooks(metrics, clock))
        path = tmp_path / "rules.yaml"
        path.write_text(rule_yaml(oss.endpoint))
        rules = load_rules([str(path)])
        settings = Settings.model_validate({"oss": {"poll": {"page_size": 1000}}})
        yield Rig(tmp_path, oss, clock, sink, Pipeline(rules, submitter, dead, metrics, clock), settings,
                  {"OSS_AK": AK, "OSS_SK": SK})  # fmt: skip
        await sink.close()
        await dead.close()


async def eventually(condition: Callable[[], Any], what: str) -> Any:
    """Poll `condition` (sync or async) until truthy; fail after DEADLINE seconds."""
    end = time.monotonic() + DEADLINE
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)  # polling interval, not synchronization


class HookedState:
    """A state store that calls `on_put` after each successful put (to act mid-scan) and
    records the encoded size of every value put."""

    def __init__(
        self, inner: FileStateStore, on_put: Callable[[int], None] = lambda _: None
    ) -> None:
        self.inner, self.on_put, self.puts = inner, on_put, 0
        self.sizes: list[int] = []

    async def get(self, key: str) -> Any:
        return await self.inner.get(key)

    async def put(self, key: str, value: Any) -> None:
        await self.inner.put(key, value)
        self.sizes.append(len(json.dumps(value, sort_keys=True, separators=(",", ":"))))
        self.puts += 1
        self.on_put(self.puts)


def poll_settings(**poll: Any) -> Settings:
    return Settings.model_validate({"oss": {"poll": poll}})


async def broken_state(rig: Rig) -> FileStateStore:
    """A file store that opened fine and then cannot write: its journal (where writes go)
    became a directory."""
    store = await FileStateStore.open(rig.tmp / "state.json", metrics=rig.pipeline.metrics)
    (rig.tmp / "state.json.journal").mkdir()
    return store


# --- scanning ------------------------------------------------------------------------------


async def test_scan_fires_every_object_over_pages(rig: Rig) -> None:
    """2,500 objects over 3 ListObjectsV2 pages become 2,500 Workflows."""
    rig.seed(2500)
    assert await (await rig.poller()).poll_once() == 2500
    assert len(rig.workflows) == 2500
    assert rig.oss.count(operation="ListObjectsV2", status=200) == 3


async def test_restart_mid_scan_has_no_gaps_and_no_duplicates(rig: Rig) -> None:
    """A scan that dies after page 1 resumes after it: every object once, no duplicate submits."""
    rig.seed(2500)

    def fail_next_list(puts: int) -> None:
        if puts == 1:
            rig.oss.inject(403, "AccessDenied", operation="ListObjectsV2")

    state = HookedState(await FileStateStore.open(rig.tmp / "state.json"), fail_next_list)
    with pytest.raises(OssPollError, match="AccessDenied"):
        await (await rig.poller(state)).poll_once()
    assert len(rig.workflows) == 1000
    assert await (await rig.poller()).poll_once() == 1500  # a new store: the file, read again
    status = rig.pipeline.status["poll-in"]
    assert (len(rig.workflows), status.created, status.duplicates) == (2500, 2500, 0)


async def test_second_scan_fires_nothing(rig: Rig) -> None:
    """Objects already fired are not fired again by the next scan."""
    rig.seed(30, when=datetime.now(UTC))
    poller = await rig.poller()
    assert await poller.poll_once() == 30
    assert await poller.poll_once() == 0
    assert len(rig.workflows) == 30


async def test_reupload_with_new_content_fires_again(rig: Rig) -> None:
    """An object overwritten with new content (new ETag) fires a new Workflow."""
    rig.oss.put_object(BUCKET, "in/report.csv", b"v1", last_modified=datetime.now(UTC))
    poller = await rig.poller()
    await poller.poll_once()
    rig.oss.put_object(BUCKET, "in/report.csv", b"v2", last_modified=datetime.now(UTC))
    assert await poller.poll_once() == 1
    etags = sorted(p["etag"] for p in rig.params())
    assert len(etags) == 2 and etags[0] != etags[1]


async def test_object_landing_behind_the_scan_is_found_next_scan(rig: Rig) -> None:
    """An object written mid-scan at a key the scan already passed fires on the next scan."""
    rig.settings = Settings.model_validate({"oss": {"poll": {"page_size": 100}}})
    rig.seed(150)

    def land_behind(puts: int) -> None:
        if puts == 1:
            rig.oss.put_object(BUCKET, "in/00000-late.csv", b"late")

    state = HookedState(await FileStateStore.open(rig.tmp / "state.json"), land_behind)
    poller = await rig.poller(state)
    assert await poller.poll_once() == 150
    assert await poller.poll_once() == 1
    assert "in/00000-late.csv" in {p["key"] for p in rig.params()}


async def test_existing_skip_fires_only_objects_after_start(rig: Rig) -> None:
    """With `existing: skip` the first scan fires nothing; later uploads fire."""
    rig.use_rules(rule_yaml(rig.oss.endpoint, existing="skip"))
    rig.seed(20)
    poller = await rig.poller()
    assert await poller.poll_once() == 0
    rig.oss.put_object(BUCKET, "in/new.csv", b"new")
    assert await poller.poll_once() == 1
    assert [p["key"] for p in rig.params()] == ["in/new.csv"]


async def test_checkpoint_stays_small_for_old_objects(rig: Rig) -> None:
    """After scanning many old objects the checkpoint holds no per-key state."""
    rig.settings = Settings.model_validate({"oss": {"poll": {"page_size": 100}}})
    rig.seed(500)
    await (await rig.poller()).poll_once()
    (value,) = load_state_file(rig.tmp / "state.json").values()
    assert len(json.dumps(value)) < 300
    assert Checkpoint.load(value).seen == {}


async def test_url_encoded_keys_arrive_decoded(rig: Rig) -> None:
    """Keys listed with encoding-type=url reach rules decoded, `+` and unicode intact."""
    keys = ["in/a b+c.csv", "in/über/ü%41.csv", "in/x&y=z?.csv"]
    for key in keys:
        rig.oss.put_object(BUCKET, key, key.encode(), last_modified=OLD)
    await (await rig.poller()).poll_once()
    assert sorted(p["key"] for p in rig.params()) == sorted(keys)


async def test_events_are_put_object_with_polled_id(rig: Rig) -> None:
    """Polled objects are ObjectCreated:PutObject events with id bucket/key@etag."""
    obj = rig.oss.put_object(BUCKET, "in/one.csv", b"1", last_modified=OLD)
    await (await rig.poller()).poll_once()
    (doc,) = [yaml.safe_load(p.read_text()) for p in rig.workflows]
    annotations = doc["metadata"]["annotations"]
    assert f"{BUCKET}/in/one.csv@{obj.etag}" in annotations.values()
    assert rig.params()[0]["type"] == "ObjectCreated:PutObject"


async def test_fetch_metadata_enriches_event(rig: Rig) -> None:
    """With fetchMetadata, HeadObject adds content type, user metadata and storage class."""
    text = rule_yaml(rig.oss.endpoint, extra="fetchMetadata: true").replace(
        'type: "{{ event.type }}"',
        "type: \"{{ event.contentType }}|{{ event.userMeta['x-oss-meta-origin'] }}|{{ event.storageClass }}\"",
    )
    rig.use_rules(text)
    rig.oss.put_object(BUCKET, "in/m.csv", b"m", content_type="text/csv",
                       user_meta={"x-oss-meta-origin": "uploader"}, last_modified=OLD)  # fmt: skip
    await (await rig.poller()).poll_once()
    assert rig.params()[0]["type"] == "text/csv|uploader|Standard"
    assert rig.oss.count(method="HEAD", key="in/m.csv") == 1


async def test_wrong_credentials_give_clear_error(rig: Rig) -> None:
    """A wrong secret fails the scan with OSS's error code, and fires nothing."""
    rig.environ["OSS_SK"] = "wrong"
    rig.seed(3)
    with pytest.raises(OssPollError, match="403 SignatureDoesNotMatch"):
        await (await rig.poller()).poll_once()
    assert rig.workflows == []


async def test_missing_credentials_are_a_config_error(rig: Rig) -> None:
    """An unset credentials variable is reported by name."""
    del rig.environ["OSS_AK"]
    with pytest.raises(Exception, match="OSS_AK is not set"):
        await (await rig.poller()).poll_once()


# --- the first scan's start, server clocks, the checkpoint's bound ----------------------------


async def test_first_scan_interrupted_by_a_503_keeps_its_start(rig: Rig) -> None:
    """`existing: skip`: a first scan whose second listing fails resumes from its own start,
    so objects uploaded after it began fire, behind or ahead of its position, once each."""
    rig.settings = poll_settings(page_size=100)
    rig.use_rules(rule_yaml(rig.oss.endpoint, existing="skip"))
    rig.seed(250)
    rig.oss.inject(503, "ServiceUnavailable", operation="ListObjectsV2", after=1)
    with pytest.raises(OssPollError, match="503"):
        await (await rig.poller()).poll_once()
    await rig.clock.advance(60)
    for key in ("in/00000-behind.csv", "in/zz-ahead.csv"):
        rig.oss.put_object(BUCKET, key, key.encode())
    await rig.clock.advance(60)  # the retry comes a minute later (or a restart does)
    poller = await rig.poller()
    await poller.poll_once()
    await poller.poll_once()  # the next scan finds what landed behind the first one
    assert sorted(p["key"] for p in rig.params()) == ["in/00000-behind.csv", "in/zz-ahead.csv"]
    rig.oss.put_object(BUCKET, "in/later.csv", b"later")
    assert await poller.poll_once() == 1
    status = rig.pipeline.status["poll-in"]
    assert (status.created, status.duplicates) == (3, 0)


@pytest.mark.parametrize("skewed", [0, 1], ids=["first-listing", "later-listing"])
async def test_a_listing_dated_an_hour_ahead_moves_nothing_into_the_future(
    rig: Rig, skewed: int
) -> None:
    """One listing whose Date is an hour ahead: the next 20 uploads still fire, and the skew
    is counted and logged."""
    rig.use_rules(rule_yaml(rig.oss.endpoint, existing="skip"))
    rig.seed(5)
    rig.oss.skew_date(3600, operation="ListObjectsV2", after=skewed)
    poller = await rig.poller(metrics=PollMetrics(rig.pipeline.metrics.registry))
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            assert await poller.poll_once() == 0
    for i in range(20):
        await rig.clock.advance(1)
        rig.oss.put_object(BUCKET, f"in/new-{i:02d}.csv", b"%d" % i)
    assert await poller.poll_once() == 20
    assert metric(rig, "trigger_oss_poll_skewed_dates_total", bucket=BUCKET) == 1
    (warning,) = [e for e in logs if e["event"].startswith("OSS Date header is off")]
    assert 3599 < warning["skew_seconds"] <= 3600  # Date has whole seconds


async def test_checkpoint_stays_under_its_bound_at_a_high_upload_rate(rig: Rig) -> None:
    """3,000 objects modified within the lookback against an 8 KiB bound: each fires once,
    every saved checkpoint fits, an object landing behind the scan still fires."""
    rig.settings = poll_settings(page_size=500, checkpoint_max_bytes=8192)
    now = rig.clock.now()
    for i in range(3000):
        when = now - timedelta(seconds=250 - i // 12)
        rig.oss.put_object(BUCKET, f"in/{i:05d}.csv", b"%d" % i, last_modified=when)

    def land_behind(puts: int) -> None:
        if puts == 1:
            rig.oss.put_object(BUCKET, "in/00000-late.csv", b"late")

    state = HookedState(await FileStateStore.open(rig.tmp / "state.json"), land_behind)
    poller = await rig.poller(state, PollMetrics(rig.pipeline.metrics.registry))
    assert await poller.poll_once() == 3000
    await rig.clock.advance(30)
    assert await poller.poll_once() == 1  # the late one, nothing twice
    for i in range(50):
        rig.oss.put_object(BUCKET, f"in/new-{i:02d}.csv", b"%d" % i)
    await rig.clock.advance(30)
    assert await poller.poll_once() == 50
    assert await poller.poll_once() == 0
    status = rig.pipeline.status["poll-in"]
    assert (status.created, status.duplicates, len(rig.workflows)) == (3051, 0, 3051)
    assert max(state.sizes) <= 8192 and len(state.sizes) >= 6
    labels = {"bucket": BUCKET, "part": "lookback"}
    assert metric(rig, "trigger_oss_poll_checkpoint_trimmed_total", **labels) >= 1
    assert metric(rig, "trigger_oss_poll_checkpoint_lookback_seconds", bucket=BUCKET) < 300


async def test_objects_beyond_the_bound_since_the_scan_began_are_only_submitted_again(
    rig: Rig,
) -> None:
    """More objects modified after the scan's start than the bound holds: the next scan
    submits the left-out ones again, they meet their Workflows, and the scan after fires
    nothing."""
    rig.settings = poll_settings(page_size=500, checkpoint_max_bytes=8192)
    later = rig.clock.now() + timedelta(seconds=5)
    for i in range(2000):
        rig.oss.put_object(BUCKET, f"in/{i:05d}.csv", b"%d" % i, last_modified=later)
    poller = await rig.poller()
    assert await poller.poll_once() == 2000
    await rig.clock.advance(30)
    again = await poller.poll_once()
    assert 0 < again < 2000
    assert await poller.poll_once() == 0
    status = rig.pipeline.status["poll-in"]
    assert (status.created, status.duplicates, len(rig.workflows)) == (2000, again, 2000)


async def test_version_1_checkpoint_past_the_bound_resumes(rig: Rig) -> None:
    """A checkpoint an earlier version could no longer save (just under 1 MiB, mid-scan) is
    resumed after the upgrade: the objects after its position fire once, and it fits again."""
    rig.seed(3000)
    (group,) = poll_groups(rig.pipeline.rules).values()
    rng = random.Random(5)

    def packed(digests: list[int]) -> str:
        return base64.b64encode(b"".join(d.to_bytes(8, "big") for d in digests)).decode()

    long_ago = format_time(OLD - timedelta(days=1))
    listed = await rig.oss_keys_digests(range(1000)) + [rng.getrandbits(64) for _ in range(46_000)]
    value = {
        "version": 1, "watermark": long_ago, "seen": packed([rng.getrandbits(64) for _ in range(47_000)]),
        "scan": {"started": format_time(rig.clock.now() - timedelta(seconds=60)), "base": long_ago,
                 "horizon": long_ago, "after": "in/00999.csv", "seen": packed(listed)},
    }  # fmt: skip
    state = HookedState(await FileStateStore.open(rig.tmp / "state.json"))
    await state.inner.put(group.state_key, value)
    limit = poll_settings().oss.poll.checkpoint_max_bytes
    assert limit < len(json.dumps(value)) < 1024 * 1024
    poller = await rig.poller(state)
    assert await poller.poll_once() == 2000
    assert {p["key"] for p in rig.params()} == {f"in/{i:05d}.csv" for i in range(1000, 3000)}
    assert max(state.sizes) <= limit
    assert await poller.poll_once() == 0


# --- a checkpoint that cannot be saved --------------------------------------------------------


async def test_checkpoint_that_cannot_be_saved_never_refires_a_page(rig: Rig) -> None:
    """Every save fails: the scan goes on from memory, each object fires once, the next scan
    fires nothing, and the failure is kept for /status and /readyz."""
    rig.seed(2500)
    poller = await rig.poller(await broken_state(rig))
    assert await poller.poll_once() == 2500
    assert await poller.poll_once() == 0
    status = rig.pipeline.status["poll-in"]
    assert (status.created, status.duplicates) == (2500, 0)
    assert poller.state_error is not None and poller.state_error.reason == "io"
    labels = {"key_kind": "oss-poll", "reason": "io"}
    assert metric(rig, "trigger_state_errors_total", **labels) >= 2


async def test_checkpoint_over_the_store_limit_is_reported_with_its_key(rig: Rig) -> None:
    """A store refusing the checkpoint as too large: the scan still completes once, and the
    error names the key and size in the log, the metric and the poller's state error."""
    rig.settings = poll_settings(page_size=100)
    rig.seed(300, when=rig.clock.now() - timedelta(seconds=10))
    store = await FileStateStore.open(rig.tmp / "state.json", max_bytes=2000,
                                      metrics=rig.pipeline.metrics)  # fmt: skip
    poller = await rig.poller(store)
    (group,) = poll_groups(rig.pipeline.rules).values()
    with structlog.testing.capture_logs() as logs:
        assert await poller.poll_once() == 300
    assert await poller.poll_once() == 0
    assert poller.state_error is not None and group.state_key in str(poller.state_error)
    (line, *_) = [e for e in logs if e["event"] == "state value too large"]
    assert line["key"] == group.state_key and line["bytes"] > 2000 and line["limit"] == 2000
    labels = {"key_kind": "oss-poll", "reason": "too_large"}
    assert metric(rig, "trigger_state_errors_total", **labels) >= 1


# --- the source: loop, backoff, status, stop ---------------------------------------------------


def metric(rig: Rig, name: str, **labels: str) -> float:
    value = rig.pipeline.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_source_survives_wrong_credentials_and_reports_them(rig: Rig) -> None:
    """Failing polls are counted, shown in /status's lastError, retried, and stop cleanly."""
    rig.environ["OSS_SK"] = "wrong"
    source = OssPollSource(await rig.context())
    task = asyncio.create_task(source.run())
    labels = {"bucket": BUCKET, "reason": "SignatureDoesNotMatch"}
    await eventually(
        lambda: metric(rig, "trigger_oss_poll_errors_total", **labels) >= 1, "an error"
    )
    assert rig.pipeline.status["poll-in"].last_error.startswith("oss poll: ListObjectsV2")
    await rig.clock.advance(1)  # the first backoff
    await eventually(lambda: metric(rig, "trigger_oss_poll_errors_total", **labels) >= 2, "a retry")
    await source.stop(5)
    await asyncio.wait_for(task, DEADLINE)
    assert not task.cancelled() and task.exception() is None


async def test_source_retries_server_errors_with_backoff(rig: Rig) -> None:
    """OSS 500s are retried after 1 s, then 2 s, and the scan then completes."""
    rig.seed(3)
    rig.oss.inject(500, "InternalError", count=2, operation="ListObjectsV2")
    source = OssPollSource(await rig.context())
    task = asyncio.create_task(source.run())
    labels = {"bucket": BUCKET, "reason": "InternalError"}
    for failures, backoff in ((1, 1), (2, 2)):
        await eventually(
            lambda n=failures: metric(rig, "trigger_oss_poll_errors_total", **labels) >= n, "error"
        )
        assert rig.workflows == []
        await rig.clock.advance(backoff)
    await eventually(lambda: len(rig.workflows) == 3, "three workflows")
    await eventually(lambda: rig.pipeline.status["poll-in"].last_error is None, "error cleared")
    await source.stop(5)
    await asyncio.wait_for(task, DEADLINE)


async def test_source_reports_a_checkpoint_it_cannot_save_until_it_can(rig: Rig) -> None:
    """While saves fail the source lists the problem (for /readyz) and the rules' lastError;
    once the store works again both clear."""
    rig.seed(3)
    source = OssPollSource(await rig.context(await broken_state(rig)))
    task = asyncio.create_task(source.run())
    await eventually(source.problems, "a problem")
    (problem,) = source.problems()
    assert problem.startswith(f"oss poll: {BUCKET}: state file") and "cannot write" in problem
    assert "cannot save the checkpoint" in rig.pipeline.status["poll-in"].last_error
    assert len(rig.workflows) == 3
    (rig.tmp / "state.json.journal").rmdir()
    await rig.clock.advance(30)
    await eventually(lambda: not source.problems(), "the problem cleared")
    await eventually(lambda: rig.pipeline.status["poll-in"].last_error is None, "error cleared")
    await source.stop(5)
    await asyncio.wait_for(task, DEADLINE)


async def test_source_polls_again_after_interval(rig: Rig) -> None:
    """After a scan the source sleeps `interval`, then finds what landed meanwhile."""
    source = OssPollSource(await rig.context())
    task = asyncio.create_task(source.run())
    await eventually(
        lambda: metric(rig, "trigger_oss_poll_last_success_timestamp_seconds", bucket=BUCKET),
        "a scan",
    )
    rig.oss.put_object(BUCKET, "in/later.csv", b"later")
    await rig.clock.advance(30)
    await eventually(lambda: len(rig.workflows) == 1, "the new object")
    await source.stop(5)
    await asyncio.wait_for(task, DEADLINE)


def test_rules_on_one_prefix_share_a_poller(tmp_path: Path) -> None:
    """Rules polling the same endpoint, bucket and prefix form one group; others their own."""
    text = (
        rule_yaml("http://127.0.0.1:1", name="a")
        + "---"
        + rule_yaml("http://127.0.0.1:1", name="b")
    )
    text += "---" + rule_yaml("http://127.0.0.1:1", name="c").replace("prefix: in/", "prefix: out/")
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    groups = poll_groups(load_rules([str(path)]))
    assert sorted(g.rules for g in groups.values()) == [("a", "b"), ("c",)]


# --- the daemon ------------------------------------------------------------------------------


@pytest.fixture
def oss_process() -> Iterator[str]:
    """The OSS server as a subprocess (the daemon and this test both talk to it over HTTP)."""
    command = [sys.executable, "-m", "trigger.testing.ossserver", "--port", "0",
               "--bucket", BUCKET, "--ak", AK, "--sk", SK]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.match(r"READY (\S+)", line)
        assert match, line
        yield match.group(1)
    finally:
        process.kill()
        process.wait(timeout=DEADLINE)


def test_daemon_polls_bucket(tmp_path: Path, oss_process: str) -> None:
    """`trigger run` with a poll rule turns listed objects into Workflows, then new ones too."""
    bucket = oss2.Bucket(oss2.AuthV4(AK, SK), oss_process, BUCKET, region="cn-hangzhou")
    for i in range(3):
        bucket.put_object(f"in/{i}.csv", b"x%d" % i)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "poll.yaml").write_text(
        rule_yaml(oss_process).replace("interval: 30s", "interval: 1s")
    )
    with running(tmp_path, rules, env={"OSS_AK": AK, "OSS_SK": SK}) as daemon:
        wait_for(lambda: len(daemon.workflow_files()) == 3, what="three workflows")
        bucket.put_object("in/new.csv", b"new")
        wait_for(lambda: len(daemon.workflow_files()) == 4, what="the new object's workflow")
        # A manifest is visible a moment before its batch is synced and counted.
        wait_for(
            lambda: daemon.get("/status").json()["rules"]["poll-in"]["created"] == 4,
            what="the fourth Workflow counted",
        )
        status = daemon.get("/status").json()["rules"]["poll-in"]
    assert (status["created"], status["last_error"]) == (4, None)


async def test_daemon_killed_during_its_first_scan_fires_every_later_upload_once(
    tmp_path: Path,
) -> None:
    """`existing: skip`, SIGKILL while the first scan waits for its second page: after a
    restart every object uploaded since that scan began (behind it, ahead of it, while the
    daemon was down, later) has exactly one Workflow, and the old ones none."""
    shift = [timedelta(seconds=-200)]  # the server's clock, stepped by hand

    def server_now() -> datetime:
        return datetime.now(UTC) + shift[0]

    async with OssServer([BUCKET], credentials={AK: SK}, clock=server_now) as oss:
        for i in range(6):
            oss.put_object(BUCKET, f"in/{i:05d}.csv", b"old", last_modified=OLD)
        held = oss.hold(operation="ListObjectsV2", after=1)
        rules = tmp_path / "rules"
        rules.mkdir()
        text = rule_yaml(oss.endpoint, existing="skip").replace("interval: 30s", "interval: 1s")
        (rules / "poll.yaml").write_text(text)
        env = {"OSS_AK": AK, "OSS_SK": SK, "TRIGGER_OSS__POLL__PAGE_SIZE": "2"}
        daemon = DaemonProcess(tmp_path, rules, env=env)
        try:
            daemon.start(ready=False)
            await asyncio.wait_for(held.reached.wait(), DEADLINE)
            shift[0] += timedelta(seconds=30)
            new = ["in/00000-behind.csv", "in/zz-ahead.csv"]
            for key in new:
                oss.put_object(BUCKET, key, key.encode())
            daemon.signal(signal.SIGKILL)
            daemon.wait()
            held.release()
            shift[0] += timedelta(seconds=30)
            new.append("in/zz-while-down.csv")
            oss.put_object(BUCKET, new[-1], b"down")
            shift[0] += timedelta(seconds=30)
            daemon.start(ready=False)
            await until(lambda: created(daemon) == 3, what="the three uploads fired")
            new.append("in/zz-later.csv")
            oss.put_object(BUCKET, new[-1], b"later")
            await until(lambda: created(daemon) == 4, what="the later upload fired")
            scans = polls_done(daemon)
            await until(lambda: polls_done(daemon) >= scans + 2, what="two more scans")
            rule = daemon.get("/status").json()["rules"]["poll-in"]
            keys = sorted(yaml.safe_load(p.read_text())["spec"]["arguments"]["parameters"][0]["value"]
                          for p in daemon.workflow_files())  # fmt: skip
        finally:
            daemon.stop()
    assert (rule["created"], rule["duplicates"]) == (4, 0)
    assert keys == sorted(new)


async def test_daemon_readyz_lists_a_poll_checkpoint_that_cannot_be_saved(
    tmp_path: Path,
) -> None:
    """A state file that cannot be written: /readyz names the poller's problem (and stays
    200, so pushes go on) and /status shows it, the object still fires once; once
    writable, the problem is gone."""
    async with OssServer([BUCKET], credentials={AK: SK}) as oss:
        oss.put_object(BUCKET, "in/a.csv", b"a")
        held = oss.hold(operation="ListObjectsV2")
        rules = tmp_path / "rules"
        rules.mkdir()
        text = rule_yaml(oss.endpoint).replace("interval: 30s", "interval: 1s")
        (rules / "poll.yaml").write_text(text)
        daemon = DaemonProcess(tmp_path, rules, env={"OSS_AK": AK, "OSS_SK": SK})
        try:
            daemon.start(ready=False)
            await until(lambda: daemon.get("/readyz").status == 200, what="readiness")
            (tmp_path / "state.json.journal").mkdir()  # every state write now fails
            held.release()
            await until(lambda: "problems" in problem_report(daemon), what="a problem")
            ready = problem_report(daemon)
            rule = daemon.get("/status").json()["rules"]["poll-in"]
            (tmp_path / "state.json.journal").rmdir()
            await until(lambda: "problems" not in problem_report(daemon), what="problem gone")
            created_in_the_end = created(daemon)
        finally:
            daemon.stop()
    (problem,) = ready["problems"]["oss-poll"]
    assert problem.startswith(f"oss poll: {BUCKET}: state file") and "cannot write" in problem
    assert "cannot save the checkpoint" in rule["last_error"]
    assert (rule["created"], created_in_the_end) == (1, 1)


def problem_report(daemon: DaemonProcess) -> dict[str, Any]:
    """/readyz's answer, which must stay 200 whatever a source reports."""
    response = daemon.get("/readyz")
    assert response.status == 200, response.body
    found: dict[str, Any] = response.json()
    return found


def created(daemon: DaemonProcess) -> int:
    response = daemon.get("/status")
    return int(response.json()["rules"]["poll-in"]["created"]) if response.status == 200 else -1


def polls_done(daemon: DaemonProcess) -> int:
    return sum(1 for e in daemon.log_events() if e.get("event") == "oss poll done")
