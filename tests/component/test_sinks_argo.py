"""The Argo Server sink against the fake Argo Server, over real HTTP (and TLS) with aiohttp."""

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
from trigger.submit.argo_server import ArgoServerOptions, ArgoServerSink
from trigger.submit.base import Sink
from trigger.testing.argoserver import ArgoServerFake, write_test_pki

TOKEN = "argo-token"
LIMITED = "only-default"
DEADLINE = 10.0  # seconds: a hang fails the test instead of stalling the suite
Make = Callable[..., dict[str, Any]]


@pytest.fixture
def make_workflow(valid_workflow: Callable[[dict[str, Any]], None]) -> Make:
    """Build a Workflow and check it against hera's models and Argo's schema."""

    def make(
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
        }
        if generate_name:
            meta["generateName"] = generate_name
        obj = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": meta,
            "spec": {
                "workflowTemplateRef": {"name": "ingest"},
                "arguments": {"parameters": [{"name": "input", "value": "x"}]},
            },
        }
        valid_workflow(obj)
        return obj

    return make


@pytest.fixture
async def argo() -> AsyncIterator[ArgoServerFake]:
    async with ArgoServerFake(
        token=TOKEN, namespaces=["default", "data"], tokens={LIMITED: ["default"]}
    ) as server:
        yield server


@pytest.fixture
async def sink(argo: ArgoServerFake) -> AsyncIterator[ArgoServerSink]:
    opened = await ArgoServerSink.connect(ArgoServerOptions(url=argo.url, token=TOKEN))
    yield opened
    await opened.close()


async def connect(url: str, **options: Any) -> ArgoServerSink:
    return await ArgoServerSink.connect(ArgoServerOptions(url=url, **options))


# --- create ------------------------------------------------------------------------------


async def test_create_with_good_token(
    argo: ArgoServerFake, sink: ArgoServerSink, make_workflow: Make
) -> None:
    """A Workflow is created as a WorkflowCreateRequest with the bearer token."""
    created = await sink.create(make_workflow("ingest-1"))
    [stored] = argo.workflows("data")
    assert (created.name, created.namespace, created.uid) == (
        "ingest-1",
        "data",
        stored["metadata"]["uid"],
    )
    request = argo.requests[-1]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert set(request.body) == {"namespace", "workflow"}


async def test_generate_name_is_not_sent(
    argo: ArgoServerFake, sink: ArgoServerSink, make_workflow: Make
) -> None:
    """A named Workflow is sent without its generateName."""
    await sink.create(make_workflow("ingest-2", generate_name="ingest-"))
    [stored] = argo.workflows("data")
    assert stored["metadata"]["name"] == "ingest-2"
    assert "generateName" not in stored["metadata"]


async def test_sink_satisfies_protocol(sink: ArgoServerSink) -> None:
    """The sink is a Sink of kind argo-server."""
    assert isinstance(sink, Sink) and sink.kind == "argo-server"


async def test_duplicate_is_already_exists(sink: ArgoServerSink, make_workflow: Make) -> None:
    """Creating the same name twice meets AlreadyExists."""
    await sink.create(make_workflow("dup"))
    with pytest.raises(AlreadyExists, match="already exists"):
        await sink.create(make_workflow("dup"))


async def test_bad_token_is_permanent_401(argo: ArgoServerFake, make_workflow: Make) -> None:
    """A token the server refuses is permanent, with the server's message."""
    sink = await connect(argo.url, token="wrong")
    try:
        with pytest.raises(PermanentSubmitError, match="token not valid") as err:
            await sink.create(make_workflow("denied"))
    finally:
        await sink.close()
    assert err.value.status == 401
    assert argo.workflows() == []


async def test_forbidden_namespace_is_permanent_403(
    argo: ArgoServerFake, make_workflow: Make
) -> None:
    """A token without rights in the namespace is permanent (403)."""
    sink = await connect(argo.url, token=LIMITED)
    try:
        with pytest.raises(PermanentSubmitError, match="forbidden") as err:
            await sink.create(make_workflow("nope"))
    finally:
        await sink.close()
    assert err.value.status == 403


async def test_missing_namespace_is_permanent(sink: ArgoServerSink, make_workflow: Make) -> None:
    """A namespace that does not exist is permanent with the server's message."""
    with pytest.raises(PermanentSubmitError, match='namespaces "nowhere" not found'):
        await sink.create(make_workflow("lost", namespace="nowhere"))


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (429, (TemporarySubmitError, 3)),
        (500, (TemporarySubmitError, None)),
        (503, (TemporarySubmitError, 2)),
        (504, (TemporarySubmitError, None)),
        (400, (PermanentSubmitError, None)),
        (422, (PermanentSubmitError, None)),
    ],
)
async def test_injected_status_maps_to_error(
    status: int,
    outcome: tuple[type[SubmitError], int | None],
    argo: ArgoServerFake,
    sink: ArgoServerSink,
    make_workflow: Make,
) -> None:
    """Failures map to temporary (with Retry-After) or permanent, and create nothing."""
    expected, retry_after = outcome
    argo.inject(status, retry_after=retry_after, method="POST", message=f"boom {status}")
    with pytest.raises(expected, match=f"boom {status}") as err:
        await sink.create(make_workflow("fails"))
    assert err.value.status == status
    if isinstance(err.value, TemporarySubmitError):
        assert err.value.retry_after == (None if retry_after is None else float(retry_after))
    assert argo.workflows() == []


async def test_injected_conflict_is_already_exists(
    argo: ArgoServerFake, sink: ArgoServerSink, make_workflow: Make
) -> None:
    """A 409 with gRPC code 6 on create is AlreadyExists once the stored Workflow is read
    and found to be ours; one that cannot be read (gone meanwhile) is temporary."""
    argo.inject(409, method="POST", message="exists already")
    with pytest.raises(TemporarySubmitError, match="vanished"):
        await sink.create(make_workflow("conflict"))
    argo.add_workflow(make_workflow("conflict"))
    argo.inject(409, method="POST", message="exists already")
    with pytest.raises(AlreadyExists, match="already exists"):
        await sink.create(make_workflow("conflict"))


async def test_connection_refused_is_temporary(closed_port: int, make_workflow: Make) -> None:
    """A refused connection is temporary."""
    sink = await connect(f"http://127.0.0.1:{closed_port}", token=TOKEN)
    try:
        with pytest.raises(TemporarySubmitError, match="create workflow data/refused"):
            await sink.create(make_workflow("refused"))
    finally:
        await sink.close()


async def test_timeout_is_temporary(make_workflow: Make) -> None:
    """A server that accepts and never answers hits the timeout, which is temporary."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sink = await connect(f"http://127.0.0.1:{port}", token=TOKEN, timeout=0.2)
    try:
        with pytest.raises(TemporarySubmitError, match="timed out"):
            await asyncio.wait_for(sink.create(make_workflow("hangs")), DEADLINE)
    finally:
        await sink.close()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


# --- TLS and tokens -------------------------------------------------------------------------


@pytest.fixture
async def tls_argo() -> AsyncIterator[ArgoServerFake]:
    async with ArgoServerFake(token=TOKEN, tls=True) as server:
        yield server


async def test_tls_with_fake_ca_verifies(tls_argo: ArgoServerFake, make_workflow: Make) -> None:
    """Over HTTPS, the server certificate verifies against the given CA file."""
    sink = await connect(tls_argo.url, token=TOKEN, ca_file=tls_argo.ca_file)
    try:
        await sink.create(make_workflow("secure"))
    finally:
        await sink.close()
    assert [w["metadata"]["name"] for w in tls_argo.workflows()] == ["secure"]


async def test_tls_with_wrong_ca_is_permanent(
    tls_argo: ArgoServerFake, tmp_path: Path, make_workflow: Make
) -> None:
    """A certificate that fails verification is a configuration error: permanent."""
    wrong_ca, _, _ = write_test_pki(tmp_path, datetime.now(UTC))
    sink = await connect(tls_argo.url, token=TOKEN, ca_file=str(wrong_ca))
    try:
        with pytest.raises(PermanentSubmitError, match="TLS verification failed"):
            await sink.create(make_workflow("untrusted"))
    finally:
        await sink.close()
    assert tls_argo.workflows() == []


async def test_tls_insecure_skip_verify(tls_argo: ArgoServerFake, make_workflow: Make) -> None:
    """insecure_skip_tls_verify accepts a certificate no trusted CA signed."""
    sink = await connect(tls_argo.url, token=TOKEN, insecure_skip_tls_verify=True)
    try:
        await sink.create(make_workflow("unchecked"))
    finally:
        await sink.close()
    assert len(tls_argo.workflows()) == 1


async def test_missing_ca_file_is_config_error(tls_argo: ArgoServerFake, tmp_path: Path) -> None:
    """A CA file that does not exist fails at connect, as a configuration error."""
    with pytest.raises(ConfigError, match="CA file"):
        await connect(tls_argo.url, ca_file=str(tmp_path / "absent.crt"))


async def test_token_file_rotation(make_workflow: Make, tmp_path: Path) -> None:
    """A rotated token file is re-read (after the recheck interval) and its token sent."""
    async with ArgoServerFake(tokens={"old": None, "new": None}) as argo:
        token_file = tmp_path / "token"
        token_file.write_text("old\n")
        clock = VirtualClock()
        sink = await ArgoServerSink.connect(
            ArgoServerOptions(url=argo.url, token_file=str(token_file)), clock=clock
        )
        try:
            await sink.create(make_workflow("first"))
            token_file.write_text("new\n")
            await sink.create(make_workflow("cached"))  # within the recheck interval
            await clock.advance(5.0)
            await sink.create(make_workflow("second"))
        finally:
            await sink.close()
        sent = [r.headers["Authorization"] for r in argo.requests]
    assert sent == ["Bearer old", "Bearer old", "Bearer new"]


async def test_no_token_sends_no_authorization(make_workflow: Make) -> None:
    """Without a token (server auth mode), no Authorization header is sent."""
    async with ArgoServerFake() as argo:
        sink = await connect(argo.url)
        try:
            await sink.create(make_workflow("anonymous"))
        finally:
            await sink.close()
        assert "Authorization" not in argo.requests[-1].headers


# --- reads and the rest ---------------------------------------------------------------------


async def test_get_workflow(sink: ArgoServerSink, make_workflow: Make) -> None:
    """get_workflow returns the stored object, or None for an unknown name."""
    await sink.create(make_workflow("known"))
    found = await sink.get_workflow("data", "known")
    assert found is not None and found["metadata"]["name"] == "known"
    assert await sink.get_workflow("data", "unknown") is None


async def test_list_workflows_by_label(
    argo: ArgoServerFake, sink: ArgoServerSink, make_workflow: Make
) -> None:
    """list_workflows passes listOptions.labelSelector and returns the matches."""
    await sink.create(make_workflow("a1", labels={"team": "a"}))
    await sink.create(make_workflow("b1", labels={"team": "b"}))
    found = await sink.list_workflows("data", "team=a")
    assert [w["metadata"]["name"] for w in found] == ["a1"]
    assert await sink.list_workflows("data", "team=zzz") == []  # Argo answers items: null


async def test_patch_is_not_supported(sink: ArgoServerSink) -> None:
    """Argo Server has no generic patch endpoint."""
    with pytest.raises(NotImplementedError):
        await sink.patch_workflow("data", "x", {"spec": {}})


async def test_check_gets_version(argo: ArgoServerFake, sink: ArgoServerSink) -> None:
    """check() is one GET /api/v1/version."""
    await sink.check()
    assert argo.count(method="GET", path="/api/v1/version", status=200) == 1


async def test_check_unreachable_is_temporary(closed_port: int) -> None:
    """check() against a closed port is temporary."""
    sink = await connect(f"http://127.0.0.1:{closed_port}")
    try:
        with pytest.raises(TemporarySubmitError):
            await sink.check()
    finally:
        await sink.close()


async def test_close_is_idempotent(argo: ArgoServerFake) -> None:
    """close() can be called twice and closes the session."""
    sink = await connect(argo.url, token=TOKEN)
    await sink.close()
    await sink.close()
    assert sink.session.closed


async def test_open_sink_argo_server(argo: ArgoServerFake) -> None:
    """`--sink argo-server:URL` opens a connected ArgoServerSink."""
    from trigger.submit.sinks import open_sink

    sink = await open_sink(f"argo-server:{argo.url}", token=TOKEN)
    try:
        assert isinstance(sink, ArgoServerSink)
        await sink.check()
    finally:
        await sink.close()
