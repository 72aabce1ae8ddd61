"""The Kubernetes sink against the API emulator, over real HTTP with kubernetes_asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from trigger.clock import VirtualClock
from trigger.errors import (
    AlreadyExists,
    ConfigError,
    PermanentSubmitError,
    SubmitError,
    TemporarySubmitError,
)
from trigger.submit.base import Sink
from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink
from trigger.submit.transport import parse_retry_after, status_error
from trigger.testing.kubeapi import KubeEmulator

G, V, WF = "argoproj.io", "v1alpha1", "workflows"
TOKEN = "s3cret"
DEADLINE = 10.0  # seconds: a hang fails the test instead of stalling the suite


def workflow(
    name: str,
    namespace: str = "data",
    *,
    labels: dict[str, str] | None = None,
    generate_name: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": {"trigger.dev/rule": "ingest", **(labels or {})},
        "annotations": {"trigger.dev/event-id": f"evt-{name}"},
    }
    if generate_name:
        meta["generateName"] = generate_name
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "Workflow",
        "metadata": meta,
        "spec": {
            "workflowTemplateRef": {"name": "ingest"},
            "arguments": {"parameters": [{"name": "input", "value": "oss://b/k"}]},
        },
    }


@pytest.fixture
def make_workflow(
    valid_workflow: Callable[[dict[str, Any]], None],
) -> Callable[..., dict[str, Any]]:
    """Build a Workflow and check it against hera's models and Argo's schema."""

    def make(name: str, namespace: str = "data", **kwargs: Any) -> dict[str, Any]:
        obj = workflow(name, namespace, **kwargs)
        valid_workflow(obj)
        return obj

    return make


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(namespaces=["default", "data"], token=TOKEN) as emulator:
        yield emulator


@pytest.fixture
async def sink(kube: KubeEmulator) -> AsyncIterator[KubernetesSink]:
    opened = await KubernetesSink.connect(KubernetesOptions(server=kube.url, token=TOKEN))
    yield opened
    await opened.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A server that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def stored(kube: KubeEmulator, name: str, namespace: str = "data") -> dict[str, Any] | None:
    return kube.get_object(G, V, WF, name, namespace)


async def connect(**options: Any) -> KubernetesSink:
    return await KubernetesSink.connect(KubernetesOptions(**options))


# --- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["kubeconfig", "server+token"])
async def test_create_stores_workflow(
    mode: str, kube: KubeEmulator, tmp_path: Path, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """A Workflow is created under its own name, with kubeconfig or explicit credentials."""
    if mode == "kubeconfig":
        options = KubernetesOptions(kubeconfig=str(kube.kubeconfig(tmp_path / "config")))
    else:
        options = KubernetesOptions(server=kube.url, token=TOKEN)
    sink = await KubernetesSink.connect(options)
    try:
        created = await sink.create(make_workflow("ingest-abc"))
    finally:
        await sink.close()
    found = stored(kube, "ingest-abc")
    assert found is not None
    assert (created.name, created.namespace, created.uid) == (
        "ingest-abc",
        "data",
        found["metadata"]["uid"],
    )


async def test_kubeconfig_context_is_honoured(kube: KubeEmulator, tmp_path: Path) -> None:
    """An unknown context in the kubeconfig is a configuration error."""
    path = kube.kubeconfig(tmp_path / "config")
    with pytest.raises(ConfigError):
        await connect(kubeconfig=str(path), context="nope")


async def test_missing_kubeconfig_is_config_error(tmp_path: Path) -> None:
    """A kubeconfig path that does not exist is a configuration error."""
    with pytest.raises(ConfigError, match="no kubeconfig"):
        await connect(kubeconfig=str(tmp_path / "absent"), in_cluster=False)


async def test_in_cluster_without_service_host_is_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Asking for in-cluster credentials outside a pod is a configuration error."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST"):
        await connect(in_cluster=True)


async def test_sink_satisfies_protocol(sink: KubernetesSink) -> None:
    """The sink is a Sink and shares its ApiClient for other components."""
    from kubernetes_asyncio.client import ApiClient

    assert isinstance(sink, Sink)
    assert sink.kind == "kubernetes"
    assert isinstance(sink.api_client, ApiClient)


async def test_token_file_is_reread_after_rotation(
    kube: KubeEmulator, tmp_path: Path, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """A rotated token file is picked up once the recheck interval has passed."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    clock = VirtualClock()
    sink = await KubernetesSink.connect(
        KubernetesOptions(server=kube.url, token_file=str(token_file)), clock=clock
    )
    try:
        await sink.create(make_workflow("before-rotation"))
        kube.token = "rotated"
        token_file.write_text("rotated\n")
        await clock.advance(5.0)
        await sink.create(make_workflow("after-rotation"))
    finally:
        await sink.close()
    assert stored(kube, "after-rotation") is not None


# --- create ------------------------------------------------------------------------------


async def test_recreate_is_already_exists(
    sink: KubernetesSink, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """Creating the same name twice meets AlreadyExists."""
    await sink.create(make_workflow("dup"))
    with pytest.raises(AlreadyExists):
        await sink.create(make_workflow("dup"))


async def test_create_is_one_post_to_the_workflow_collection(
    sink: KubernetesSink, kube: KubeEmulator, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """A create is one POST to the path the generated client uses; a redelivery adds a GET."""
    kube.requests.clear()
    await sink.create(make_workflow("once"))
    with pytest.raises(AlreadyExists):
        await sink.create(make_workflow("once"))
    collection = f"/apis/{G}/{V}/namespaces/data/{WF}"
    assert [(method, path) for method, path, _ in kube.requests] == [
        ("POST", collection),
        ("POST", collection),
        ("GET", f"{collection}/once"),
    ]


async def test_generate_name_is_not_stored(
    kube: KubeEmulator, sink: KubernetesSink, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """A named Workflow is stored without its generateName."""
    await sink.create(make_workflow("ingest-x1", generate_name="ingest-"))
    found = stored(kube, "ingest-x1")
    assert found is not None
    assert "generateName" not in found["metadata"]


async def test_workflow_without_name_is_permanent(sink: KubernetesSink) -> None:
    """A Workflow without a name is refused before any request (idempotency needs one)."""
    body = workflow("x")
    del body["metadata"]["name"]
    with pytest.raises(PermanentSubmitError, match=r"metadata\.name"):
        await sink.create(body)


async def test_missing_namespace_is_permanent_with_server_message(
    sink: KubernetesSink, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """A namespace that does not exist is permanent and carries the server's message."""
    with pytest.raises(PermanentSubmitError, match='namespaces "nowhere" not found') as err:
        await sink.create(make_workflow("lost", namespace="nowhere"))
    assert err.value.status == 404


async def test_throttled_create_is_temporary_with_retry_after(
    kube: KubeEmulator, sink: KubernetesSink, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """A 429 with Retry-After: 3 is temporary, says 3 s, and creates nothing."""
    kube.inject(429, method="POST", retry_after=3)
    with pytest.raises(TemporarySubmitError) as err:
        await sink.create(make_workflow("slow-down"))
    assert (err.value.status, err.value.retry_after) == (429, 3.0)
    assert stored(kube, "slow-down") is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, TemporarySubmitError),
        (502, TemporarySubmitError),
        (503, TemporarySubmitError),
        (504, TemporarySubmitError),
        (501, TemporarySubmitError),
        (400, PermanentSubmitError),
        (401, PermanentSubmitError),
        (403, PermanentSubmitError),
        (404, PermanentSubmitError),
        (422, PermanentSubmitError),
        (418, PermanentSubmitError),
    ],
)
async def test_injected_status_maps_to_error(
    status: int,
    expected: type[SubmitError],
    kube: KubeEmulator,
    sink: KubernetesSink,
    make_workflow: Callable[..., dict[str, Any]],
) -> None:
    """Each failure status maps to temporary or permanent, with the server's message."""
    kube.inject(status, method="POST", body_message=f"injected {status}")
    with pytest.raises(expected, match=f"injected {status}") as err:
        await sink.create(make_workflow("fails"))
    assert err.value.status == status


async def test_wrong_token_is_permanent(
    kube: KubeEmulator, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """A token the server refuses (401) is permanent."""
    sink = await connect(server=kube.url, token="wrong")
    try:
        with pytest.raises(PermanentSubmitError) as err:
            await sink.create(make_workflow("denied"))
    finally:
        await sink.close()
    assert err.value.status == 401


async def test_connection_refused_is_temporary(
    closed_port: int, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """A refused connection is temporary."""
    sink = await connect(server=f"http://127.0.0.1:{closed_port}", token=TOKEN)
    try:
        with pytest.raises(TemporarySubmitError, match="create workflow data/refused"):
            await sink.create(make_workflow("refused"))
    finally:
        await sink.close()


async def test_timeout_is_temporary(
    silent_server: str, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """A server that never answers hits the per-request timeout, which is temporary."""
    sink = await connect(server=silent_server, token=TOKEN, timeout=0.2)
    try:
        with pytest.raises(TemporarySubmitError, match="timed out"):
            await asyncio.wait_for(sink.create(make_workflow("hangs")), DEADLINE)
    finally:
        await sink.close()


# --- reads, patches, stop -----------------------------------------------------------------


async def test_get_workflow_returns_stored_object(
    sink: KubernetesSink, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """get_workflow returns the stored object, or None when the name is unknown."""
    await sink.create(make_workflow("known"))
    found = await sink.get_workflow("data", "known")
    assert found is not None and found["metadata"]["name"] == "known"
    assert await sink.get_workflow("data", "unknown") is None


async def test_list_workflows_by_label(
    sink: KubernetesSink, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """list_workflows returns exactly the Workflows whose labels match the selector."""
    await sink.create(make_workflow("a1", labels={"team": "a"}))
    await sink.create(make_workflow("a2", labels={"team": "a"}))
    await sink.create(make_workflow("b1", labels={"team": "b"}))
    await sink.create(make_workflow("a-elsewhere", namespace="default", labels={"team": "a"}))
    found = await sink.list_workflows("data", "team=a,trigger.dev/rule=ingest")
    assert sorted(w["metadata"]["name"] for w in found) == ["a1", "a2"]


async def test_list_workflows_follows_pages(
    kube: KubeEmulator, sink: KubernetesSink, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """list_workflows follows continue tokens past one page."""
    for i in range(502):
        kube.put_object(G, V, WF, make_workflow(f"w{i:03d}"))
    found = await sink.list_workflows("data", "trigger.dev/rule=ingest")
    assert len(found) == 502
    assert kube.count(method="GET", path_contains="continue=") == 1


async def test_merge_patch_changes_stored_object(
    kube: KubeEmulator, sink: KubernetesSink, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """patch_workflow applies a JSON merge patch (not a JSON patch) to the stored object."""
    await sink.create(make_workflow("patched"))
    await sink.patch_workflow(
        "data",
        "patched",
        {"metadata": {"labels": {"phase": "seen", "team": None}}, "spec": {"priority": 5}},
    )
    found = stored(kube, "patched")
    assert found is not None
    assert found["metadata"]["labels"]["phase"] == "seen"
    assert found["spec"]["priority"] == 5
    assert found["spec"]["workflowTemplateRef"] == {"name": "ingest"}


async def test_patch_missing_workflow_is_permanent(sink: KubernetesSink) -> None:
    """Patching a Workflow that does not exist is a permanent 404."""
    with pytest.raises(PermanentSubmitError) as err:
        await sink.patch_workflow("data", "ghost", {"spec": {"priority": 1}})
    assert err.value.status == 404


async def test_patch_conflict_is_temporary_not_already_exists(
    kube: KubeEmulator, sink: KubernetesSink, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """A 409 on a patch is a write conflict to retry, not AlreadyExists."""
    await sink.create(make_workflow("contended"))
    kube.inject(409, method="PATCH")
    with pytest.raises(TemporarySubmitError) as err:
        await sink.patch_workflow("data", "contended", {"spec": {"priority": 1}})
    assert err.value.status == 409


async def test_stop_workflow_sets_shutdown(
    kube: KubeEmulator, sink: KubernetesSink, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """stop_workflow sets spec.shutdown to Stop on the stored Workflow."""
    await sink.create(make_workflow("running"))
    await sink.stop_workflow("data", "running")
    found = stored(kube, "running")
    assert found is not None and found["spec"]["shutdown"] == "Stop"


# --- readiness ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check_namespace", "path"), [(None, "/version"), ("data", "/namespaces/data/workflows")]
)
async def test_check_reads_cheaply(
    check_namespace: str | None, path: str, kube: KubeEmulator
) -> None:
    """check() succeeds with one cheap GET: /version, or a one-item list in a namespace."""
    sink = await connect(server=kube.url, token=TOKEN, check_namespace=check_namespace)
    try:
        await sink.check()
    finally:
        await sink.close()
    assert kube.count(method="GET", path_contains=path) == 1


async def test_check_unreachable_is_temporary(closed_port: int) -> None:
    """check() against a closed port raises TemporarySubmitError."""
    sink = await connect(server=f"http://127.0.0.1:{closed_port}")
    try:
        with pytest.raises(TemporarySubmitError):
            await sink.check()
    finally:
        await sink.close()


async def test_close_is_idempotent(kube: KubeEmulator) -> None:
    """close() can be called twice."""
    sink = await connect(server=kube.url, token=TOKEN)
    await sink.close()
    await sink.close()
    assert sink.api_client.rest_client.pool_manager.closed


# --- client-side rate limit -----------------------------------------------------------------


async def test_qps_limiter_delays_calls_beyond_burst(
    kube: KubeEmulator, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """With qps 1 and burst 2, the third create waits for the clock to advance one second."""
    clock = VirtualClock()
    sink = await KubernetesSink.connect(
        KubernetesOptions(server=kube.url, token=TOKEN, qps=1, burst=2), clock=clock
    )
    try:
        tasks = [asyncio.create_task(sink.create(make_workflow(f"q{i}"))) for i in range(3)]
        await asyncio.wait_for(asyncio.gather(*tasks[:2]), DEADLINE)
        assert clock.sleeping == 1
        assert not tasks[2].done()
        assert kube.count(method="POST") == 2
        await clock.advance(1.0)
        await asyncio.wait_for(tasks[2], DEADLINE)
    finally:
        await sink.close()
    assert kube.count(method="POST") == 3


async def test_zero_qps_disables_the_limiter(
    kube: KubeEmulator, make_workflow: Callable[..., dict[str, Any]]
) -> None:
    """With qps 0, creates beyond any burst never wait on the clock."""
    clock = VirtualClock()
    sink = await KubernetesSink.connect(
        KubernetesOptions(server=kube.url, token=TOKEN, qps=0, burst=1), clock=clock
    )
    try:
        await asyncio.wait_for(
            asyncio.gather(*(sink.create(make_workflow(f"z{i}")) for i in range(5))), DEADLINE
        )
    finally:
        await sink.close()
    assert clock.monotonic() == 0.0
    assert kube.count(method="POST") == 5


# --- error table ----------------------------------------------------------------------------


NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("-4", 0.0),
        ("Wed, 01 Jan 2025 12:00:10 GMT", 10.0),
        ("Wed, 01 Jan 2025 11:59:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    """Retry-After is read as delta-seconds or an HTTP date, never negative."""
    assert parse_retry_after(header, NOW) == seconds


@pytest.mark.parametrize(
    ("status", "creating", "expected"),
    [
        (409, True, AlreadyExists),
        (409, False, TemporarySubmitError),
        (408, True, TemporarySubmitError),
        (429, True, TemporarySubmitError),
        (599, True, TemporarySubmitError),
        (410, True, PermanentSubmitError),
        (302, True, PermanentSubmitError),
    ],
)
def test_status_table(status: int, creating: bool, expected: type[Exception]) -> None:
    """Statuses outside the named ones: 4xx permanent, 5xx temporary, 409 by operation."""
    assert type(status_error(status, "m", creating=creating)) is expected


# --- registry -------------------------------------------------------------------------------


async def test_open_sink_kubernetes(kube: KubeEmulator) -> None:
    """`--sink kubernetes` with options opens a connected KubernetesSink."""
    from trigger.submit.sinks import open_sink

    sink = await open_sink("kubernetes", server=kube.url, token=TOKEN, qps=5)
    try:
        assert isinstance(sink, KubernetesSink)
        assert sink.options.qps == 5
        await sink.check()
    finally:
        await sink.close()


@pytest.mark.parametrize("trust_env", [False, True])
async def test_environment_proxies_only_when_asked(
    kube: KubeEmulator, tmp_path: Path, trust_env: bool
) -> None:
    """The client reads proxy variables and ~/.netrc per request only with trust_env."""
    sink = await connect(kubeconfig=str(kube.kubeconfig(tmp_path / "kc")), trust_env=trust_env)
    try:
        assert sink.api_client.rest_client.pool_manager.trust_env is trust_env
        await sink.check()
    finally:
        await sink.close()
