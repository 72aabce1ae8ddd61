"""State stores: the JSON file store and the ConfigMap store against the API emulator."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from kubernetes_asyncio import client

from trigger.clock import VIRTUAL_EPOCH
from trigger.core.metrics import Metrics
from trigger.core.state import (
    ANNOTATION_KEY,
    LABEL_STORE,
    MAX_BYTES,
    ConfigMapStateStore,
    FileStateStore,
    StateError,
    StateTooLarge,
    configmap_name,
    load_state_file,
    open_state_store,
    validate_key,
)
from trigger.errors import ConfigError
from trigger.testing.kubeapi import KubeEmulator

NS, CM = "default", "trigger-state"
KEY = "cron/nightly-report"


class RecordingClock:
    """A clock whose sleeps only yield, recording how long the caller asked to wait."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def now(self) -> datetime:
        return VIRTUAL_EPOCH

    def monotonic(self) -> float:
        return float(sum(self.slept))

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)


def increment(value: dict[str, Any] | None) -> dict[str, Any]:
    return {"n": (value or {"n": 0})["n"] + 1}


# --- file store --------------------------------------------------------------------------


async def test_file_store_round_trips_through_a_reopen(tmp_path: Path) -> None:
    """Values put, updated and deleted survive closing and reopening the file."""
    path = tmp_path / "state.json"
    store = await FileStateStore.open(path)
    await store.put(KEY, {"watermark": "2025-01-01T02:00:00Z"})
    await store.put("oss-poll/ingest-csv", {"token": "abc"})
    await store.update("oss-poll/ingest-csv", lambda _: None)
    await store.close()
    reopened = await FileStateStore.open(path)
    assert await reopened.get(KEY) == {"watermark": "2025-01-01T02:00:00Z"}
    assert await reopened.get("oss-poll/ingest-csv") is None
    assert json.loads(path.read_text()) == {KEY: {"watermark": "2025-01-01T02:00:00Z"}}


async def test_file_store_creates_its_directory(tmp_path: Path) -> None:
    """The default state path (./state/trigger-state.json) on a fresh machine: the folder
    does not exist yet; the store makes it, and the first write and a reopen work."""
    path = tmp_path / "state" / "nested" / "trigger-state.json"
    store = await FileStateStore.open(path)
    await store.put("cron/nightly", {"last": "2026-12-06T02:00:00Z"})
    await store.close()
    reopened = await FileStateStore.open(path)
    assert await reopened.get("cron/nightly") == {"last": "2026-12-06T02:00:00Z"}
    await reopened.close()


async def test_file_store_refuses_a_directory_it_cannot_make(tmp_path: Path) -> None:
    """A state folder that cannot be made (a file is in the way) is a ConfigError at open,
    not a failure of every later write."""
    (tmp_path / "state").write_text("a file, not a folder")
    with pytest.raises(ConfigError, match="state"):
        await FileStateStore.open(tmp_path / "state" / "trigger-state.json")


async def test_file_store_missing_file_is_empty_state(tmp_path: Path) -> None:
    """Opening a path that does not exist yet gives an empty store and creates nothing."""
    store = await FileStateStore.open(tmp_path / "sub" / "state.json")
    assert await store.get(KEY) is None
    assert not (tmp_path / "sub").exists()


async def test_file_store_leaves_no_temporary_files(tmp_path: Path) -> None:
    """Writes go to the journal, snapshots replace the file atomically: no temporary file
    remains, and after a clean close only the state file."""
    store = await FileStateStore.open(tmp_path / "state.json")
    for n in range(5):
        await store.put(f"cron/rule-{n}", {"n": n})
    assert set(os.listdir(tmp_path)) <= {"state.json", "state.json.journal"}
    await store.close()
    assert os.listdir(tmp_path) == ["state.json"]
    assert json.loads((tmp_path / "state.json").read_text()) == {f"cron/rule-{n}": {"n": n} for n in range(5)}  # fmt: skip


async def test_file_store_get_returns_a_copy(tmp_path: Path) -> None:
    """Mutating a value returned by get does not change the stored state."""
    store = await FileStateStore.open(tmp_path / "state.json")
    await store.put(KEY, {"n": 1})
    value = await store.get(KEY)
    assert value is not None
    value["n"] = 99
    assert await store.get(KEY) == {"n": 1}


@pytest.mark.parametrize(
    "content",
    ["{not json", "[1, 2]", '{"cron/x": 5}', ""],
    ids=["invalid-json", "a-list", "value-not-object", "empty"],
)
async def test_file_store_corrupt_file_is_config_error(tmp_path: Path, content: str) -> None:
    """A corrupt state file is a ConfigError at open and is left untouched."""
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="corrupt"):
        await FileStateStore.open(path)
    assert path.read_text() == content


async def test_file_store_concurrent_updates_all_apply(tmp_path: Path) -> None:
    """Fifty concurrent increments in one process all land: the counter reads 50."""
    path = tmp_path / "state.json"
    store = await FileStateStore.open(path)
    await asyncio.gather(*(store.update(KEY, increment) for _ in range(50)))
    assert await store.get(KEY) == {"n": 50}
    assert load_state_file(path)[KEY] == {"n": 50}


async def test_file_store_refuses_state_over_the_size_limit(tmp_path: Path) -> None:
    """A write that would exceed MAX_BYTES is a permanent StateError; the old state stays."""
    store = await FileStateStore.open(tmp_path / "state.json")
    await store.put(KEY, {"n": 1})
    with pytest.raises(StateError, match="limit") as caught:
        await store.put("big", {"blob": "x" * MAX_BYTES})
    assert not caught.value.temporary
    assert await store.get("big") is None
    assert load_state_file(tmp_path / "state.json") == {KEY: {"n": 1}}


async def test_file_store_one_huge_key_does_not_stop_another(tmp_path: Path) -> None:
    """A key holding nearly 1 MiB leaves every other key free to be written."""
    store = await FileStateStore.open(tmp_path / "state.json")
    await store.put("oss-poll/big", {"blob": "x" * (MAX_BYTES - 100)})
    await store.put(KEY, {"scheduledTime": "2025-01-01T02:00:00Z"})
    reopened = await FileStateStore.open(tmp_path / "state.json")
    assert await reopened.get(KEY) == {"scheduledTime": "2025-01-01T02:00:00Z"}


async def test_file_store_refuses_a_non_object_value(tmp_path: Path) -> None:
    """A value that is not a dict is refused before anything is written."""
    store = await FileStateStore.open(tmp_path / "state.json")
    with pytest.raises(TypeError, match="dict"):
        await store.put(KEY, [1, 2])  # type: ignore[arg-type]
    assert not (tmp_path / "state.json").exists()


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("cron/nightly-report", True),
        ("oss-poll/ingest-csv", True),
        ("a.b_c/d-e", True),
        ("x" * 200, True),
        ("x" * 201, False),
        ("", False),
        ("with space", False),
        ("ünïcode", False),
        ("a__b", False),
        ("a_/b", False),
        ("a/_b", False),
    ],
)
def test_keys_are_validated(key: str, valid: bool) -> None:
    """Keys are 1-200 characters of [A-Za-z0-9._/-] that encode unambiguously."""
    if valid:
        assert validate_key(key) == key
    else:
        with pytest.raises(ValueError, match="invalid state key"):
            validate_key(key)


# --- ConfigMap store ---------------------------------------------------------------------


StatusLog = list[tuple[str, str, int]]


@pytest.fixture
async def kube() -> AsyncIterator[tuple[KubeEmulator, StatusLog]]:
    """The emulator, with a log of every response's (method, path, status)."""
    statuses: StatusLog = []
    emulator = KubeEmulator(namespaces=[NS, "data"])

    @web.middleware
    async def record(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        response = await handler(request)
        statuses.append((request.method, request.path, response.status))
        return response

    emulator.app.middlewares.append(record)
    async with emulator:
        yield emulator, statuses


@pytest.fixture
async def api(kube: tuple[KubeEmulator, StatusLog]) -> AsyncIterator[Callable[[], Any]]:
    """A factory of ApiClients on the emulator (one per simulated replica)."""
    clients: list[Any] = []

    def make() -> Any:
        clients.append(client.ApiClient(configuration=kube[0].client_configuration()))
        return clients[-1]

    yield make
    for api_client in clients:
        await api_client.close()


def configmap(kube: KubeEmulator, key: str = KEY) -> dict[str, Any] | None:
    """The ConfigMap that holds `key`."""
    return kube.get_object("", "v1", "configmaps", configmap_name(CM, key), NS)


def seed_configmap(kube: KubeEmulator, name: str, data: dict[str, str], **meta: Any) -> None:
    kube.put_object(
        "", "v1", "configmaps", {"metadata": {"name": name, "namespace": NS, **meta}, "data": data}
    )


async def test_configmap_store_creates_a_configmap_per_key_on_first_write(
    kube: tuple[KubeEmulator, StatusLog], api: Callable[[], Any]
) -> None:
    """No ConfigMap until a key's first write; then one per key, labelled and annotated."""
    emulator, _ = kube
    store = ConfigMapStateStore(api(), NS, CM, clock=RecordingClock())
    assert await store.get(KEY) is None
    assert configmap(emulator) is None
    await store.put(KEY, {"watermark": "2025-01-01T02:00:00Z"})
    await store.put("oss-poll/raw-data/1f2e", {"n": 1})
    found = configmap(emulator)
    assert found is not None
    assert found["metadata"]["name"].startswith(f"{CM}-cron-nightly-report-")
    assert found["metadata"]["labels"][LABEL_STORE] == CM
    assert found["metadata"]["annotations"][ANNOTATION_KEY] == KEY
    assert json.loads(found["data"]["value"]) == {"watermark": "2025-01-01T02:00:00Z"}
    other = configmap(emulator, "oss-poll/raw-data/1f2e")
    assert other is not None and other["metadata"]["name"] != found["metadata"]["name"]
    assert emulator.get_object("", "v1", "configmaps", CM, NS) is None


@pytest.mark.parametrize(
    "keys",
    [("cron/Nightly", "cron/nightly"), ("cron/a.b", "cron/a-b"), ("x" * 200, "x" * 199 + "y")],
    ids=["case", "punctuation", "long"],
)
def test_configmap_names_are_distinct_and_valid(keys: tuple[str, str]) -> None:
    """Keys that differ only in case, punctuation or past the cut get different, valid names."""
    names = [configmap_name("trigger-state", key) for key in keys]
    assert names[0] != names[1]
    for name in names:
        assert len(name) <= 253
        assert all(c.islower() or c.isdigit() or c in "-." for c in name)
        assert name[0].isalnum() and name[-1].isalnum()


async def test_configmap_store_round_trips(api: Callable[[], Any]) -> None:
    """Put, get, update and delete behave as on the file store, seen from another replica."""
    writer = ConfigMapStateStore(api(), NS, CM, clock=RecordingClock())
    reader = ConfigMapStateStore(api(), NS, CM, clock=RecordingClock())
    await writer.put(KEY, {"n": 1})
    await writer.put("oss-poll/ingest-csv", {"token": "t"})
    assert await writer.update(KEY, increment) == {"n": 2}
    assert await writer.update("oss-poll/ingest-csv", lambda _: None) is None
    assert await reader.get(KEY) == {"n": 2}
    assert await reader.get("oss-poll/ingest-csv") is None


async def test_configmap_store_one_huge_key_does_not_stop_another(
    kube: tuple[KubeEmulator, StatusLog], api: Callable[[], Any]
) -> None:
    """A poll checkpoint of nearly 1 MiB: a cron rule's watermark still saves, and a new
    rule's first watermark too."""
    store = ConfigMapStateStore(api(), NS, CM, clock=RecordingClock())
    await store.put("oss-poll/raw-data/1f2e", {"seen": "x" * (MAX_BYTES - 100)})
    await store.put(KEY, {"scheduledTime": "2025-01-01T02:00:00Z"})
    await store.put("cron/new-rule", {"scheduledTime": "2025-01-01T03:00:00Z"})
    reader = ConfigMapStateStore(api(), NS, CM, clock=RecordingClock())
    assert await reader.get(KEY) == {"scheduledTime": "2025-01-01T02:00:00Z"}
    assert await reader.get("cron/new-rule") == {"scheduledTime": "2025-01-01T03:00:00Z"}


async def test_configmap_store_two_replicas_lose_no_increment(
    kube: tuple[KubeEmulator, StatusLog], api: Callable[[], Any]
) -> None:
    """Two stores doing 25 concurrent increments each end at 50, through real 409s."""
    _, statuses = kube
    # A generous bound: this test is about lost updates, not about how often a store loses.
    stores = [
        ConfigMapStateStore(api(), NS, CM, clock=RecordingClock(), attempts=200) for _ in range(2)
    ]
    await asyncio.gather(*(s.update(KEY, increment) for s in stores for _ in range(25)))
    assert await stores[0].get(KEY) == {"n": 50}
    assert any(status == 409 for _, _, status in statuses)


async def test_configmap_store_retries_a_write_that_lost_a_race(
    kube: tuple[KubeEmulator, StatusLog], api: Callable[[], Any]
) -> None:
    """A 409 on replace re-reads and re-applies fn to the other writer's value."""
    emulator, statuses = kube
    store = ConfigMapStateStore(api(), NS, CM, clock=RecordingClock())
    await store.put(KEY, {"n": 1})
    seen: list[dict[str, Any] | None] = []

    def racing(value: dict[str, Any] | None) -> dict[str, Any]:
        if not seen:  # another replica writes between our read and our replace
            current = configmap(emulator)
            assert current is not None
            current["data"]["value"] = json.dumps({"n": 5})
            emulator.put_object("", "v1", "configmaps", current)
        seen.append(value)
        return increment(value)

    assert await store.update(KEY, racing) == {"n": 6}
    assert seen == [{"n": 1}, {"n": 5}]
    name = configmap_name(CM, KEY)
    assert ("PUT", f"/api/v1/namespaces/{NS}/configmaps/{name}", 409) in statuses


async def test_configmap_store_create_race_rereads(
    kube: tuple[KubeEmulator, StatusLog], api: Callable[[], Any]
) -> None:
    """A 409 on create (another replica created the key's ConfigMap first) re-reads and
    replaces, applying fn to what the other wrote."""
    emulator, statuses = kube
    store = ConfigMapStateStore(api(), NS, CM, clock=RecordingClock())
    calls: list[dict[str, Any] | None] = []

    def racing(value: dict[str, Any] | None) -> dict[str, Any]:
        if not calls:
            seed_configmap(emulator, configmap_name(CM, KEY), {"value": json.dumps({"n": 7})})
        calls.append(value)
        return increment(value)

    assert await store.update(KEY, racing) == {"n": 8}
    assert calls == [None, {"n": 7}]
    assert ("POST", f"/api/v1/namespaces/{NS}/configmaps", 409) in statuses


async def test_configmap_store_keeps_foreign_metadata(
    kube: tuple[KubeEmulator, StatusLog], api: Callable[[], Any]
) -> None:
    """Labels and annotations others put on a key's ConfigMap survive our writes."""
    emulator, _ = kube
    store = ConfigMapStateStore(api(), NS, CM, clock=RecordingClock())
    await store.put(KEY, {"n": 1})
    found = configmap(emulator)
    assert found is not None
    found["metadata"]["labels"]["team"] = "data"
    found["metadata"]["annotations"]["owner"] = "ops"
    emulator.put_object("", "v1", "configmaps", found)
    await store.put(KEY, {"n": 2})
    found = configmap(emulator)
    assert found is not None
    assert found["metadata"]["labels"]["team"] == "data"
    assert found["metadata"]["annotations"]["owner"] == "ops"


async def test_configmap_store_reads_and_migrates_the_single_configmap(
    kube: tuple[KubeEmulator, StatusLog], api: Callable[[], Any]
) -> None:
    """State an earlier version kept in one ConfigMap is read as is; a write moves the key
    to its own ConfigMap and removes it there, leaving the other keys readable."""
    emulator, _ = kube
    legacy = {"cron__nightly-report": json.dumps({"n": 1}), "oss-poll__x": json.dumps({"t": 1})}
    seed_configmap(emulator, CM, legacy)
    store = ConfigMapStateStore(api(), NS, CM, clock=RecordingClock())
    assert await store.get(KEY) == {"n": 1}
    assert await store.update(KEY, increment) == {"n": 2}
    assert configmap(emulator) is not None
    old = emulator.get_object("", "v1", "configmaps", CM, NS)
    assert old is not None and old["data"] == {"oss-poll__x": json.dumps({"t": 1})}
    reader = ConfigMapStateStore(api(), NS, CM, clock=RecordingClock())
    assert await reader.get(KEY) == {"n": 2}
    assert await reader.get("oss-poll/x") == {"t": 1}


async def test_configmap_store_delete_does_not_bring_back_a_migrated_value(
    kube: tuple[KubeEmulator, StatusLog], api: Callable[[], Any]
) -> None:
    """Deleting a key that still sat in the old single ConfigMap leaves it deleted."""
    emulator, _ = kube
    seed_configmap(emulator, CM, {"cron__nightly-report": json.dumps({"n": 1})})
    store = ConfigMapStateStore(api(), NS, CM, clock=RecordingClock())
    assert await store.update(KEY, lambda _: None) is None
    assert await ConfigMapStateStore(api(), NS, CM, clock=RecordingClock()).get(KEY) is None


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_configmap_store_retries_temporary_failures(
    kube: tuple[KubeEmulator, StatusLog], api: Callable[[], Any], status: int
) -> None:
    """Injected 5xx/429 answers are retried with backoff and the write lands."""
    emulator, _ = kube
    clock = RecordingClock()
    store = ConfigMapStateStore(api(), NS, CM, clock=clock)
    emulator.inject(status, count=2, path_contains="configmaps")
    await store.put(KEY, {"n": 1})
    assert len(clock.slept) == 2
    assert await store.get(KEY) == {"n": 1}


async def test_configmap_store_persistent_500_is_a_temporary_state_error(
    kube: tuple[KubeEmulator, StatusLog], api: Callable[[], Any]
) -> None:
    """When every attempt gets 500 the store gives up with a temporary StateError, counted."""
    emulator, _ = kube
    clock, metrics = RecordingClock(), Metrics()
    store = ConfigMapStateStore(api(), NS, CM, clock=clock, attempts=3, metrics=metrics)
    emulator.inject(500, count=100, path_contains="configmaps")
    with pytest.raises(StateError, match="500") as caught:
        await store.put(KEY, {"n": 1})
    assert caught.value.temporary
    assert caught.value.status == 500
    assert len(clock.slept) == 2
    labels = {"key_kind": "cron", "reason": "unavailable"}
    assert metrics.registry.get_sample_value("trigger_state_errors_total", labels) == 1


async def test_configmap_store_does_not_retry_a_forbidden_write(
    kube: tuple[KubeEmulator, StatusLog], api: Callable[[], Any]
) -> None:
    """A 403 (RBAC) is a permanent StateError at once, with no retry."""
    emulator, _ = kube
    clock = RecordingClock()
    store = ConfigMapStateStore(api(), NS, CM, clock=clock)
    emulator.inject(403, count=5, path_contains="configmaps")
    with pytest.raises(StateError, match="403") as caught:
        await store.get(KEY)
    assert not caught.value.temporary and caught.value.reason == "forbidden"
    assert clock.slept == []


async def test_configmap_store_refuses_a_value_over_the_size_limit(
    kube: tuple[KubeEmulator, StatusLog], api: Callable[[], Any]
) -> None:
    """A value past 1 MiB is refused before it is sent, and the key keeps its old value."""
    emulator, _ = kube
    store = ConfigMapStateStore(api(), NS, CM, clock=RecordingClock())
    await store.put(KEY, {"n": 1})
    puts = emulator.count(method="PUT")
    with pytest.raises(StateError, match="limit") as caught:
        await store.put(KEY, {"blob": "x" * MAX_BYTES})
    assert not caught.value.temporary
    assert emulator.count(method="PUT") == puts
    assert await store.get(KEY) == {"n": 1}


async def test_configmap_store_reports_a_value_that_is_not_json(
    kube: tuple[KubeEmulator, StatusLog], api: Callable[[], Any]
) -> None:
    """A hand-edited value that is not a JSON object is a clear, permanent StateError."""
    emulator, _ = kube
    seed_configmap(emulator, configmap_name(CM, KEY), {"value": "oops"})
    store = ConfigMapStateStore(api(), NS, CM, clock=RecordingClock())
    with pytest.raises(StateError, match="cron/nightly-report") as caught:
        await store.get(KEY)
    assert not caught.value.temporary and caught.value.reason == "invalid"


@pytest.mark.parametrize("kind", ["file", "configmap"])
async def test_state_too_large_names_key_and_size_and_is_counted(
    tmp_path: Path, api: Callable[[], Any], kind: str
) -> None:
    """A value over the limit is a StateTooLarge naming the key and its size, logged as
    such and counted in trigger_state_errors_total{reason="too_large"}."""
    metrics = Metrics()
    store: Any
    if kind == "file":
        store = await FileStateStore.open(tmp_path / "s.json", max_bytes=1000, metrics=metrics)
    else:
        clock = RecordingClock()
        store = ConfigMapStateStore(api(), NS, CM, clock=clock, max_bytes=1000, metrics=metrics)
    with structlog.testing.capture_logs() as logs, pytest.raises(StateTooLarge) as caught:
        await store.put("oss-poll/raw-data/1f2e", {"blob": "x" * 2000})
    assert caught.value.key == "oss-poll/raw-data/1f2e" and caught.value.size > 2000
    assert "oss-poll/raw-data/1f2e" in str(caught.value) and str(caught.value.size) in str(
        caught.value
    )
    (line,) = [e for e in logs if e["event"] == "state value too large"]
    assert (line["key"], line["bytes"], line["limit"]) == (
        "oss-poll/raw-data/1f2e",
        caught.value.size,
        1000,
    )
    labels = {"key_kind": "oss-poll", "reason": "too_large"}
    assert metrics.registry.get_sample_value("trigger_state_errors_total", labels) == 1


# --- opening -----------------------------------------------------------------------------


async def test_open_file_spec(tmp_path: Path) -> None:
    """`file:PATH` opens a FileStateStore on that path."""
    store = await open_state_store(f"file:{tmp_path / 's.json'}")
    assert isinstance(store, FileStateStore)
    assert store.path == tmp_path / "s.json"


@pytest.mark.parametrize(
    ("spec", "namespace_text", "expected"),
    [
        ("kubernetes", "data\n", ("data", "trigger-state")),
        ("kubernetes", None, ("default", "trigger-state")),
        ("kubernetes:data/my-state", "ignored", ("data", "my-state")),
    ],
)
async def test_open_kubernetes_spec(
    tmp_path: Path,
    api: Callable[[], Any],
    spec: str,
    namespace_text: str | None,
    expected: tuple[str, str],
) -> None:
    """`kubernetes[:NS/NAME]` picks the namespace from the service account, else default."""
    namespace_file = tmp_path / "namespace"
    if namespace_text is not None:
        namespace_file.write_text(namespace_text)
    store = await open_state_store(spec, api(), namespace_file=str(namespace_file))
    assert isinstance(store, ConfigMapStateStore)
    assert (store.namespace, store.name) == expected


@pytest.mark.parametrize(
    "spec", ["", "file:", "redis://x", "kubernetes:noslash", "kubernetes:/x", "kubernetes:a/b/c"]
)
async def test_open_bad_spec_is_config_error(api: Callable[[], Any], spec: str) -> None:
    """A --state value that names no known store is a ConfigError."""
    with pytest.raises(ConfigError, match="state"):
        await open_state_store(spec, api())


async def test_open_kubernetes_without_a_client_is_config_error() -> None:
    """`kubernetes` without a cluster connection is a ConfigError, not a crash later."""
    with pytest.raises(ConfigError, match="Kubernetes"):
        await open_state_store("kubernetes")


async def test_file_store_journal_replays_after_a_crash(tmp_path: Path) -> None:
    """A store that never closed (killed): reopening replays its journal over the last
    snapshot, and a last line cut short mid-write is dropped and cut off the file."""
    path = tmp_path / "state.json"
    store = await FileStateStore.open(path)
    await store.put("cron/a", {"n": 1})
    await store.put("cron/b", {"n": 2})
    await store.update("cron/a", lambda _: None)
    journal = tmp_path / "state.json.journal"
    whole = journal.read_bytes()
    with journal.open("ab") as out:
        out.write(b'{"k":"cron/c","v":{"n"')  # the write a SIGKILL cut short
    reopened = await FileStateStore.open(path)
    assert (await reopened.keys(""), await reopened.get("cron/b")) == (["cron/b"], {"n": 2})
    assert journal.read_bytes() == whole
    await reopened.put("cron/c", {"n": 3})
    assert load_state_file(path) == {"cron/b": {"n": 2}, "cron/c": {"n": 3}}


async def test_file_store_snapshot_folds_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the journal outgrows its threshold the file is written in the background with
    every key while writes go on; a clean close folds the rest in and removes the
    journals."""
    monkeypatch.setattr("trigger.core.state.COMPACT_MIN", 200)
    path = tmp_path / "state.json"
    store = await FileStateStore.open(path)
    for n in range(10):
        await store.put(f"cron/rule-{n % 3}", {"n": n, "pad": "x" * 20})
    latest = {f"cron/rule-{n % 3}": {"n": n, "pad": "x" * 20} for n in range(7, 10)}
    end = time.monotonic() + 10
    while not path.exists():  # only a snapshot writes the file: the store started empty
        assert time.monotonic() < end, "no snapshot"
        await asyncio.sleep(0.01)  # polling interval, not synchronization
    assert set(json.loads(path.read_text())) <= set(latest)
    assert load_state_file(path) == latest
    await store.close()
    assert json.loads(path.read_text()) == latest
    assert os.listdir(tmp_path) == ["state.json"]


async def test_file_store_replays_a_journal_moved_aside_before_the_journal(
    tmp_path: Path,
) -> None:
    """A crash while a snapshot was being written: the journal moved aside for it replays
    before the newer journal, over the older file."""
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"cron/a": {"n": 1}}))
    (tmp_path / "state.json.journal.old").write_text(
        '{"k":"cron/a","v":{"n":2}}\n{"k":"cron/b","v":{"n":1}}\n'
    )
    (tmp_path / "state.json.journal").write_text('{"k":"cron/a","v":{"n":3}}\n')
    store = await FileStateStore.open(path)
    assert (await store.get("cron/a"), await store.get("cron/b")) == ({"n": 3}, {"n": 1})
    await store.close()
    assert load_state_file(path) == {"cron/a": {"n": 3}, "cron/b": {"n": 1}}
    assert os.listdir(tmp_path) == ["state.json"]
