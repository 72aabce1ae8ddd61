"""The OSS bucket poller: new and changed objects found by listing, for buckets without
event notifications (rules with `source.oss.poll`).

One poll loop runs per (endpoint, bucket, prefix) group of rules, on the leader only. A
scan lists the prefix page by page with oss2's `list_objects_v2` (`encoding_type='url'`,
run in a thread) and hands every new or changed object to the pipeline as an
`ObjectCreated:PutObject` event whose id is `bucket/key@etag`; a re-upload with new
content has a new ETag, hence a new id and a new Workflow.

The checkpoint (one small state value per group) never holds the bucket's keys:

- `watermark`: objects whose LastModified is before it are done. A scan that started at
  server time T (the `Date` of its first page) moves it to T - `lookback`.
- `seen`: 64-bit digests of (key, ETag) of objects at or after the watermark that were
  already fired (or skipped on the first run), so the overlap between scans fires nothing
  twice. Its size follows the upload rate over `lookback` plus one scan, not the bucket.
- `scan`: the scan in progress (its start, the last key whose page was submitted, the
  digests it collected), saved after every page that fired something, so a restart or a
  new leader resumes with `start-after` instead of firing the first pages again.

The trade-off: every scan lists the whole prefix (ListObjectsV2 cannot list "changed
since"), and an object that appears in listings more than `lookback` after its
LastModified, while a scan already passed its key, is missed. Progress is saved only after
the page's submissions returned, so nothing is skipped; at most the page in flight at a
crash is fired again and meets its idempotent Workflow name. A digest collision (2^-64 per
pair) would hide one object. Deleted objects fire nothing. On the first run `existing:
skip` treats objects modified before the first page's `Date` as done; `fire` fires them.
A rule added later to a group that already has a checkpoint does not see old objects.

Errors (network, 403, 5xx, state, submission) abort the scan; it is retried from the
saved progress after a doubling backoff, counted in `trigger_oss_poll_errors` and shown as
the rules' `last_error` in /status. The ECS RAM role credentials use oss2's
`EcsRamRoleCredentialsProvider` (instance metadata at 100.100.100.200) and are untested here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final

import oss2
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from trigger.decoders.oss import decode_oss_record
from trigger.errors import ConfigError, SourceError, TemporarySubmitError
from trigger.events import Event, format_time, parse_time, polled_object_id
from trigger.rules.model import PollCredentials
from trigger.rules.router import RuleSet
from trigger.runtime.pipeline import RuleStatus, gather_cancelling
from trigger.runtime.sources import SourceKind
from trigger.runtime.state import StateError
from trigger.sources.base import Source, SourceContext

log = structlog.get_logger("trigger.oss.poll")
POLLED_EVENT: Final = "ObjectCreated:PutObject"
ECS_METADATA: Final = "http://100.100.100.200/latest/meta-data/ram/security-credentials/"
ERROR_PREFIX: Final = "oss poll: "
_DIGEST_BYTES: Final = 8
_HEAD_CONCURRENCY: Final = 8
_LARGE_SEEN: Final = 50_000  # digests; a checkpoint this big nears the state size limit
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


# --- the checkpoint --------------------------------------------------------------------


def digest(key: str, etag: str) -> int:
    data = key.encode("utf-8", "surrogatepass") + b"\0" + etag.upper().encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=_DIGEST_BYTES).digest(), "big")


def pack(digests: Iterable[int]) -> str:
    return base64.b64encode(
        b"".join(d.to_bytes(_DIGEST_BYTES, "big") for d in sorted(digests))
    ).decode()


def unpack(text: str) -> set[int]:
    raw = base64.b64decode(text)
    size = _DIGEST_BYTES
    return {int.from_bytes(raw[i : i + size], "big") for i in range(0, len(raw), size)}


def _time(value: Any) -> datetime | None:
    return None if value is None else parse_time(value, where="checkpoint")


def _stamp(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


@dataclass
class Scan:
    """A scan in progress: fires objects at or after `base` not in the old `seen`."""

    started: datetime  # server time of the first page
    base: datetime | None  # the watermark it fires from; None: everything (existing: fire)
    horizon: datetime  # the watermark it will leave; digests at or after it are collected
    after: str = ""  # the last key whose page was submitted
    seen: set[int] = field(default_factory=set)


@dataclass
class Checkpoint:
    initialized: bool = False  # False: never polled, the first-run policy applies
    watermark: datetime | None = None
    seen: set[int] = field(default_factory=set)
    scan: Scan | None = None

    @classmethod
    def load(cls, value: Mapping[str, Any] | None) -> Checkpoint:
        if value is None:
            return cls()
        try:
            raw = value.get("scan")
            scan = None
            if raw is not None:
                scan = Scan(
                    started=parse_time(raw["started"]),
                    base=_time(raw.get("base")),
                    horizon=parse_time(raw["horizon"]),
                    after=str(raw.get("after", "")),
                    seen=unpack(raw.get("seen", "")),
                )
            return cls(True, _time(value.get("watermark")), unpack(value.get("seen", "")), scan)
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceError(f"poll checkpoint is unreadable: {exc!r}") from exc

    def dump(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "version": 1,
            "watermark": _stamp(self.watermark),
            "seen": pack(self.seen),
            "scan": None,
        }
        if self.scan is not None:
            s = self.scan
            value["scan"] = {
                "started": format_time(s.started),
                "base": _stamp(s.base),
                "horizon": format_time(s.horizon),
                "after": s.after,
                "seen": pack(s.seen),
            }
        return value

    def begin(self, started: datetime, existing: str, lookback: float) -> Scan:
        first = started if existing == "skip" else None
        base = self.watermark if self.initialized else first
        horizon = started - timedelta(seconds=lookback)
        if base is not None and base > horizon:
            horizon = base
        return Scan(started, base, horizon)

    def finish(self, scan: Scan) -> None:
        self.initialized, self.watermark, self.seen, self.scan = True, scan.horizon, scan.seen, None


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


def _server_time(result: Any, fallback: datetime) -> datetime:
    try:
        moment = parsedate_to_datetime(result.headers.get("date", ""))
    except (TypeError, ValueError):
        return fallback
    return moment.astimezone(UTC) if moment.tzinfo else fallback


class BucketPoller:
    """Scans one group's prefix; `poll_once` is one scan, resumed from the checkpoint."""

    def __init__(
        self, ctx: SourceContext, group: PollGroup, settings: Any, stopping: asyncio.Event
    ) -> None:
        self.ctx, self.group, self.settings, self.stopping = ctx, group, settings, stopping

    async def poll_once(self) -> int:
        """One scan (or the rest of an interrupted one); returns how many objects fired."""
        client = OssClient(self.group, self.ctx.environ, self.settings.timeout)
        checkpoint = Checkpoint.load(await self.ctx.state.get(self.group.state_key))
        scan, token, fired = checkpoint.scan, "", 0
        saved = self.ctx.clock.monotonic()
        while True:
            after = scan.after if scan is not None else ""
            page = await client.list_page(token, after, self.settings.page_size)
            if scan is None:
                started = _server_time(page, self.ctx.clock.now())
                scan = checkpoint.begin(started, self.group.existing, self.settings.lookback)
            count = await self._page(client, page.object_list, checkpoint, scan)
            fired += count
            if page.object_list:
                scan.after = page.object_list[-1].key
            if not page.is_truncated:
                break
            token = page.next_continuation_token
            checkpoint.scan = scan
            if count or self.ctx.clock.monotonic() - saved >= self.settings.checkpoint_every:
                await self._save(checkpoint)
                saved = self.ctx.clock.monotonic()
            if self.stopping.is_set():
                await self._save(checkpoint)
                return fired
        checkpoint.finish(scan)
        await self._save(checkpoint)
        return fired

    async def _page(
        self, client: OssClient, objects: list[Any], checkpoint: Checkpoint, scan: Scan
    ) -> int:
        """Fire the page's new objects; returns when every submission is done."""
        fresh = []
        for obj in objects:
            modified = datetime.fromtimestamp(obj.last_modified, tz=UTC)
            mark = digest(obj.key, str(obj.etag))
            if modified >= scan.horizon:
                scan.seen.add(mark)
            if (scan.base is None or modified >= scan.base) and mark not in checkpoint.seen:
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

    async def _save(self, checkpoint: Checkpoint) -> None:
        seen = len(checkpoint.seen) + (len(checkpoint.scan.seen) if checkpoint.scan else 0)
        if seen > _LARGE_SEEN:
            log.warning("poll checkpoint is large; lower oss.poll.lookback", digests=seen)
        await self.ctx.state.put(self.group.state_key, checkpoint.dump())


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

    def unregister(self) -> None:
        for collector in (self.errors, self.objects, self.last_success):
            self.registry.unregister(collector)


class PollLoop:
    """Polls one group until stopped: scan, sleep `interval`; on errors, back off."""

    def __init__(self, source: OssPollSource, group: PollGroup) -> None:
        self.source, self.group = source, group
        self.poller = BucketPoller(source.ctx, group, source.settings, source.stopping)

    async def run(self) -> None:
        failures = 0
        while not self.source.stopping.is_set():
            try:
                fired = await self.poller.poll_once()
            except (SourceError, ConfigError, StateError, TemporarySubmitError) as exc:
                failures += 1
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
        for rule in self.group.rules:
            status = self._status(rule)
            if status.last_error and status.last_error.startswith(ERROR_PREFIX):
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
        self._changed = asyncio.Event()
        self._done = asyncio.Event()
        self._done.set()

    def routes(self) -> list[Any]:
        return []

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
            self._done.set()

    def _reconcile(self, tasks: dict[GroupKey, tuple[PollGroup, asyncio.Task[None]]]) -> None:
        for key, (group, task) in list(tasks.items()):
            if self.groups.get(key) != group:
                # Removed or reconfigured: an interrupted page is fired again, idempotently.
                task.cancel()
                del tasks[key]
        for key, group in self.groups.items():
            if key not in tasks:
                name = f"oss-poll:{group.bucket}/{group.prefix}"
                tasks[key] = (group, asyncio.create_task(PollLoop(self, group).run(), name=name))

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


KIND: Final = SourceKind(wanted=wanted, build=_build, singleton=True)
