"""The daemon's small durable state: cron watermarks and OSS poll checkpoints.

A `StateStore` maps short keys (`cron/nightly-report`, `oss-poll/raw-data/1f2e…`) to JSON
objects. Every key is its own unit of size: a value may take up to `MAX_BYTES` (1 MiB, the
ConfigMap limit) encoded, and one key's growth never stops another key from being saved.
Two implementations:

- `FileStateStore`: one JSON file, for a single daemon process (the default), and its
  journal beside it (`PATH.journal`). A write appends the key's new value to the journal
  as one JSON line and fsyncs it — it costs the value's size, not the whole state's, so
  100,000 gate keys write as fast as ten — and the file is rewritten atomically (a
  snapshot) once the journal outgrows it, in the background: the journal is moved aside
  (`PATH.journal.old`) and writes go on to a new one while the snapshot is written, then
  the old journal is dropped; at close, in the foreground. Opening reads the snapshot,
  then replays the old journal and the journal (each line sets one key, so a journal left
  beside a newer snapshot replays to the same state); a last line cut short by a crash was
  never acknowledged and is dropped. Only the written key's size is checked.
- `ConfigMapStateStore`: one ConfigMap per key, shared by replicas. Names derive from the
  configured name and the key (`trigger-state-cron-nightly-report-1a2b3c4d5e`), labelled
  `trigger.dev/state-store=<name>` and annotated with the key. Writes use each ConfigMap's
  resourceVersion, so concurrent writers never lose each other's updates. The single
  ConfigMap of earlier versions (the configured name itself) is still read for keys that
  have no ConfigMap of their own yet, and a key is removed from it once migrated.

`update(key, fn)` is the read-modify-write primitive: `fn` gets the current value (or None)
and returns the new one (None deletes). `fn` may be called more than once when another
writer wins a race, so it must be a pure function of its argument.

Errors: a corrupt file is a `ConfigError` at open (never silently reset, which would
re-fire every cron tick and re-poll every object). Everything else is a `StateError`;
`temporary` says whether retrying later can help (5xx, 429, network) or not (403, too big),
`reason` names the failure for the metric `trigger_state_errors_total{key_kind,reason}`.
A value over the limit is a `StateTooLarge` naming the key and its size, logged as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import os
import random
import re
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import structlog

from trigger.clock import Clock, SystemClock
from trigger.core.metrics import Metrics
from trigger.errors import ConfigError, TriggerError
from trigger.submit.storage import StorageObserver, report, storage_error
from trigger.submit.transport import ETCD_TOO_LARGE

log = structlog.get_logger("trigger.state")
Value = dict[str, Any]
Updater = Callable[[Value | None], Value | None]
T = TypeVar("T")

MAX_BYTES: Final = 1024 * 1024
JOURNAL_SUFFIX: Final = ".journal"
COMPACT_MIN: Final = 4 * 1024 * 1024  # journal bytes before a snapshot, at the least
MAX_KEY: Final = 200
DEFAULT_CONFIGMAP: Final = "trigger-state"
NAMESPACE_FILE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
LABEL_STORE: Final = "trigger.dev/state-store"
ANNOTATION_KEY: Final = "trigger.dev/state-key"
DATA_KEY: Final = "value"
_KEY: Final = re.compile(r"[A-Za-z0-9._/-]+")
_AMBIGUOUS: Final = ("__", "_/", "/_")
_NOT_NAME: Final = re.compile(r"[^a-z0-9]+")
_MAX_NAME: Final = 253
_MAX_LABEL: Final = 63
_HASH: Final = 10
_CONFLICT: Final = 409
_TEMPORARY: Final = frozenset({408, 429})
_TOO_LARGE: Final = 413


class StateError(TriggerError):
    """The state backend failed; `temporary` says whether a later retry can help."""

    def __init__(
        self,
        message: str,
        *,
        temporary: bool,
        status: int | None = None,
        reason: str = "unavailable",
    ) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.status = status
        self.reason = reason


class StateTooLarge(StateError):
    """A value over the store's per-key limit; nothing was written."""

    def __init__(self, where: str, key: str, size: int, limit: int) -> None:
        super().__init__(
            f"{where}: state key {key!r} would take {size} bytes, over the {limit}-byte "
            "limit per key",
            temporary=False,
            reason="too_large",
        )
        self.key, self.size, self.limit = key, size, limit


class StateStore(Protocol):
    """Small JSON values under short keys, durable across restarts."""

    async def get(self, key: str) -> Value | None:
        """The value stored under `key`, or None."""
        ...

    async def put(self, key: str, value: Value) -> None:
        """Store `value` under `key`, replacing what was there."""
        ...

    async def update(self, key: str, fn: Updater) -> Value | None:
        """Atomically replace the value with `fn(current)`; None deletes. Returns the result."""
        ...

    async def keys(self, prefix: str) -> list[str]:
        """The keys that hold a value and start with `prefix`, sorted."""
        ...

    async def close(self) -> None:
        """Release resources; the store is unusable afterwards."""
        ...


def validate_key(key: str) -> str:
    """Return `key` if it is a valid state key, else raise ValueError.

    Valid: 1-200 characters of `[A-Za-z0-9._/-]`, without `__`, `_/` or `/_` (the
    earlier single-ConfigMap layout spelt `/` as `__`, and those would make keys collide).
    """
    if (
        not isinstance(key, str)
        or len(key) > MAX_KEY
        or not _KEY.fullmatch(key)
        or any(bad in key for bad in _AMBIGUOUS)
    ):
        raise ValueError(
            f"invalid state key {key!r}: use 1-{MAX_KEY} characters of "
            "A-Z a-z 0-9 . _ / - (no '__', '_/' or '/_')"
        )
    return key


def key_kind(key: str) -> str:
    """The metric label for a key: its first segment (`cron`, `oss-poll`)."""
    return key.partition("/")[0]


def _encode_value(key: str, value: Value | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"state value for {key!r} must be a dict, got {type(value).__name__}")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


class _Reporter:
    """Counts and logs the StateErrors a store raises (once per failed operation)."""

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics

    def failed(self, key: str, err: StateError) -> None:
        if self._metrics is not None:
            self._metrics.state_errors.labels(key_kind(key), err.reason).inc()
        if isinstance(err, StateTooLarge):
            log.error("state value too large", key=key, bytes=err.size, limit=err.limit)


# --- file ------------------------------------------------------------------------------


def load_state_file(path: Path, *, repair: bool = False) -> dict[str, Value]:
    """The state a file store at `path` holds: its snapshot with its journal replayed.
    Blocking. With `repair` (the store opening it), a journal's last line cut short by a
    crash is cut off the file; without, it is only ignored (a reader beside a running
    daemon may see a line being written)."""
    data = _load_snapshot(path)
    _replay(rotated_path(path), data, repair=repair)  # a snapshot's, if one was cut short
    _replay(journal_path(path), data, repair=repair)
    return data


def _load_snapshot(path: Path) -> dict[str, Value]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise ConfigError(f"state file {path}: cannot read: {err}") from err
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ConfigError(
            f"state file {path} is corrupt ({err}); fix or remove it by hand: "
            "resetting it would re-fire cron ticks and re-poll objects"
        ) from err
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"state file {path} is corrupt: expected an object of objects")
    return data


def journal_path(path: Path) -> Path:
    return path.with_name(path.name + JOURNAL_SUFFIX)


def rotated_path(path: Path) -> Path:
    """Where the journal moves while a snapshot of it is written (see `FileStateStore`)."""
    return path.with_name(path.name + JOURNAL_SUFFIX + ".old")


def _replay(journal: Path, data: dict[str, Value], *, repair: bool) -> None:
    try:
        raw = journal.read_bytes()
    except FileNotFoundError:
        return
    except OSError as err:
        raise ConfigError(f"state journal {journal}: cannot read: {err}") from err
    whole = raw.rfind(b"\n") + 1  # anything after the last newline was never fsynced
    for number, line in enumerate(raw[:whole].splitlines(), 1):
        try:
            entry = json.loads(line)
            key, value = entry["k"], entry["v"]
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"state journal {journal} is corrupt at line {number} ({err}); fix or remove "
                "it by hand: dropping it would forget the writes since the last snapshot"
            ) from err
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    if repair and whole < len(raw):
        os.truncate(journal, whole)


def _append(journal: Path, line: bytes, size: int) -> None:
    """Append one journal line and fsync it; on failure cut the file back to `size`, so a
    partly written line never sits in front of the next one. Blocking."""
    created = not journal.exists()
    if created:  # the first write: the folder may not exist yet (./state/ on a fresh machine)
        journal.parent.mkdir(parents=True, exist_ok=True)
    try:
        with journal.open("ab") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())
    except OSError:
        with contextlib.suppress(OSError):
            os.truncate(journal, size)
        raise
    if created:  # the new file's directory entry must survive a power cut too
        _fsync_directory(journal.parent)


def _rotate(journal: Path, rotated: Path) -> bool:
    """Move the journal aside for a snapshot, unless an earlier snapshot's is still there
    (that one failed: its entries must stay before the journal's). Blocking."""
    if rotated.exists() or not journal.exists():
        return False
    os.replace(journal, rotated)
    _fsync_directory(journal.parent)
    return True


def _fold(path: Path, text: str) -> None:
    """Write the snapshot atomically, then drop the journal moved aside for it. Blocking."""
    _write_atomically(path, text)
    rotated_path(path).unlink(missing_ok=True)
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _write_atomically(path: Path, text: str) -> None:
    # Temp file in the same directory so os.replace is a rename on one filesystem; the
    # directory fsync makes the rename itself survive a power cut.
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


class FileStateStore:
    """State in one JSON file and its journal, owned by one daemon process; open it with
    `open()` (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        data: dict[str, Value],
        *,
        max_bytes: int = MAX_BYTES,
        metrics: Metrics | None = None,
        observer: StorageObserver | None = None,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._data = data
        self._lock = asyncio.Lock()
        self._reporter = _Reporter(metrics)
        self._observer = observer  # told of writes the disk refused (a full disk)
        self._journal = journal_path(self.path)
        self._journal_bytes = _size(self._journal)
        # The journal is folded into the snapshot once it is larger than this: about the
        # snapshot's size, so each byte of state is rewritten about once per byte appended.
        self._compact_at = max(COMPACT_MIN, _size(self.path))
        self._folding: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        max_bytes: int = MAX_BYTES,
        metrics: Metrics | None = None,
        observer: StorageObserver | None = None,
    ) -> FileStateStore:
        """Load the file (a missing file is empty state); a corrupt one is a ConfigError."""
        target = Path(path)
        data = await asyncio.to_thread(load_state_file, target, repair=True)
        return cls(target, data, max_bytes=max_bytes, metrics=metrics, observer=observer)

    async def get(self, key: str) -> Value | None:
        found = self._data.get(validate_key(key))
        return copy.deepcopy(found)

    async def put(self, key: str, value: Value) -> None:
        await self.update(key, lambda _: value)

    async def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self._data if k.startswith(prefix))

    async def update(self, key: str, fn: Updater) -> Value | None:
        validate_key(key)
        try:
            async with self._lock:
                return await self._update(key, fn)
        except StateError as err:
            self._reporter.failed(key, err)
            raise

    async def _update(self, key: str, fn: Updater) -> Value | None:
        new = fn(copy.deepcopy(self._data.get(key)))
        encoded = _encode_value(key, new)
        if new == self._data.get(key):
            return copy.deepcopy(new)
        size = 0 if encoded is None else len(encoded.encode())
        if size > self.max_bytes:
            raise StateTooLarge(f"state file {self.path}", key, size, self.max_bytes)
        line = f'{{"k":{json.dumps(key)},"v":{encoded or "null"}}}\n'.encode()
        try:
            await asyncio.to_thread(_append, self._journal, line, self._journal_bytes)
        except OSError as err:
            report(storage_error("state", str(self.path), err), self._observer)
            raise StateError(
                f"state file {self.path}: cannot write: {err}", temporary=True, reason="io"
            ) from err
        self._journal_bytes += len(line)
        if new is None:
            self._data.pop(key, None)
        else:
            self._data[key] = copy.deepcopy(new)
        if self._journal_bytes > self._compact_at and self._folding is None:
            await self._begin_snapshot()
        return copy.deepcopy(new)

    async def _begin_snapshot(self) -> None:
        """Under the lock: move the journal aside and take a view of the state, then write
        the snapshot from the view in the background while writes go on to a new journal.
        (The view is a shallow copy: stored values are replaced, never changed in place.)
        Opening replays the moved journal before the new one, so a crash at any point
        loses nothing."""
        try:
            if await asyncio.to_thread(_rotate, self._journal, rotated_path(self.path)):
                self._journal_bytes = 0
        except OSError as err:
            self._snapshot_failed(err)
            return
        self._folding = asyncio.create_task(self._write_snapshot(dict(self._data)))

    async def _write_snapshot(self, view: dict[str, Value]) -> None:
        """A failure is logged and retried later: the writes are durable in the journals."""
        try:
            text = await asyncio.to_thread(
                json.dumps, view, sort_keys=True, indent=1, allow_nan=False
            )
            await asyncio.to_thread(_fold, self.path, text + "\n")
        except OSError as err:
            self._snapshot_failed(err)
        else:
            self._compact_at = max(COMPACT_MIN, len(text))
        finally:
            self._folding = None

    def _snapshot_failed(self, err: OSError) -> None:
        report(storage_error("state", str(self.path), err), self._observer)
        self._compact_at = self._journal_bytes * 2 + COMPACT_MIN  # not at every write
        log.warning("state snapshot failed; the journal keeps growing", error=str(err))

    async def snapshot(self) -> None:
        """Fold everything written so far into the file now (waiting for a snapshot under
        way first) and empty the journal; close does this."""
        async with self._lock:
            if self._folding is not None:
                await self._folding
            if not self._journal_bytes and not rotated_path(self.path).exists():
                return
            try:
                text = await asyncio.to_thread(
                    json.dumps, self._data, sort_keys=True, indent=1, allow_nan=False
                )
                await asyncio.to_thread(_fold, self.path, text + "\n")
                await asyncio.to_thread(self._journal.unlink, missing_ok=True)
            except OSError as err:
                self._snapshot_failed(err)
                return
            self._journal_bytes = 0
            self._compact_at = max(COMPACT_MIN, len(text))

    async def close(self) -> None:
        """Let a write in flight finish, then fold the journal in: a clean stop leaves the
        file alone."""
        await self.snapshot()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --- ConfigMap -------------------------------------------------------------------------


class _Conflict(Exception):
    """Another writer changed the ConfigMap between our read and our write."""


def _api_error(err: BaseException, what: str) -> StateError:
    from kubernetes_asyncio.client.exceptions import ApiException

    if isinstance(err, ApiException):
        status = int(err.status or 0)
        body = err.body.decode("utf-8", "replace") if isinstance(err.body, bytes) else err.body
        if status == _TOO_LARGE or (status >= 500 and ETCD_TOO_LARGE in (body or "")):
            # etcd refuses an object over 1.5 MiB with a 500 (kubernetes#112152): no retry
            # makes it smaller.
            return StateError(
                f"{what}: {status}: the value is too large to store",
                temporary=False,
                status=status,
                reason="too_large",
            )
        temporary = status in _TEMPORARY or status >= 500 or status == 0
        reason = "unavailable" if temporary else "forbidden" if status == 403 else "rejected"
        return StateError(
            f"{what}: {status} {err.reason}", temporary=temporary, status=status, reason=reason
        )
    return StateError(f"{what}: {type(err).__name__}: {err}", temporary=True)


def _legacy_key(key: str) -> str:
    # The single-ConfigMap layout's data keys allow [-._a-zA-Z0-9]; validate_key refuses
    # the underscore neighbourhoods that would make "__" ambiguous.
    return validate_key(key).replace("/", "__")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH]


def configmap_name(base: str, key: str) -> str:
    """The ConfigMap holding `key`: `<base>-<key, lower-cased, [a-z0-9-]>-<hash of key>`.

    The hash keeps keys that differ only in case or punctuation apart; the readable part
    is cut so the name stays within Kubernetes' 253 characters.
    """
    slug = _NOT_NAME.sub("-", validate_key(key).lower()).strip("-")
    stem = f"{base}-{slug}"[: _MAX_NAME - _HASH - 1].rstrip("-.")
    return f"{stem}-{_short_hash(key)}"


def store_label(base: str) -> str:
    """The `trigger.dev/state-store` label value: the base name, or a hash when too long."""
    if len(base) <= _MAX_LABEL:
        return base
    return f"{base[: _MAX_LABEL - _HASH - 1].rstrip('-.')}-{_short_hash(base)}"


class ConfigMapStateStore:
    """State in one ConfigMap per key, safe to share between replicas.

    A key's ConfigMap is created on its first write; its `data.value` is the JSON value
    (no `value`: the key was deleted). Conflicts (409) and temporary failures are retried
    up to `attempts` times with jittered exponential backoff on `clock`; the `api_client`
    belongs to the caller and is not closed by `close()`.
    """

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        name: str = DEFAULT_CONFIGMAP,
        *,
        clock: Clock | None = None,
        attempts: int = 10,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        rng: random.Random | None = None,
        max_bytes: int = MAX_BYTES,
        metrics: Metrics | None = None,
    ) -> None:
        from kubernetes_asyncio import client

        self.namespace, self.name, self.max_bytes = namespace, name, max_bytes
        self._api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._clock = clock or SystemClock()
        self._attempts, self._backoff, self._max_backoff = attempts, backoff, max_backoff
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)
        self._reporter = _Reporter(metrics)
        # Writers of one key in this process take turns, so the optimistic retries only
        # race other replicas and stay few; different keys never wait for each other.
        self._locks: dict[str, asyncio.Lock] = {}

    def _what(self, name: str) -> str:
        return f"state configmap {self.namespace}/{name}"

    async def get(self, key: str) -> Value | None:
        name = configmap_name(self.name, key)
        try:
            obj = await self._retrying(name, lambda: self._read(name))
            if obj is not None:
                return self._decode(name, key, (obj.get("data") or {}).get(DATA_KEY))
            return (await self._retrying(self.name, lambda: self._legacy(key)))[1]
        except StateError as err:
            self._reporter.failed(key, err)
            raise

    async def put(self, key: str, value: Value) -> None:
        await self.update(key, lambda _: value)

    async def keys(self, prefix: str) -> list[str]:
        """Read from the store's ConfigMaps (by label and key annotation); a ConfigMap
        whose value was deleted holds no key. Keys still only in the single ConfigMap of
        earlier versions are not listed (gate keys never were there)."""

        async def listed() -> list[str]:
            found = await self._core.list_namespaced_config_map(
                self.namespace, label_selector=f"{LABEL_STORE}={store_label(self.name)}"
            )
            keys = []
            for item in found.items:
                key = (item.metadata.annotations or {}).get(ANNOTATION_KEY, "")
                if key.startswith(prefix) and DATA_KEY in (item.data or {}):
                    keys.append(key)
            return sorted(keys)

        try:
            return await self._retrying(self.name, listed)
        except StateError as err:
            self._reporter.failed(prefix, err)
            raise

    async def update(self, key: str, fn: Updater) -> Value | None:
        name = configmap_name(self.name, key)
        try:
            async with self._locks.setdefault(key, asyncio.Lock()):
                new, migrated = await self._retrying(name, lambda: self._update_once(name, key, fn))
        except StateError as err:
            self._reporter.failed(key, err)
            raise
        if migrated:
            await self._forget_legacy(key)
        return new

    async def close(self) -> None:
        for lock in list(self._locks.values()):
            async with lock:  # let a write in flight finish
                pass

    async def _update_once(self, name: str, key: str, fn: Updater) -> tuple[Value | None, bool]:
        """One read-modify-write; returns the new value and whether it came from the old
        single ConfigMap (to be removed there once written here)."""
        obj = await self._read(name)
        legacy = False
        if obj is None:
            legacy, current = await self._legacy(key)
        else:
            current = self._decode(name, key, (obj.get("data") or {}).get(DATA_KEY))
        new = fn(copy.deepcopy(current))
        text = _encode_value(key, new)
        if new == current and (obj is not None or not legacy):
            return new, False
        data = {}
        if text is not None:
            size = len(DATA_KEY) + len(text.encode())
            if size > self.max_bytes:
                raise StateTooLarge(self._what(name), key, size, self.max_bytes)
            data[DATA_KEY] = text
        await (self._create(name, key, data) if obj is None else self._replace(obj, data))
        return new, legacy

    def _decode(self, name: str, key: str, text: str | None) -> Value | None:
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise StateError(
                f"{self._what(name)}: key {key!r} does not hold a JSON object",
                temporary=False,
                reason="invalid",
            )
        return value

    async def _read(self, name: str) -> dict[str, Any] | None:
        """The ConfigMap as a dict, or None when there is none."""
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            found = await self._core.read_namespaced_config_map(name, self.namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        obj: dict[str, Any] = self._api_client.sanitize_for_serialization(found)
        return obj

    async def _legacy(self, key: str) -> tuple[bool, Value | None]:
        """Whether the single ConfigMap of earlier versions holds `key`, and its value."""
        obj = await self._read(self.name)
        text = ((obj or {}).get("data") or {}).get(_legacy_key(key))
        return text is not None, self._decode(self.name, key, text)

    async def _forget_legacy(self, key: str) -> None:
        """Remove a migrated key from the old ConfigMap. Only tidiness depends on it: a
        key's own ConfigMap, once it exists, is all that is ever read for it."""

        async def once() -> None:
            obj = await self._read(self.name)
            data = dict((obj or {}).get("data") or {})
            if obj is not None and data.pop(_legacy_key(key), None) is not None:
                await self._replace(obj, data)

        try:
            await self._retrying(self.name, once)
        except StateError as err:
            log.warning("cannot remove a migrated key from the old state ConfigMap",
                        key=key, configmap=self.name, error=str(err))  # fmt: skip

    async def _create(self, name: str, key: str, data: dict[str, str]) -> None:
        body: Any = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "data": data,
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "trigger",
                    LABEL_STORE: store_label(self.name),
                },
                "annotations": {ANNOTATION_KEY: key},
            },
        }
        await self._write(self._core.create_namespaced_config_map(self.namespace, body))

    async def _replace(self, obj: dict[str, Any], data: dict[str, str]) -> None:
        # The read object (with its resourceVersion) goes back whole, so labels and
        # annotations others put there survive and a concurrent write is refused.
        body: Any = {**obj, "data": data}
        name = obj["metadata"]["name"]
        await self._write(self._core.replace_namespaced_config_map(name, self.namespace, body))

    @staticmethod
    async def _write(call: Awaitable[Any]) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            await call
        except ApiException as err:
            if err.status == _CONFLICT:
                raise _Conflict from err
            raise

    async def _retrying(self, name: str, attempt: Callable[[], Awaitable[T]]) -> T:
        import aiohttp
        from kubernetes_asyncio.client.exceptions import ApiException

        for number in range(1, self._attempts + 1):
            try:
                return await attempt()
            except _Conflict as err:
                failure = StateError(
                    f"{self._what(name)}: still conflicting after {number} attempts",
                    temporary=True,
                    status=_CONFLICT,
                    reason="conflict",
                )
                failure.__cause__ = err
            except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as err:
                failure = _api_error(err, self._what(name))
                failure.__cause__ = err
                if not failure.temporary:
                    raise failure from err
            if number == self._attempts:
                raise failure
            delay = min(self._max_backoff, self._backoff * 2 ** (number - 1))
            await self._clock.sleep(delay * self._rng.uniform(0.5, 1.5))
        raise AssertionError("unreachable")  # the loop returns or raises


# --- opening ---------------------------------------------------------------------------


def _read_namespace(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


async def open_state_store(
    spec: str,
    api_client: Any = None,
    *,
    clock: Clock | None = None,
    namespace_file: str = NAMESPACE_FILE,
    metrics: Metrics | None = None,
    observer: StorageObserver | None = None,
) -> StateStore:
    """Open the store a `--state` value names: `file:PATH` or `kubernetes[:NAMESPACE/NAME]`.

    Plain `kubernetes` means ConfigMaps named after `trigger-state` in the pod's namespace
    (from the service-account file), or `default` outside a cluster.
    """
    kind, _, rest = spec.partition(":")
    if kind == "file" and rest:
        return await FileStateStore.open(rest, metrics=metrics, observer=observer)
    if kind != "kubernetes":
        raise ConfigError(f"state {spec!r}: expected file:PATH or kubernetes[:NAMESPACE/NAME]")
    if api_client is None:
        raise ConfigError(f"state {spec!r} needs a Kubernetes connection")
    if not rest:
        namespace = await asyncio.to_thread(_read_namespace, namespace_file)
        return ConfigMapStateStore(
            api_client, namespace, DEFAULT_CONFIGMAP, clock=clock, metrics=metrics
        )
    namespace, slash, name = rest.partition("/")
    if not (slash and namespace and name and "/" not in name):
        raise ConfigError(f"state {spec!r}: expected kubernetes:NAMESPACE/NAME")
    return ConfigMapStateStore(api_client, namespace, name, clock=clock, metrics=metrics)
