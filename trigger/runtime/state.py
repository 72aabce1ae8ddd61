"""The daemon's small durable state: cron watermarks and OSS poll checkpoints.

A `StateStore` maps short keys (`cron/nightly-report`, `oss-poll/ingest-csv`) to small JSON
objects. Two implementations:

- `FileStateStore`: one JSON file, for a single daemon process (the default).
- `ConfigMapStateStore`: one ConfigMap, shared by replicas; writes use the ConfigMap's
  resourceVersion, so concurrent writers never lose each other's updates.

`update(key, fn)` is the read-modify-write primitive: `fn` gets the current value (or None)
and returns the new one (None deletes). `fn` may be called more than once when another
writer wins a race, so it must be a pure function of its argument.

Both stores hold at most `MAX_BYTES` (1 MiB, the ConfigMap limit, kept for the file too so
the two behave alike) and rewrite everything on each write: values are meant to be small
(a timestamp, a continuation token), a few hundred bytes per key.

Errors: a corrupt file is a `ConfigError` at open (never silently reset, which would
re-fire every cron tick and re-poll every object). Everything else is a `StateError`;
`temporary` says whether retrying later can help (5xx, 429, network) or not (403, too big).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import re
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from trigger.errors import ConfigError, TriggerError
from trigger.submit.clock import Clock, SystemClock

Value = dict[str, Any]
Updater = Callable[[Value | None], Value | None]
T = TypeVar("T")

MAX_BYTES: Final = 1024 * 1024
MAX_KEY: Final = 200
DEFAULT_CONFIGMAP: Final = "trigger-state"
NAMESPACE_FILE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
_KEY: Final = re.compile(r"[A-Za-z0-9._/-]+")
_AMBIGUOUS: Final = ("__", "_/", "/_")
_CONFLICT: Final = 409
_TEMPORARY: Final = frozenset({408, 429})


class StateError(TriggerError):
    """The state backend failed; `temporary` says whether a later retry can help."""

    def __init__(self, message: str, *, temporary: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.status = status


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

    async def close(self) -> None:
        """Release resources; the store is unusable afterwards."""
        ...


def validate_key(key: str) -> str:
    """Return `key` if it is a valid state key, else raise ValueError.

    Valid: 1-200 characters of `[A-Za-z0-9._/-]`, without `__`, `_/` or `/_` (the
    ConfigMap store spells `/` as `__`, and those would make two keys collide).
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


def _encode_value(key: str, value: Value | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"state value for {key!r} must be a dict, got {type(value).__name__}")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _check_size(what: str, size: int) -> None:
    if size > MAX_BYTES:
        raise StateError(
            f"{what}: state would be {size} bytes, over the {MAX_BYTES}-byte "
            "limit; state values must stay small",
            temporary=False,
        )


# --- file ------------------------------------------------------------------------------


def _load_file(path: Path) -> dict[str, Value]:
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
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class FileStateStore:
    """State in one JSON file, owned by one daemon process; open it with `open()`."""

    def __init__(self, path: str | Path, data: dict[str, Value]) -> None:
        self.path = Path(path)
        self._data = data
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> FileStateStore:
        """Load the file (a missing file is empty state); a corrupt one is a ConfigError."""
        target = Path(path)
        return cls(target, await asyncio.to_thread(_load_file, target))

    async def get(self, key: str) -> Value | None:
        found = self._data.get(validate_key(key))
        return copy.deepcopy(found)

    async def put(self, key: str, value: Value) -> None:
        await self.update(key, lambda _: value)

    async def update(self, key: str, fn: Updater) -> Value | None:
        validate_key(key)
        async with self._lock:
            new = fn(copy.deepcopy(self._data.get(key)))
            _encode_value(key, new)
            if new == self._data.get(key):
                return copy.deepcopy(new)
            data = {k: v for k, v in self._data.items() if k != key}
            if new is not None:
                data[key] = copy.deepcopy(new)
            text = json.dumps(data, sort_keys=True, indent=1, allow_nan=False) + "\n"
            _check_size(f"state file {self.path}", len(text.encode()))
            try:
                await asyncio.to_thread(_write_atomically, self.path, text)
            except OSError as err:
                raise StateError(
                    f"state file {self.path}: cannot write: {err}", temporary=True
                ) from err
            self._data = data
            return copy.deepcopy(new)

    async def close(self) -> None:
        async with self._lock:  # let a write in flight finish
            return


# --- ConfigMap -------------------------------------------------------------------------


class _Conflict(Exception):
    """Another writer changed the ConfigMap between our read and our write."""


def _api_error(err: BaseException, what: str) -> StateError:
    from kubernetes_asyncio.client.exceptions import ApiException

    if isinstance(err, ApiException):
        status = int(err.status or 0)
        temporary = status in _TEMPORARY or status >= 500 or status == 0
        return StateError(f"{what}: {status} {err.reason}", temporary=temporary, status=status)
    return StateError(f"{what}: {type(err).__name__}: {err}", temporary=True)


def _encode_key(key: str) -> str:
    # ConfigMap data keys allow [-._a-zA-Z0-9]; validate_key refuses the underscore
    # neighbourhoods that would make "__" ambiguous.
    return validate_key(key).replace("/", "__")


class ConfigMapStateStore:
    """State in one ConfigMap's `data`, safe to share between replicas.

    The ConfigMap is created on the first write. Conflicts (409) and temporary failures
    are retried up to `attempts` times with jittered exponential backoff on `clock`; the
    `api_client` belongs to the caller and is not closed by `close()`.
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
    ) -> None:
        from kubernetes_asyncio import client

        self.namespace, self.name = namespace, name
        self._api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._clock = clock or SystemClock()
        self._attempts, self._backoff, self._max_backoff = attempts, backoff, max_backoff
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)
        # Writers in this process take turns, so the optimistic retries only race other
        # replicas and stay few.
        self._lock = asyncio.Lock()

    @property
    def _what(self) -> str:
        return f"state configmap {self.namespace}/{self.name}"

    async def get(self, key: str) -> Value | None:
        encoded = _encode_key(key)
        _, data = await self._retrying(self._read)
        return self._decode(key, data.get(encoded))

    async def put(self, key: str, value: Value) -> None:
        await self.update(key, lambda _: value)

    async def update(self, key: str, fn: Updater) -> Value | None:
        encoded = _encode_key(key)
        async with self._lock:
            return await self._retrying(lambda: self._update_once(key, encoded, fn))

    async def close(self) -> None:
        async with self._lock:  # let a write in flight finish
            return

    async def _update_once(self, key: str, encoded: str, fn: Updater) -> Value | None:
        obj, data = await self._read()
        current = self._decode(key, data.get(encoded))
        new = fn(copy.deepcopy(current))
        text = _encode_value(key, new)
        if new == current:
            return new
        data = {k: v for k, v in data.items() if k != encoded}
        if text is not None:
            data[encoded] = text
        _check_size(self._what, sum(len(k) + len(v.encode()) for k, v in data.items()))
        await (self._create(data) if obj is None else self._replace(obj, data))
        return new

    def _decode(self, key: str, text: str | None) -> Value | None:
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise StateError(
                f"{self._what}: key {key!r} does not hold a JSON object", temporary=False
            )
        return value

    async def _read(self) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """The ConfigMap as a dict (None when missing) and its data."""
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            found = await self._core.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as err:
            if err.status == 404:
                return None, {}
            raise
        obj: dict[str, Any] = self._api_client.sanitize_for_serialization(found)
        return obj, dict(obj.get("data") or {})

    async def _create(self, data: dict[str, str]) -> None:
        body: Any = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "data": data,
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "trigger"},
            },
        }
        await self._write(self._core.create_namespaced_config_map(self.namespace, body))

    async def _replace(self, obj: dict[str, Any], data: dict[str, str]) -> None:
        # The read object (with its resourceVersion) goes back whole, so labels and
        # annotations others put there survive and a concurrent write is refused.
        body: Any = {**obj, "data": data}
        await self._write(self._core.replace_namespaced_config_map(self.name, self.namespace, body))

    @staticmethod
    async def _write(call: Awaitable[Any]) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            await call
        except ApiException as err:
            if err.status == _CONFLICT:
                raise _Conflict from err
            raise

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        import aiohttp
        from kubernetes_asyncio.client.exceptions import ApiException

        for number in range(1, self._attempts + 1):
            try:
                return await attempt()
            except _Conflict as err:
                failure = StateError(
                    f"{self._what}: still conflicting after {number} attempts",
                    temporary=True,
                    status=_CONFLICT,
                )
                failure.__cause__ = err
            except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as err:
                failure = _api_error(err, self._what)
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
) -> StateStore:
    """Open the store a `--state` value names: `file:PATH` or `kubernetes[:NAMESPACE/NAME]`.

    Plain `kubernetes` means ConfigMap `trigger-state` in the pod's namespace (from the
    service-account file), or `default` outside a cluster.
    """
    kind, _, rest = spec.partition(":")
    if kind == "file" and rest:
        return await FileStateStore.open(rest)
    if kind != "kubernetes":
        raise ConfigError(f"state {spec!r}: expected file:PATH or kubernetes[:NAMESPACE/NAME]")
    if api_client is None:
        raise ConfigError(f"state {spec!r} needs a Kubernetes connection")
    if not rest:
        namespace = await asyncio.to_thread(_read_namespace, namespace_file)
        return ConfigMapStateStore(api_client, namespace, DEFAULT_CONFIGMAP, clock=clock)
    namespace, slash, name = rest.partition("/")
    if not (slash and namespace and name and "/" not in name):
        raise ConfigError(f"state {spec!r}: expected kubernetes:NAMESPACE/NAME")
    return ConfigMapStateStore(api_client, namespace, name, clock=clock)
