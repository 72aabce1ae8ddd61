"""The OSS bucket poller: new and changed objects found by listing, for buckets without
event notifications (rules with `source.oss.poll`).

One poll loop runs per (endpoint, bucket, prefix) group of rules, on the leader only. A
scan lists the prefix page by page with oss2's `list_objects_v2` (`encoding_type='url'`,
run in a thread) and hands every new or changed object to the pipeline as an
`ObjectCreated:PutObject` event whose id is `bucket/key@etag`; a re-upload with new
content has a new ETag, hence a new id and a new Workflow.

The checkpoint (one state value per group, `trigger.sources.oss.checkpoint`) never holds
the bucket's keys: a LastModified watermark, digests of the objects modified after it that
already fired, and the position of a scan in progress. A scan that started at T moves the
watermark to T - `lookback`; the digests cover that overlap, so nothing fires twice. The
checkpoint stays under `checkpoint_max_bytes` at any upload rate: past it the lookback
narrows (never past the scan's start), and only when even the objects modified since the
scan started do not fit are some of them submitted again (meeting their Workflow's name).

A scan's start T is the first page's `Date`, bounded by the local clock (a `Date` ahead of
it is not trusted) and raised to the newest LastModified on that page; a `Date` more than
30 s off is logged and counted. On the first run `existing: skip` treats objects modified
before T as done (`fire` fires them), and T is saved before the first page is processed,
so an interrupted first scan resumes with the same T instead of a later one.

The trade-off: every scan lists the whole prefix (ListObjectsV2 cannot list "changed
since"), and an object that appears in listings more than `lookback` after its
LastModified, while a scan already passed its key, is missed. Progress is saved only after
the page's submissions returned, so nothing is skipped; at most the page in flight at a
crash is fired again and meets its idempotent Workflow name. A digest collision (2^-64 per
pair) would hide one object. Deleted objects fire nothing. A rule added later to a group
that already has a checkpoint does not see old objects.

Errors (network, 403, 5xx, submission, loading the checkpoint) abort the scan; it is
retried from the saved progress after a doubling backoff, counted in
`trigger_oss_poll_errors` and shown as the rules' `last_error` in /status. A checkpoint
that cannot be saved does not stop the scan (see `BucketPoller`); it is shown in /status
and makes /readyz fail until a save succeeds. The ECS RAM role credentials use oss2's
`EcsRamRoleCredentialsProvider` (instance metadata at 100.100.100.200) and are untested here.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final

import oss2
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from trigger.core.pipeline import RuleStatus, gather_cancelling
from trigger.core.state import StateError
from trigger.decoders.oss import decode_oss_record
from trigger.errors import ConfigError, SourceError, TemporarySubmitError
from trigger.events import Event, format_time, polled_object_id
from trigger.rules.model import PollCredentials
from trigger.rules.router import RuleSet
from trigger.sources.base import Source, SourceContext, SourceType
from trigger.sources.oss.checkpoint import Checkpoint, Scan, Trim, digest

log = structlog.get_logger("trigger.oss.poll")
POLLED_EVENT: Final = "ObjectCreated:PutObject"
ECS_METADATA: Final = "http://100.100.100.200/latest/meta-data/ram/security-credentials/"
ERROR_PREFIX: Final = "oss poll: "
SKEW_LOGGED: Final = 30.0  # seconds between a listing's Date and the local clock
_HEAD_CONCURRENCY: Final = 8
GroupKey = tuple[str, str, str]  # endpoint, bucket, prefix


class OssPollError(SourceError):
    """An OSS call failed; `reason` labels the metric (an OSS error code, `network`, ...)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- groups of rules -------------------------------------------------------------------


@dataclass(frozen=True)
class PollGroup:
    """The rules polling one (endpoint, bucket, prefix), and how to poll it."""

    endpoint: str
    bucket: str
    prefix: str
    region: str
    interval: float
    existing: str
    credentials: PollCredentials
    fetch_metadata: bool
    rules: tuple[str, ...]

    @property
    def state_key(self) -> str:
        where = f"{self.endpoint}\0{self.bucket}\0{self.prefix}".encode()
        return f"oss-poll/{self.bucket}/{hashlib.sha256(where).hexdigest()[:16]}"


def poll_groups(rules: RuleSet) -> dict[GroupKey, PollGroup]:
    """Group the polling rules; a group polls as often as its most frequent rule asks."""
    members: dict[GroupKey, list[Any]] = {}
    for rule in sorted(rules.rules, key=lambda r: r.name):
        if rule.kind != "oss" or rule.oss.poll is None:
            continue
        prefix = rule.oss.poll.prefix if rule.oss.poll.prefix is not None else rule.key_prefix
        members.setdefault((rule.oss.poll.endpoint, rule.oss.bucket, prefix), []).append(rule)
    groups = {}
    for (endpoint, bucket, prefix), group_rules in members.items():
        polls = [r.oss.poll for r in group_rules]
        groups[(endpoint, bucket, prefix)] = PollGroup(
            endpoint=endpoint,
            bucket=bucket,
            prefix=prefix,
            region=polls[0].region,
            interval=min(p.interval for p in polls),
            existing="fire" if any(p.existing == "fire" for p in polls) else "skip",
            credentials=polls[0].credentials,
            fetch_metadata=any(r.oss.fetchMetadata for r in group_rules),
            rules=tuple(r.name for r in group_rules),
        )
    return groups


def wanted(rules: RuleSet) -> bool:
    return any(r.kind == "oss" and r.oss.poll is not None for r in rules.rules)


# --- credentials and the oss2 client ---------------------------------------------------


def _secret(env: str | None, path: str | None, environ: Mapping[str, str], what: str) -> str | None:
    if env:
        value = environ.get(env, "")
        if not value:
            raise ConfigError(f"{what}: environment variable {env} is not set")
        return value
    if path:
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from exc
        if not value:
            raise ConfigError(f"{what}: {path} is empty")
        return value
    return None


def make_auth(creds: PollCredentials, environ: Mapping[str, str]) -> Any:
    """oss2 V4 auth from the rule's credentials (read now, so rotated files are picked up)."""
    if creds.ecsRamRole:
        provider = oss2.credentials.EcsRamRoleCredentialsProvider(ECS_METADATA + creds.ecsRamRole)
        return oss2.ProviderAuthV4(provider)
    key_id = _secret(creds.accessKeyIdEnv, creds.accessKeyIdFile, environ, "AccessKeyId")
    secret = _secret(
        creds.accessKeySecretEnv, creds.accessKeySecretFile, environ, "AccessKeySecret"
    )
    if key_id is None and secret is None and not creds.securityTokenEnv:
        return oss2.AnonymousAuth()  # nothing configured: a public-read bucket
    if key_id is None or secret is None:
        raise ConfigError("credentials need both an AccessKeyId and an AccessKeySecret")
    token = _secret(creds.securityTokenEnv, None, environ, "security token")
    if token is not None:
        static = oss2.credentials.StaticCredentialsProvider(key_id, secret, token)
        return oss2.ProviderAuthV4(static)
    return oss2.AuthV4(key_id, secret)


def credentials_problem(creds: PollCredentials, environ: Mapping[str, str]) -> str | None:
    """Why the credentials cannot be read now (what `make_auth` would raise), or None."""
    try:
        make_auth(creds, environ)
    except ConfigError as exc:
        return f"credentials: {exc}"
    return None


def _oss_error(exc: Exception, what: str) -> OssPollError:
    if isinstance(exc, oss2.exceptions.RequestError):
        return OssPollError(f"{what}: network error: {exc.exception}", reason="network")
    if isinstance(exc, oss2.exceptions.OssError):
        code = exc.code or f"HTTP{exc.status}"
        detail = f"{exc.status} {exc.code}: {exc.message}" if exc.code else str(exc.body)[:200]
        request = f" (request id {exc.request_id})" if exc.request_id else ""
        return OssPollError(f"{what}: {detail}{request}", reason=code)
    return OssPollError(f"{what}: unreadable reply: {exc}", reason="protocol")


class OssClient:
    """One group's oss2 Bucket; every call runs in a thread, errors become OssPollError."""

    def __init__(self, group: PollGroup, environ: Mapping[str, str], timeout: float) -> None:
        self.group = group
        auth = make_auth(group.credentials, environ)
        try:
            self._bucket = oss2.Bucket(
                auth, group.endpoint, group.bucket, region=group.region, connect_timeout=timeout
            )
        except (oss2.exceptions.OssError, ValueError) as exc:
            raise ConfigError(f"OSS endpoint {group.endpoint!r}: {exc}") from exc

    async def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except (oss2.exceptions.OssError, RuntimeError, ValueError) as exc:
            raise _oss_error(exc, f"{what} {self.group.bucket}") from exc

    async def list_page(self, token: str, start_after: str, max_keys: int) -> Any:
        return await self._call(
            "ListObjectsV2",
            self._bucket.list_objects_v2,
            self.group.prefix,
            "",
            token,
            start_after if not token else "",
            fetch_owner=True,
            encoding_type="url",
            max_keys=max_keys,
        )

    async def head(self, key: str) -> dict[str, Any] | None:
        """Content type, user metadata and storage class; None when the object is gone."""
        try:
            result = await asyncio.to_thread(self._bucket.head_object, key)
        except (oss2.exceptions.NotFound, oss2.exceptions.NoSuchKey):
            return None
        except (oss2.exceptions.OssError, RuntimeError, ValueError) as exc:
            raise _oss_error(exc, f"HeadObject {self.group.bucket}/{key}") from exc
        headers = result.headers
        return {
            "contentType": headers.get("content-type"),
            "userMeta": {
                k.lower(): v for k, v in headers.items() if k.lower().startswith("x-oss-meta-")
            },
            "storageClass": headers.get("x-oss-storage-class"),
        }


# --- the poller ------------------------------------------------------------------------


def object_event(bucket: str, region: str, obj: Any, meta: Mapping[str, Any] | None) -> Event:
    """The event for one listed object (and its HeadObject metadata, if fetched)."""
    account = getattr(getattr(obj, "owner", None), "id", None) or "unknown"
    modified = datetime.fromtimestamp(obj.last_modified, tz=UTC)
    etag = str(obj.etag).strip('"').upper()
    record_object: dict[str, Any] = {"key": obj.key, "size": obj.size, "eTag": etag}
    if meta is not None:
        record_object["objectMeta"] = {
            "mimeType": meta["contentType"],
            "userMeta": meta["userMeta"],
        }
    record = {
        "eventName": POLLED_EVENT,
        "eventSource": "acs:oss",
        "eventTime": format_time(modified),
        "eventVersion": "1.0",
        "region": region,
        "oss": {
            "bucket": {
                "name": bucket,
                "arn": f"acs:oss:{region}:{account}:{bucket}",
                "ownerIdentity": account,
            },
            "object": record_object,
            "ossSchemaVersion": "1.0",
        },
    }
    event = decode_oss_record(
        record,
        where="poll",
        event_id=polled_object_id(bucket, obj.key, etag),
        event_type=POLLED_EVENT,
    )
    storage = (meta or {}).get("storageClass") or obj.storage_class
    return replace(event, fields={**event.fields, "storageClass": storage, "polled": True})


def listing_date(result: Any) -> datetime | None:
    """The `Date` header of an OSS reply, or None when it is missing or unreadable."""
    try:
        moment = parsedate_to_datetime(result.headers.get("date", ""))
    except (TypeError, ValueError):
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None


def scan_start(date: datetime | None, local: datetime, listed: Iterable[Any]) -> datetime:
    """When a scan starts, for its watermark: the listing's `Date`, not trusted further
    than the evidence goes.

    Taking a start later than the real one would skip objects, taking an earlier one only
    widens the overlap between scans, so the start is the earlier of the server's `Date`
    and the local clock, raised to the newest LastModified listed (the server's clock had
    reached that), and cut to whole seconds as LastModified is.
    """
    moment = local if date is None else min(date, local)
    newest = max((int(o.last_modified) for o in listed), default=None)
    if newest is not None:
        moment = max(moment, datetime.fromtimestamp(newest, tz=UTC))
    return moment.replace(microsecond=0)


class BucketPoller:
    """Scans one group's prefix; `poll_once` is one scan, resumed from the checkpoint.

    The checkpoint is saved after every page that fired something (and every
    `checkpoint_every`); a save that fails is reported (`state_error`) but does not stop
    the scan, which goes on from memory, so no page is fired twice in this process. The
    next scan starts from memory too until a save succeeds. Only the first run's start
    must be saved before anything is fired or skipped: that save failing ends the scan.
    """

    def __init__(
        self,
        ctx: SourceContext,
        group: PollGroup,
        settings: Any,
        stopping: asyncio.Event,
        metrics: PollMetrics | None = None,
    ) -> None:
        self.ctx, self.group, self.settings, self.stopping = ctx, group, settings, stopping
        self.metrics = metrics
        self.state_error: StateError | None = None  # the last save failed with this
        self._unsaved: Checkpoint | None = None  # progress the store has not taken
        self._warned: datetime | None = None  # the scan whose trimming was logged

    async def poll_once(self) -> int:
        """One scan (or the rest of an interrupted one); returns how many objects fired."""
        client = OssClient(self.group, self.ctx.environ, self.settings.timeout)
        checkpoint = self._unsaved or await self._load()
        scan, token, fired = checkpoint.scan, "", 0
        saved = self.ctx.clock.monotonic()
        while True:
            after = scan.after if scan is not None else ""
            page = await client.list_page(token, after, self.settings.page_size)
            if scan is None:
                started = self._started(page)
                scan = checkpoint.begin(started, self.group.existing, self.settings.lookback)
                checkpoint.scan = scan
            if not checkpoint.initialized and scan.base is not None:
                # `existing: skip`: the first run's base decides what counts as existing;
                # were it only in memory, a restart would take a later one and skip what
                # came between.
                await self._save(checkpoint, required=True)
                checkpoint.initialized = True
            count = await self._page(client, page.object_list, checkpoint, scan)
            fired += count
            if page.object_list:
                scan.after = page.object_list[-1].key
            if not page.is_truncated:
                break
            token = page.next_continuation_token
            if count or self.ctx.clock.monotonic() - saved >= self.settings.checkpoint_every:
                await self._save(checkpoint)
                saved = self.ctx.clock.monotonic()
            if self.stopping.is_set():
                await self._save(checkpoint)
                return fired
        checkpoint.finish(scan)
        await self._save(checkpoint)
        return fired

    async def _load(self) -> Checkpoint:
        value = await self.ctx.state.get(self.group.state_key)
        return await asyncio.to_thread(Checkpoint.load, value)

    def _started(self, page: Any) -> datetime:
        date, local = listing_date(page), self.ctx.clock.now()
        started = scan_start(date, local, page.object_list)
        if date is not None:
            skew = (date - local).total_seconds()
            if self.metrics is not None:
                self.metrics.clock_skew.labels(self.group.bucket).set(skew)
            if abs(skew) > SKEW_LOGGED:
                if self.metrics is not None:
                    self.metrics.skewed.labels(self.group.bucket).inc()
                log.warning(
                    "OSS Date header is off the local clock; the scan starts at the earlier",
                    bucket=self.group.bucket,
                    date=format_time(date),
                    local=format_time(local),
                    skew_seconds=round(skew, 3),
                    started=format_time(started),
                )
        return started

    async def _page(
        self, client: OssClient, objects: list[Any], checkpoint: Checkpoint, scan: Scan
    ) -> int:
        """Fire the page's new objects; returns when every submission is done."""
        fresh = []
        horizon = scan.horizon.timestamp()
        base = None if scan.base is None else scan.base.timestamp()
        old, collected = checkpoint.seen, scan.seen
        for obj in objects:
            modified = int(obj.last_modified)
            mark = digest(obj.key, str(obj.etag))
            if modified >= horizon:
                collected[mark] = modified
            if (base is None or modified >= base) and mark not in old:
                fresh.append(obj)
        if not fresh:
            return 0
        events = await self._events(client, fresh)
        await gather_cancelling(*(self.ctx.pipeline.handle(e) for e in events))
        return len(events)

    async def _events(self, client: OssClient, objects: list[Any]) -> list[Event]:
        group = self.group
        if not group.fetch_metadata:
            return [object_event(group.bucket, group.region, o, None) for o in objects]
        limit = asyncio.Semaphore(_HEAD_CONCURRENCY)

        async def one(obj: Any) -> Event | None:
            async with limit:
                meta = await client.head(obj.key)
            if meta is None:
                log.info("object gone before HeadObject", bucket=group.bucket, key=obj.key)
                return None
            return object_event(group.bucket, group.region, obj, meta)

        found = await gather_cancelling(*(one(o) for o in objects))
        return [e for e in found if e is not None]

    async def _save(self, checkpoint: Checkpoint, *, required: bool = False) -> None:
        """Save `checkpoint` within the configured bound; see the class docstring."""
        limit = self.settings.checkpoint_max_bytes
        value, trim = await asyncio.to_thread(checkpoint.dump, limit)
        try:
            await self.ctx.state.put(self.group.state_key, value)
        except StateError as exc:
            self.state_error, self._unsaved = exc, checkpoint
            log.error(
                "cannot save the poll checkpoint"
                + ("" if required else "; the scan goes on from memory"),
                bucket=self.group.bucket,
                key=self.group.state_key,
                bytes=trim.size,
                error=str(exc),
            )
            if required:
                raise
            return
        self.state_error = self._unsaved = None
        self._saved(checkpoint, trim)

    def _saved(self, checkpoint: Checkpoint, trim: Trim) -> None:
        bucket = self.group.bucket
        if self.metrics is not None:
            self.metrics.checkpoint_bytes.labels(bucket).set(trim.size)
            if trim.lookback is not None:
                self.metrics.lookback.labels(bucket).set(trim.lookback)
            for part, happened in (("lookback", trim.narrowed), ("digests", trim.dropped)):
                if happened:
                    self.metrics.trimmed.labels(bucket, part).inc()
        # One warning per scan (saves come every page), and one when a scan finishes.
        scan = checkpoint.scan
        started = None if scan is None else scan.started
        if not (trim.narrowed or trim.dropped) or (started is not None and started == self._warned):
            return
        self._warned = started
        log.warning(
            "poll checkpoint at its size bound; see oss.poll.checkpoint_max_bytes",
            bucket=bucket,
            key=self.group.state_key,
            bytes=trim.size,
            limit=self.settings.checkpoint_max_bytes,
            lookback_seconds=trim.lookback,  # the late-listing margin now kept
            narrowed=trim.narrowed,
            dropped=trim.dropped,  # digests left out: those objects are submitted again
        )


# --- the source ------------------------------------------------------------------------


class PollMetrics:
    """The poller's metrics, in the daemon's registry while the source exists."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.errors = Counter(
            "trigger_oss_poll_errors",
            "Failed OSS polls, by bucket and reason.",
            ["bucket", "reason"],
            registry=registry,
        )
        self.objects = Counter(
            "trigger_oss_poll_objects",
            "New or changed objects fired by the poller.",
            ["bucket"],
            registry=registry,
        )
        self.last_success = Gauge(
            "trigger_oss_poll_last_success_timestamp_seconds",
            "When a scan of the bucket last completed.",
            ["bucket"],
            registry=registry,
        )
        self.checkpoint_bytes = Gauge(
            "trigger_oss_poll_checkpoint_bytes",
            "Size of the last saved poll checkpoint (at most oss.poll.checkpoint_max_bytes).",
            ["bucket"],
            registry=registry,
        )
        self.lookback = Gauge(
            "trigger_oss_poll_checkpoint_lookback_seconds",
            "How far before its scan's start the last saved checkpoint remembers objects "
            "(oss.poll.lookback, less when the size bound narrowed it).",
            ["bucket"],
            registry=registry,
        )
        self.trimmed = Counter(
            "trigger_oss_poll_checkpoint_trimmed",
            "Checkpoint saves that hit the size bound, by what was given up: lookback "
            "(the window narrowed) or digests (those objects are submitted again).",
            ["bucket", "part"],
            registry=registry,
        )
        self.clock_skew = Gauge(
            "trigger_oss_poll_clock_skew_seconds",
            "The OSS Date header minus the local clock, at the last scan's first page.",
            ["bucket"],
            registry=registry,
        )
        self.skewed = Counter(
            "trigger_oss_poll_skewed_dates",
            f"Scans whose first listing's Date was more than {SKEW_LOGGED:g} s off the "
            "local clock (the scan then starts at the earlier of the two).",
            ["bucket"],
            registry=registry,
        )

    def unregister(self) -> None:
        for collector in (
            self.errors, self.objects, self.last_success, self.checkpoint_bytes,
            self.lookback, self.trimmed, self.clock_skew, self.skewed,
        ):  # fmt: skip
            self.registry.unregister(collector)


class PollLoop:
    """Polls one group until stopped: scan, sleep `interval`; on errors, back off."""

    def __init__(self, source: OssPollSource, group: PollGroup) -> None:
        self.source, self.group = source, group
        self.poller = BucketPoller(
            source.ctx, group, source.settings, source.stopping, source.metrics
        )

    @property
    def problem(self) -> str | None:
        """Why this group's progress is not durable right now (for /readyz), or None."""
        error = self.poller.state_error
        return None if error is None else f"{ERROR_PREFIX}{self.group.bucket}: {error}"

    async def run(self) -> None:
        failures = 0
        while not self.source.stopping.is_set():
            try:
                fired = await self.poller.poll_once()
            except (SourceError, ConfigError, StateError, TemporarySubmitError) as exc:
                failures += 1
                if isinstance(exc, StateError):
                    self.poller.state_error = exc
                self._failed(exc)
                delay = min(self.source.settings.max_backoff, 2.0 ** (failures - 1))
            else:
                failures = 0
                self._succeeded(fired)
                delay = self.group.interval
            await self.source.sleep(delay)

    def _failed(self, exc: Exception) -> None:
        reason = getattr(exc, "reason", type(exc).__name__)
        self.source.metrics.errors.labels(self.group.bucket, reason).inc()
        log.error(
            "oss poll failed; retrying",
            bucket=self.group.bucket,
            prefix=self.group.prefix,
            error=str(exc),
        )
        for rule in self.group.rules:
            self._status(rule).last_error = f"{ERROR_PREFIX}{exc}"

    def _succeeded(self, fired: int) -> None:
        metrics = self.source.metrics
        metrics.objects.labels(self.group.bucket).inc(fired)
        metrics.last_success.labels(self.group.bucket).set(self.source.ctx.clock.now().timestamp())
        log.info("oss poll done", bucket=self.group.bucket, prefix=self.group.prefix, fired=fired)
        error = self.poller.state_error
        for rule in self.group.rules:
            status = self._status(rule)
            if error is not None:
                status.last_error = f"{ERROR_PREFIX}cannot save the checkpoint: {error}"
            elif status.last_error and status.last_error.startswith(ERROR_PREFIX):
                status.last_error = None

    def _status(self, rule: str) -> RuleStatus:
        return self.source.ctx.pipeline.status.setdefault(rule, RuleStatus())


class OssPollSource:
    """The `oss-poll` source: one PollLoop task per group, owned by `run`."""

    name = "oss-poll"
    singleton = True

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.oss.poll
        self.metrics = PollMetrics(ctx.metrics.registry)
        self.groups = poll_groups(ctx.rules)
        self.stopping = asyncio.Event()
        self._loops: dict[GroupKey, PollLoop] = {}
        self._changed = asyncio.Event()
        self._done = asyncio.Event()
        self._done.set()

    def routes(self) -> list[Any]:
        return []

    def problems(self) -> list[str]:
        """Groups whose checkpoint cannot be saved: their progress is not durable."""
        return [p for loop in self._loops.values() if (p := loop.problem) is not None]

    def rules_changed(self, rules: RuleSet) -> None:
        self.groups = poll_groups(rules)
        self._changed.set()

    async def run(self) -> None:
        self._done.clear()
        tasks: dict[GroupKey, tuple[PollGroup, asyncio.Task[None]]] = {}
        try:
            while not self.stopping.is_set():
                self._changed.clear()
                self._reconcile(tasks)
                await self._wait_for_change(tasks)
            # Each loop notices `stopping` after the page it is submitting, and saves it.
            await asyncio.gather(*(task for _, task in tasks.values()))
        finally:
            for _, task in tasks.values():
                task.cancel()
            await asyncio.gather(*(t for _, t in tasks.values()), return_exceptions=True)
            self._loops.clear()
            self._done.set()

    def _reconcile(self, tasks: dict[GroupKey, tuple[PollGroup, asyncio.Task[None]]]) -> None:
        for key, (group, task) in list(tasks.items()):
            if self.groups.get(key) != group:
                # Removed or reconfigured: an interrupted page is fired again, idempotently.
                task.cancel()
                del tasks[key]
                self._loops.pop(key, None)
        for key, group in self.groups.items():
            if key not in tasks:
                name = f"oss-poll:{group.bucket}/{group.prefix}"
                loop = self._loops[key] = PollLoop(self, group)
                tasks[key] = (group, asyncio.create_task(loop.run(), name=name))

    async def _wait_for_change(
        self, tasks: Mapping[GroupKey, tuple[PollGroup, asyncio.Task[None]]]
    ) -> None:
        waiters = {
            asyncio.ensure_future(self._changed.wait()),
            asyncio.ensure_future(self.stopping.wait()),
        }
        running = {task for _, task in tasks.values()}
        try:
            done, _ = await asyncio.wait(waiters | running, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        for task in done & running:
            task.result()  # a poll loop only ends by failing: re-raise for the supervisor

    async def sleep(self, seconds: float) -> None:
        """Sleep on the injected clock, waking early when the source stops."""
        sleeper = asyncio.ensure_future(self.ctx.clock.sleep(seconds))
        stopper = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()

    async def stop(self, deadline: float) -> None:
        """Let each loop finish the page it is submitting and save it, then end."""
        self.stopping.set()
        self.metrics.unregister()
        await self._done.wait()


def _build(ctx: SourceContext) -> Source:
    return OssPollSource(ctx)


KIND: Final = SourceType(wanted=wanted, build=_build, singleton=True)
