"""The fake Argo Server, driven by plain aiohttp client requests."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from trigger.testing.argoserver import ArgoServerFake

TOKEN = "t"
LIMITED = "limited"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def argo() -> AsyncIterator[ArgoServerFake]:
    async with ArgoServerFake(
        token=TOKEN, namespaces=["default", "data"], tokens={LIMITED: ["data"]}
    ) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def workflow(
    name: str | None = None, *, generate: str | None = None, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": labels or {}}
    if name:
        meta["name"] = name
    if generate:
        meta["generateName"] = generate
    spec = {"workflowTemplateRef": {"name": "ingest"}, "arguments": {"parameters": []}}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": meta,
        "spec": spec,
    }


async def request(
    http: aiohttp.ClientSession,
    argo: ArgoServerFake,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = AUTH if headers is None else headers
    async with http.request(method, argo.url + path, json=body, headers=headers, **kwargs) as reply:
        return reply.status, await reply.json(), reply


async def create(
    http: aiohttp.ClientSession,
    argo: ArgoServerFake,
    wf: dict[str, Any],
    namespace: str = "default",
    **kwargs: Any,
) -> tuple[int, Any]:
    body = {"workflow": wf, "serverDryRun": False}
    status, payload, _ = await request(
        http, argo, "POST", f"/api/v1/workflows/{namespace}", body, **kwargs
    )
    return status, payload


# --- create ----------------------------------------------------------------------------------


async def test_create_returns_workflow_with_server_fields(
    argo: ArgoServerFake, http: aiohttp.ClientSession
) -> None:
    """A created Workflow comes back with uid, creationTimestamp, resourceVersion and namespace."""
    status, created = await create(http, argo, workflow("wf-1"))
    meta = created["metadata"]
    assert (status, meta["name"], meta["namespace"]) == (200, "wf-1", "default")
    assert meta["uid"] and meta["resourceVersion"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert created["spec"] == workflow("wf-1")["spec"]
    assert argo.workflows("default") == [created]


async def test_generate_name_gets_a_suffix(
    argo: ArgoServerFake, http: aiohttp.ClientSession
) -> None:
    """generateName is honoured: the name is the prefix plus five characters."""
    _, first = await create(http, argo, workflow(generate="ingest-"))
    _, second = await create(http, argo, workflow(generate="ingest-"))
    names = [first["metadata"]["name"], second["metadata"]["name"]]
    assert all(re.fullmatch(r"ingest-[a-z0-9]{5}", n) for n in names)
    assert names[0] != names[1]


async def test_duplicate_name_is_409_already_exists(
    argo: ArgoServerFake, http: aiohttp.ClientSession
) -> None:
    """Creating a second Workflow with the same name answers 409 with grpc code 6."""
    await create(http, argo, workflow("dup"))
    status, error = await create(http, argo, workflow("dup"))
    assert (status, error) == (
        409,
        {"code": 6, "message": 'workflows.argoproj.io "dup" already exists'},
    )
    assert len(argo.workflows("default")) == 1


@pytest.mark.parametrize(
    "wf",
    [
        pytest.param(workflow(), id="no-name"),
        pytest.param(workflow("Upper-Case"), id="uppercase"),
        pytest.param(workflow("x" * 64), id="too-long"),
        pytest.param({"apiVersion": "argoproj.io/v1alpha1"} | {"spec": {}}, id="no-metadata"),
    ],
)
async def test_invalid_name_is_400_invalid_argument(
    argo: ArgoServerFake, http: aiohttp.ClientSession, wf: dict[str, Any]
) -> None:
    """A Workflow without a valid name or generateName answers 400 with grpc code 3."""
    status, error = await create(http, argo, wf)
    assert (status, error["code"]) == (400, 3)
    assert argo.workflows() == []


async def test_missing_workflow_is_400(argo: ArgoServerFake, http: aiohttp.ClientSession) -> None:
    """A create request without `workflow` answers 400 with grpc code 3."""
    status, error, _ = await request(
        http, argo, "POST", "/api/v1/workflows/default", {"serverDryRun": False}
    )
    assert (status, error["code"]) == (400, 3)


async def test_namespace_mismatch_is_400(argo: ArgoServerFake, http: aiohttp.ClientSession) -> None:
    """A Workflow whose metadata.namespace differs from the URL's is refused."""
    wf = workflow("wf") | {"metadata": {"name": "wf", "namespace": "data"}}
    status, error = await create(http, argo, wf, namespace="default")
    assert (status, error["code"]) == (400, 3)


async def test_server_dry_run_stores_nothing(
    argo: ArgoServerFake, http: aiohttp.ClientSession
) -> None:
    """serverDryRun returns the would-be Workflow without storing it."""
    body = {"workflow": workflow("dry"), "serverDryRun": True}
    status, created, _ = await request(http, argo, "POST", "/api/v1/workflows/default", body)
    assert (status, created["metadata"]["name"]) == (200, "dry")
    assert argo.workflows() == []


async def test_unknown_namespace_is_404(argo: ArgoServerFake, http: aiohttp.ClientSession) -> None:
    """A namespace that does not exist answers 404 with grpc code 5."""
    status, error = await create(http, argo, workflow("wf"), namespace="nowhere")
    assert (status, error) == (404, {"code": 5, "message": 'namespaces "nowhere" not found'})


@pytest.mark.parametrize(
    ("check", "seeded", "expected"),
    [(True, False, 400), (True, True, 200), (False, False, 200)],
)
async def test_template_refs_checked_when_enabled(
    http: aiohttp.ClientSession, check: bool, seeded: bool, expected: int
) -> None:
    """With check_template_refs, a workflowTemplateRef must name an existing template."""
    async with ArgoServerFake(token=TOKEN, check_template_refs=check) as argo:
        if seeded:
            argo.add_template({"metadata": {"name": "ingest", "namespace": "default"}, "spec": {}})
        status, _ = await create(http, argo, workflow("wf"))
    assert status == expected


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": "Bearer wrong"}, id="wrong"),
        pytest.param({"Authorization": TOKEN}, id="no-scheme"),
    ],
)
async def test_bad_token_is_401(
    argo: ArgoServerFake, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    """A missing or wrong bearer token answers 401 with grpc code 16 and creates nothing."""
    status, error = await create(http, argo, workflow("wf"), headers=headers)
    assert (status, error["code"]) == (401, 16)
    assert argo.workflows() == []


@pytest.mark.parametrize(("namespace", "expected"), [("data", 200), ("default", 403)])
async def test_restricted_token_only_in_its_namespaces(
    argo: ArgoServerFake, http: aiohttp.ClientSession, namespace: str, expected: int
) -> None:
    """A token granted some namespaces gets 403 (grpc code 7) elsewhere."""
    headers = {"Authorization": f"Bearer {LIMITED}"}
    status, body = await create(http, argo, workflow("wf"), namespace=namespace, headers=headers)
    assert status == expected
    assert status == 200 or body["code"] == 7


async def test_no_token_configured_means_no_auth(http: aiohttp.ClientSession) -> None:
    """Without a token the fake accepts unauthenticated requests, like --auth-mode=server."""
    async with ArgoServerFake() as argo:
        status, _ = await create(http, argo, workflow("wf"), headers={})
    assert status == 200


# --- reads -----------------------------------------------------------------------------------


async def test_get_workflow_and_missing_workflow(
    argo: ArgoServerFake, http: aiohttp.ClientSession
) -> None:
    """GET returns a created Workflow, and 404 (grpc code 5) for an unknown name."""
    _, created = await create(http, argo, workflow("wf"))
    assert (await request(http, argo, "GET", "/api/v1/workflows/default/wf"))[:2] == (200, created)
    status, error, _ = await request(http, argo, "GET", "/api/v1/workflows/default/nope")
    assert (status, error) == (
        404,
        {"code": 5, "message": 'workflows.argoproj.io "nope" not found'},
    )


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", ["a", "b", "c"]),
        ("team=data", ["a"]),
        ("team==data", ["a"]),
        ("team!=data", ["b", "c"]),
        ("team in (data,ml)", ["a", "b"]),
        ("team notin (data)", ["b", "c"]),
        ("team", ["a", "b"]),
        ("!team", ["c"]),
        ("team=data,rule=r1", ["a"]),
        ("team=nobody", []),
    ],
)
async def test_list_filters_by_label_selector(
    argo: ArgoServerFake, http: aiohttp.ClientSession, selector: str, expected: list[str]
) -> None:
    """Listing honours listOptions.labelSelector."""
    await create(http, argo, workflow("a", labels={"team": "data", "rule": "r1"}))
    await create(http, argo, workflow("b", labels={"team": "ml"}))
    await create(http, argo, workflow("c"))
    await create(http, argo, workflow("other-namespace", labels={"team": "data"}), namespace="data")
    params = {"listOptions.labelSelector": selector}
    status, listing, _ = await request(
        http, argo, "GET", "/api/v1/workflows/default", params=params
    )
    assert status == 200
    assert [wf["metadata"]["name"] for wf in listing["items"] or []] == expected


async def test_empty_list_has_null_items(argo: ArgoServerFake, http: aiohttp.ClientSession) -> None:
    """An empty list carries `"items": null`, as Argo's encoder writes it."""
    _, listing, _ = await request(http, argo, "GET", "/api/v1/workflows/data")
    assert listing["items"] is None
    assert "resourceVersion" in listing["metadata"]


async def test_phase_is_visible_in_listing(
    argo: ArgoServerFake, http: aiohttp.ClientSession
) -> None:
    """set_phase shows up in status.phase of listed Workflows."""
    argo.add_workflow({"metadata": {"name": "running", "namespace": "default"}})
    argo.set_phase("default", "running", "Running")
    _, listing, _ = await request(http, argo, "GET", "/api/v1/workflows/default")
    assert [wf["status"]["phase"] for wf in listing["items"]] == ["Running"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/workflow-templates/default", 200),
        ("/api/v1/workflow-templates/default/ingest", 200),
        ("/api/v1/workflow-templates/default/missing", 404),
        ("/api/v1/cluster-workflow-templates", 200),
        ("/api/v1/cluster-workflow-templates/shared", 200),
        ("/api/v1/cluster-workflow-templates/missing", 404),
    ],
)
async def test_templates_are_served(
    argo: ArgoServerFake, http: aiohttp.ClientSession, path: str, expected: int
) -> None:
    """Seeded WorkflowTemplates and ClusterWorkflowTemplates can be listed and fetched."""
    argo.add_template({"metadata": {"name": "ingest", "namespace": "default"}, "spec": {}})
    argo.add_template(
        {"kind": "ClusterWorkflowTemplate", "metadata": {"name": "shared"}, "spec": {}}
    )
    status, body, _ = await request(http, argo, "GET", path)
    assert status == expected
    if status == 200:
        names = (
            [t["metadata"]["name"] for t in body["items"]]
            if "items" in body
            else [body["metadata"]["name"]]
        )
        assert names in (["ingest"], ["shared"])
    else:
        assert body["code"] == 5


async def test_version_endpoint(argo: ArgoServerFake, http: aiohttp.ClientSession) -> None:
    """GET /api/v1/version reports a v3 version."""
    status, version, _ = await request(http, argo, "GET", "/api/v1/version")
    assert (status, version["version"][:3]) == (200, "v3.")


async def test_unknown_path_is_grpc_404(argo: ArgoServerFake, http: aiohttp.ClientSession) -> None:
    """An unknown API path answers 404 with a grpc-gateway body."""
    status, error, _ = await request(http, argo, "GET", "/api/v1/nothing")
    assert (status, error["code"]) == (404, 5)


# --- injection and introspection -------------------------------------------------------------


async def test_injected_429_with_retry_after_then_success(
    argo: ArgoServerFake, http: aiohttp.ClientSession
) -> None:
    """An injected 429 carries Retry-After, stores nothing, and is spent after `count`."""
    argo.inject(429, count=1, retry_after=2, method="POST")
    status, error, reply = await request(
        http, argo, "POST", "/api/v1/workflows/default", {"workflow": workflow("wf")}
    )
    assert (status, error["code"], reply.headers["Retry-After"]) == (429, 8, "2")
    assert argo.workflows() == []
    assert (await create(http, argo, workflow("wf")))[0] == 200


@pytest.mark.parametrize(("status", "code"), [(500, 13), (503, 14), (504, 4)])
async def test_injected_server_errors_carry_grpc_codes(
    argo: ArgoServerFake, http: aiohttp.ClientSession, status: int, code: int
) -> None:
    """Injected 5xx answers carry the matching grpc code."""
    argo.inject(status, path="/api/v1/workflows/")
    assert (await create(http, argo, workflow("wf")))[1]["code"] == code


async def test_injection_only_matches_its_method(
    argo: ArgoServerFake, http: aiohttp.ClientSession
) -> None:
    """An injection for POST leaves GET requests alone."""
    argo.inject(503, method="POST")
    assert (await request(http, argo, "GET", "/api/v1/workflows/default"))[0] == 200
    assert (await create(http, argo, workflow("wf")))[0] == 503


async def test_requests_are_logged_and_counted(
    argo: ArgoServerFake, http: aiohttp.ClientSession
) -> None:
    """Every request is logged with its body and status."""
    await create(http, argo, workflow("wf"))
    await create(http, argo, workflow("wf"))
    assert argo.count(method="POST", path="/api/v1/workflows/default") == 2
    assert argo.count(status=409) == 1
    assert argo.requests[0].body["workflow"]["metadata"]["name"] == "wf"


# --- TLS -------------------------------------------------------------------------------------


async def test_tls_verifies_against_ca_file(http: aiohttp.ClientSession) -> None:
    """With tls=True the server is reachable over HTTPS trusting only ca_file."""
    async with ArgoServerFake(token=TOKEN, tls=True) as argo:
        assert argo.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=argo.ca_file)
        status, _, _ = await request(http, argo, "GET", "/api/v1/version", ssl=context)
    assert status == 200


async def test_tls_rejected_without_ca(http: aiohttp.ClientSession) -> None:
    """A client that does not trust the fake's CA fails certificate verification."""
    async with ArgoServerFake(token=TOKEN, tls=True) as argo:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await request(http, argo, "GET", "/api/v1/version", ssl=ssl.create_default_context())
