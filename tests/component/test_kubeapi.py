"""The Kubernetes API emulator, driven by the real kubernetes_asyncio client over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from trigger.clock import VirtualClock
from trigger.testing.kubeapi import (
    KubeEmulator,
    json_patch,
    merge_patch,
    parse_label_selector,
    selector_matches,
)

G, V, WF = "argoproj.io", "v1alpha1", "workflows"
MERGE = "application/merge-patch+json"
REPO = Path(__file__).resolve().parents[2]
DEADLINE = 10.0  # seconds: a hang fails the test instead of stalling the suite


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(namespaces=["default", "data"], bookmark_interval=0.05) as emulator:
        yield emulator


@pytest.fixture
async def api(kube: KubeEmulator) -> AsyncIterator[client.ApiClient]:
    async with client.ApiClient(kube.client_configuration()) as api_client:
        yield api_client


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def coordination(api: client.ApiClient) -> client.CoordinationV1Api:
    return client.CoordinationV1Api(api)


def workflow(
    name: str | None = None,
    *,
    generate: str | None = None,
    labels: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": labels or {}}
    if name:
        meta["name"] = name
    if generate:
        meta["generateName"] = generate
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "Workflow",
        "metadata": meta,
        "spec": spec or {"entrypoint": "main"},
    }


async def create(
    custom: client.CustomObjectsApi, name: str, namespace: str = "default", **kwargs: Any
) -> dict[str, Any]:
    result: dict[str, Any] = await custom.create_namespaced_custom_object(
        G, V, namespace, WF, workflow(name, **kwargs)
    )
    return result


def status_of(err: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(err.body)
    return body


async def collect(stream: watch.Watch, count: int) -> list[tuple[str, dict[str, Any]]]:
    events = []
    async with asyncio.timeout(DEADLINE):
        async for event in stream:
            events.append((event["type"], event["raw_object"]))
            if len(events) == count:
                break
    return events


def names(items: list[dict[str, Any]]) -> list[str]:
    return [item["metadata"]["name"] for item in items]


# --- pure parts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=a", {"app": "a"}, True),
        ("app==a", {"app": "b"}, False),
        ("app!=a", {}, True),
        ("app!=a", {"app": "a"}, False),
        ("app in (a, b)", {"app": "b"}, True),
        ("app in (a,b)", {}, False),
        ("app notin (a,b)", {"app": "c"}, True),
        ("app notin (a,b)", {"app": "a"}, False),
        ("app", {"app": ""}, True),
        ("!app", {"app": "x"}, False),
        ("!app", {"other": "x"}, True),
        ("app=a,tier in (web),!debug", {"app": "a", "tier": "web"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_label_selector_matches_like_the_api_server(
    selector: str, labels: dict[str, str], expected: bool
) -> None:
    """Label selectors support =, ==, !=, in, notin, exists and !exists."""
    assert selector_matches(parse_label_selector(selector), labels) is expected


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1, "b": {"c": 2}}, {"b": {"c": None, "d": 3}}, {"a": 1, "b": {"d": 3}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": 1}, {"a": None}, {}),
    ],
)
def test_merge_patch_follows_rfc_7386(
    target: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]
) -> None:
    """A merge patch deletes on null, recurses into objects and replaces lists."""
    assert merge_patch(target, patch) == expected


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        ([{"op": "add", "path": "/l/-", "value": 3}], {"a": {"b": 1}, "l": [1, 2, 3]}),
        ([{"op": "add", "path": "/l/0", "value": 0}], {"a": {"b": 1}, "l": [0, 1, 2]}),
        ([{"op": "remove", "path": "/a/b"}], {"a": {}, "l": [1, 2]}),
        ([{"op": "replace", "path": "/l/1", "value": 9}], {"a": {"b": 1}, "l": [1, 9]}),
        ([{"op": "move", "from": "/a/b", "path": "/c"}], {"a": {}, "l": [1, 2], "c": 1}),
        ([{"op": "copy", "from": "/l", "path": "/m"}], {"a": {"b": 1}, "l": [1, 2], "m": [1, 2]}),
        ([{"op": "test", "path": "/a/b", "value": 1}], {"a": {"b": 1}, "l": [1, 2]}),
    ],
)
def test_json_patch_follows_rfc_6902(ops: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    """JSON patch operations apply to a copy, leaving the original untouched."""
    original = {"a": {"b": 1}, "l": [1, 2]}
    assert json_patch(original, ops) == expected
    assert original == {"a": {"b": 1}, "l": [1, 2]}


# --- create, get, list ----------------------------------------------------------------


async def test_create_fills_in_server_metadata(custom: client.CustomObjectsApi) -> None:
    """A create answers with uid, resourceVersion, creationTimestamp, namespace, generation."""
    created = await create(custom, "wf-a")
    meta = created["metadata"]
    assert meta["name"] == "wf-a"
    assert meta["namespace"] == "default"
    assert meta["uid"]
    assert int(meta["resourceVersion"]) > 0
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1


async def test_resource_versions_increase_across_writes(custom: client.CustomObjectsApi) -> None:
    """Every write gets a larger resourceVersion than the one before."""
    first = await create(custom, "wf-a")
    second = await create(custom, "wf-b")
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])


async def test_generate_name_appends_five_random_characters(
    custom: client.CustomObjectsApi,
) -> None:
    """generateName yields the prefix plus five characters from [a-z0-9]."""
    created = await create(custom, "", generate="order-")
    name = created["metadata"]["name"]
    assert name.startswith("order-")
    suffix = name.removeprefix("order-")
    assert len(suffix) == 5
    assert suffix.isalnum()
    assert suffix == suffix.lower()


async def test_duplicate_name_is_409_already_exists(custom: client.CustomObjectsApi) -> None:
    """Creating a name twice is a 409 Status with reason AlreadyExists."""
    await create(custom, "wf-a")
    with pytest.raises(ApiException) as caught:
        await create(custom, "wf-a")
    assert caught.value.status == 409
    assert status_of(caught.value)["reason"] == "AlreadyExists"
    assert status_of(caught.value)["kind"] == "Status"


async def test_get_missing_is_404_not_found(custom: client.CustomObjectsApi) -> None:
    """Reading an absent object is a 404 NotFound Status naming the resource."""
    with pytest.raises(ApiException) as caught:
        await custom.get_namespaced_custom_object(G, V, "default", WF, "nope")
    assert caught.value.status == 404
    body = status_of(caught.value)
    assert body["reason"] == "NotFound"
    assert body["message"] == 'workflows.argoproj.io "nope" not found'


async def test_create_in_missing_namespace_is_404(custom: client.CustomObjectsApi) -> None:
    """Creating into a namespace that does not exist is 404 `namespaces "x" not found`."""
    with pytest.raises(ApiException) as caught:
        await create(custom, "wf-a", namespace="missing")
    assert caught.value.status == 404
    assert status_of(caught.value)["message"] == 'namespaces "missing" not found'


async def test_invalid_label_value_is_422(custom: client.CustomObjectsApi) -> None:
    """A label value the real server would reject is a 422 Invalid."""
    with pytest.raises(ApiException) as caught:
        await create(custom, "wf-a", labels={"key": "has spaces"})
    assert caught.value.status == 422
    assert status_of(caught.value)["reason"] == "Invalid"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"data": {"limit": 2}}, 400),  # Go decodes ConfigMap.data as map[string]string
        ({"data": {"bad key": "2"}}, 422),
        ({"data": {"ok": "2"}, "metadata": {"annotations": {"n": 1}}}, 400),
    ],
    ids=["number in data", "invalid data key", "number in annotations"],
)
async def test_configmap_content_is_checked_like_the_api_server(
    core: client.CoreV1Api, body: dict[str, Any], status: int
) -> None:
    """A ConfigMap whose data or annotations the real server would refuse is refused,
    on create and on replace; nothing is stored."""
    meta = {"name": "cm", **body.get("metadata", {})}
    with pytest.raises(ApiException) as caught:
        await core.create_namespaced_config_map("default", {**body, "metadata": meta})
    assert caught.value.status == status
    await core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}})
    with pytest.raises(ApiException) as replaced:
        await core.replace_namespaced_config_map("cm", "default", {**body, "metadata": meta})
    assert replaced.value.status == status
    stored = await core.read_namespaced_config_map("cm", "default")
    assert stored.data is None and stored.metadata.annotations is None


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=a", ["wf-1", "wf-3"]),
        ("app!=a", ["wf-2", "wf-4"]),
        ("app in (b)", ["wf-2"]),
        ("app notin (a)", ["wf-2", "wf-4"]),
        ("tier", ["wf-3"]),
        ("!app", ["wf-4"]),
    ],
)
async def test_list_filters_by_label_selector(
    custom: client.CustomObjectsApi, selector: str, expected: list[str]
) -> None:
    """A list with labelSelector returns only the matching objects, sorted by name."""
    for name, labels in [
        ("wf-1", {"app": "a"}),
        ("wf-2", {"app": "b"}),
        ("wf-3", {"app": "a", "tier": "x"}),
        ("wf-4", {}),
    ]:
        await create(custom, name, labels=labels)
    listed = await custom.list_namespaced_custom_object(
        G, V, "default", WF, label_selector=selector
    )
    assert names(listed["items"]) == expected


async def test_list_filters_by_field_selector(custom: client.CustomObjectsApi) -> None:
    """fieldSelector on metadata.name picks one object."""
    await create(custom, "wf-1")
    await create(custom, "wf-2")
    listed = await custom.list_namespaced_custom_object(
        G, V, "default", WF, field_selector="metadata.name=wf-2"
    )
    assert names(listed["items"]) == ["wf-2"]


async def test_list_carries_a_resource_version(custom: client.CustomObjectsApi) -> None:
    """A list's metadata.resourceVersion is the newest one handed out."""
    created = await create(custom, "wf-1")
    listed = await custom.list_namespaced_custom_object(G, V, "default", WF)
    assert listed["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert listed["kind"] == "WorkflowList"


async def test_list_pages_with_limit_and_continue(custom: client.CustomObjectsApi) -> None:
    """limit and continue walk the whole collection without repeats."""
    for i in range(5):
        await create(custom, f"wf-{i}")
    seen: list[str] = []
    token = None
    for _ in range(5):
        page = await custom.list_namespaced_custom_object(
            G, V, "default", WF, limit=2, _continue=token
        )
        seen += names(page["items"])
        token = page["metadata"].get("continue")
        if not token:
            break
    assert seen == [f"wf-{i}" for i in range(5)]


async def test_cluster_wide_list_spans_namespaces(custom: client.CustomObjectsApi) -> None:
    """Listing /apis/{g}/{v}/{plural} returns objects from every namespace."""
    await create(custom, "wf-a", namespace="default")
    await create(custom, "wf-b", namespace="data")
    listed = await custom.list_cluster_custom_object(G, V, WF)
    assert sorted(names(listed["items"])) == ["wf-a", "wf-b"]


async def test_cluster_scoped_objects_live_outside_namespaces(
    custom: client.CustomObjectsApi,
) -> None:
    """ClusterWorkflowTemplates are created and read without a namespace."""
    body = {
        "apiVersion": f"{G}/{V}",
        "kind": "ClusterWorkflowTemplate",
        "metadata": {"name": "shared"},
        "spec": {},
    }
    await custom.create_cluster_custom_object(G, V, "clusterworkflowtemplates", body)
    read = await custom.get_cluster_custom_object(G, V, "clusterworkflowtemplates", "shared")
    assert "namespace" not in read["metadata"]


@pytest.mark.parametrize("field", [{"apiVersion": "argoproj.io/v1"}, {"kind": "Pod"}])
async def test_body_contradicting_the_url_is_400(
    custom: client.CustomObjectsApi, field: dict[str, str]
) -> None:
    """A body whose apiVersion or kind does not match the URL is refused."""
    with pytest.raises(ApiException) as caught:
        await custom.create_namespaced_custom_object(
            G, V, "default", WF, {**workflow("wf-a"), **field}
        )
    assert caught.value.status == 400


async def test_delete_collection_removes_only_selected(
    kube: KubeEmulator, custom: client.CustomObjectsApi
) -> None:
    """DELETE on a collection with a labelSelector removes just the matching objects."""
    await create(custom, "wf-old", labels={"done": "true"})
    await create(custom, "wf-live", labels={"done": "false"})
    await custom.delete_collection_namespaced_custom_object(
        G, V, "default", WF, label_selector="done=true"
    )
    assert names(kube.objects(G, V, WF)) == ["wf-live"]


# --- replace and patch ----------------------------------------------------------------


async def test_replace_with_stale_resource_version_is_409(custom: client.CustomObjectsApi) -> None:
    """A PUT carrying an old resourceVersion is a 409 Conflict."""
    created = await create(custom, "wf-a")
    await custom.patch_namespaced_custom_object(
        G, V, "default", WF, "wf-a", {"spec": {"x": 1}}, _content_type=MERGE
    )
    with pytest.raises(ApiException) as caught:
        await custom.replace_namespaced_custom_object(G, V, "default", WF, "wf-a", created)
    assert caught.value.status == 409
    assert status_of(caught.value)["reason"] == "Conflict"


async def test_replace_with_current_version_bumps_generation(
    custom: client.CustomObjectsApi,
) -> None:
    """A PUT with the current resourceVersion succeeds and a spec change bumps generation."""
    created = await create(custom, "wf-a")
    created["spec"] = {"entrypoint": "other"}
    replaced = await custom.replace_namespaced_custom_object(G, V, "default", WF, "wf-a", created)
    assert replaced["metadata"]["generation"] == 2
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]


async def test_replace_without_resource_version_is_422(custom: client.CustomObjectsApi) -> None:
    """A custom-object PUT without resourceVersion is rejected as the real server does."""
    await create(custom, "wf-a")
    with pytest.raises(ApiException) as caught:
        await custom.replace_namespaced_custom_object(G, V, "default", WF, "wf-a", workflow("wf-a"))
    assert caught.value.status == 422


async def test_dict_patch_with_default_content_type_is_400(custom: client.CustomObjectsApi) -> None:
    """kubernetes_asyncio sends a dict as json-patch by default, which the server refuses."""
    await create(custom, "wf-a")
    with pytest.raises(ApiException) as caught:
        await custom.patch_namespaced_custom_object(
            G, V, "default", WF, "wf-a", {"spec": {"shutdown": "Stop"}}
        )
    assert caught.value.status == 400


async def test_merge_patch_changes_the_object(custom: client.CustomObjectsApi) -> None:
    """A merge patch sets spec.shutdown, bumps generation and keeps other fields."""
    await create(custom, "wf-a")
    patched = await custom.patch_namespaced_custom_object(
        G, V, "default", WF, "wf-a", {"spec": {"shutdown": "Stop"}}, _content_type=MERGE
    )
    assert patched["spec"] == {"entrypoint": "main", "shutdown": "Stop"}
    assert patched["metadata"]["generation"] == 2


async def test_merge_patch_with_stale_resource_version_is_409(
    custom: client.CustomObjectsApi,
) -> None:
    """A merge patch naming an old resourceVersion is a 409 Conflict."""
    created = await create(custom, "wf-a")
    await custom.patch_namespaced_custom_object(
        G, V, "default", WF, "wf-a", {"spec": {"x": 1}}, _content_type=MERGE
    )
    stale = {
        "metadata": {"resourceVersion": created["metadata"]["resourceVersion"]},
        "spec": {"x": 2},
    }
    with pytest.raises(ApiException) as caught:
        await custom.patch_namespaced_custom_object(
            G, V, "default", WF, "wf-a", stale, _content_type=MERGE
        )
    assert caught.value.status == 409


async def test_no_op_patch_keeps_the_resource_version(custom: client.CustomObjectsApi) -> None:
    """A patch that changes nothing does not write, like the real server."""
    created = await create(custom, "wf-a")
    patched = await custom.patch_namespaced_custom_object(
        G, V, "default", WF, "wf-a", {"spec": {"entrypoint": "main"}}, _content_type=MERGE
    )
    assert patched["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_json_patch_list_applies(custom: client.CustomObjectsApi) -> None:
    """A list body is applied as an RFC 6902 JSON patch."""
    await create(custom, "wf-a", labels={"app": "a"})
    ops = [
        {"op": "test", "path": "/metadata/labels/app", "value": "a"},
        {"op": "replace", "path": "/metadata/labels/app", "value": "b"},
        {"op": "add", "path": "/spec/shutdown", "value": "Terminate"},
    ]
    patched = await custom.patch_namespaced_custom_object(G, V, "default", WF, "wf-a", ops)
    assert patched["metadata"]["labels"] == {"app": "b"}
    assert patched["spec"]["shutdown"] == "Terminate"


async def test_failed_json_patch_test_is_422(custom: client.CustomObjectsApi) -> None:
    """A JSON patch whose test operation fails is refused and changes nothing."""
    created = await create(custom, "wf-a")
    ops = [
        {"op": "test", "path": "/spec/entrypoint", "value": "other"},
        {"op": "remove", "path": "/spec/entrypoint"},
    ]
    with pytest.raises(ApiException) as caught:
        await custom.patch_namespaced_custom_object(G, V, "default", WF, "wf-a", ops)
    assert caught.value.status == 422
    read = await custom.get_namespaced_custom_object(G, V, "default", WF, "wf-a")
    assert read == created


async def test_strategic_merge_patch_on_custom_object_is_415(
    custom: client.CustomObjectsApi,
) -> None:
    """Custom resources do not accept strategic merge patches."""
    await create(custom, "wf-a")
    with pytest.raises(ApiException) as caught:
        await custom.patch_namespaced_custom_object(
            G,
            V,
            "default",
            WF,
            "wf-a",
            {"spec": {}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert caught.value.status == 415


async def test_status_subresource_sets_status_only(custom: client.CustomObjectsApi) -> None:
    """Patching /status sets status.phase without touching spec or generation."""
    await create(custom, "wf-a")
    patched = await custom.patch_namespaced_custom_object_status(
        G,
        V,
        "default",
        WF,
        "wf-a",
        {"status": {"phase": "Running"}, "spec": {"x": 1}},
        _content_type=MERGE,
    )
    assert patched["status"] == {"phase": "Running"}
    assert patched["spec"] == {"entrypoint": "main"}
    assert patched["metadata"]["generation"] == 1
    read = await custom.get_namespaced_custom_object_status(G, V, "default", WF, "wf-a")
    assert read["status"]["phase"] == "Running"


async def test_status_replace_checks_resource_version(custom: client.CustomObjectsApi) -> None:
    """A PUT to /status with a stale resourceVersion is a 409 Conflict."""
    created = await create(custom, "wf-a")
    await custom.patch_namespaced_custom_object_status(
        G, V, "default", WF, "wf-a", {"status": {"phase": "Running"}}, _content_type=MERGE
    )
    created["status"] = {"phase": "Failed"}
    with pytest.raises(ApiException) as caught:
        await custom.replace_namespaced_custom_object_status(G, V, "default", WF, "wf-a", created)
    assert caught.value.status == 409


# --- delete ---------------------------------------------------------------------------


async def test_delete_returns_the_object_then_it_is_gone(custom: client.CustomObjectsApi) -> None:
    """Deleting a custom object answers with it; reading it afterwards is 404."""
    await create(custom, "wf-a")
    deleted = await custom.delete_namespaced_custom_object(G, V, "default", WF, "wf-a")
    assert deleted["metadata"]["name"] == "wf-a"
    with pytest.raises(ApiException) as caught:
        await custom.get_namespaced_custom_object(G, V, "default", WF, "wf-a")
    assert caught.value.status == 404


async def test_delete_missing_is_404(custom: client.CustomObjectsApi) -> None:
    """Deleting an absent object is 404."""
    with pytest.raises(ApiException) as caught:
        await custom.delete_namespaced_custom_object(G, V, "default", WF, "nope")
    assert caught.value.status == 404


async def test_finalizers_hold_deletion_until_removed(
    kube: KubeEmulator, custom: client.CustomObjectsApi
) -> None:
    """An object with finalizers gets deletionTimestamp and goes once they are removed."""
    body = workflow("wf-a")
    body["metadata"]["finalizers"] = ["example.com/keep"]
    await custom.create_namespaced_custom_object(G, V, "default", WF, body)
    marked = await custom.delete_namespaced_custom_object(G, V, "default", WF, "wf-a")
    assert marked["metadata"]["deletionTimestamp"]
    await custom.patch_namespaced_custom_object(
        G, V, "default", WF, "wf-a", {"metadata": {"finalizers": None}}, _content_type=MERGE
    )
    assert kube.get_object(G, V, WF, "wf-a", "default") is None


# --- watch ----------------------------------------------------------------------------


async def test_watch_streams_added_modified_deleted(
    kube: KubeEmulator, custom: client.CustomObjectsApi
) -> None:
    """A live watch sees a create, a patch and a delete in order."""
    async with watch.Watch() as stream:
        events = asyncio.create_task(
            collect(stream.stream(custom.list_namespaced_custom_object, G, V, "default", WF), 3)
        )
        await asyncio.wait_for(kube.wait_watching(1), DEADLINE)
        await create(custom, "wf-a")
        await custom.patch_namespaced_custom_object(
            G, V, "default", WF, "wf-a", {"spec": {"x": 1}}, _content_type=MERGE
        )
        await custom.delete_namespaced_custom_object(G, V, "default", WF, "wf-a")
        seen = await events
    assert [kind for kind, _ in seen] == ["ADDED", "MODIFIED", "DELETED"]
    assert seen[1][1]["spec"]["x"] == 1


async def test_watch_starts_with_existing_objects(custom: client.CustomObjectsApi) -> None:
    """A watch without resourceVersion first lists current objects as ADDED."""
    await create(custom, "wf-a")
    async with watch.Watch() as stream:
        seen = await collect(
            stream.stream(custom.list_namespaced_custom_object, G, V, "default", WF), 1
        )
    assert seen[0][0] == "ADDED"
    assert seen[0][1]["metadata"]["name"] == "wf-a"


async def test_watch_honours_label_selector(custom: client.CustomObjectsApi) -> None:
    """A watch with a labelSelector only sees matching objects."""
    await create(custom, "wf-other", labels={"app": "b"})
    await create(custom, "wf-mine", labels={"app": "a"})
    async with watch.Watch() as stream:
        seen = await collect(
            stream.stream(
                custom.list_namespaced_custom_object,
                G,
                V,
                "default",
                WF,
                label_selector="app=a",
                timeout_seconds=1,
            ),
            10,
        )
    assert [obj["metadata"]["name"] for _, obj in seen] == ["wf-mine"]


async def test_watch_reports_leaving_the_selector_as_deleted(
    kube: KubeEmulator, custom: client.CustomObjectsApi
) -> None:
    """An object relabelled out of a watch's selector arrives as DELETED."""
    created = await create(custom, "wf-a", labels={"app": "a"})
    since = created["metadata"]["resourceVersion"]
    await custom.patch_namespaced_custom_object(
        G, V, "default", WF, "wf-a", {"metadata": {"labels": {"app": "b"}}}, _content_type=MERGE
    )
    async with watch.Watch() as stream:
        seen = await collect(
            stream.stream(
                custom.list_namespaced_custom_object,
                G,
                V,
                "default",
                WF,
                label_selector="app=a",
                resource_version=since,
            ),
            1,
        )
    assert seen[0][0] == "DELETED"


async def test_namespaced_watch_sees_only_its_namespace(
    kube: KubeEmulator, custom: client.CustomObjectsApi
) -> None:
    """A watch in one namespace misses objects created in another."""
    since = kube.resource_version
    await create(custom, "wf-elsewhere", namespace="data")
    await create(custom, "wf-here", namespace="default")
    async with watch.Watch() as stream:
        seen = await collect(
            stream.stream(
                custom.list_namespaced_custom_object,
                G,
                V,
                "default",
                WF,
                resource_version=since,
                timeout_seconds=1,
            ),
            10,
        )
    assert [obj["metadata"]["name"] for _, obj in seen] == ["wf-here"]


async def test_watch_timeout_seconds_ends_the_stream(custom: client.CustomObjectsApi) -> None:
    """With timeoutSeconds the server closes the stream and the iteration ends."""
    async with watch.Watch() as stream:
        seen = await collect(
            stream.stream(
                custom.list_namespaced_custom_object, G, V, "default", WF, timeout_seconds=1
            ),
            10,
        )
    assert seen == []


async def test_watch_replays_changes_after_resource_version(
    custom: client.CustomObjectsApi,
) -> None:
    """A watch from a resourceVersion replays exactly the later changes."""
    first = await create(custom, "wf-a")
    await create(custom, "wf-b")
    await custom.delete_namespaced_custom_object(G, V, "default", WF, "wf-a")
    async with watch.Watch() as stream:
        seen = await collect(
            stream.stream(
                custom.list_namespaced_custom_object,
                G,
                V,
                "default",
                WF,
                resource_version=first["metadata"]["resourceVersion"],
                timeout_seconds=1,
            ),
            10,
        )
    assert [(kind, obj["metadata"]["name"]) for kind, obj in seen] == [
        ("ADDED", "wf-b"),
        ("DELETED", "wf-a"),
    ]


async def test_watch_from_compacted_version_is_410(
    kube: KubeEmulator, custom: client.CustomObjectsApi
) -> None:
    """A watch from a resourceVersion older than the history gets an ERROR 410 event."""
    first = await create(custom, "wf-a")
    await create(custom, "wf-b")
    kube.compact()
    async with watch.Watch() as stream:
        with pytest.raises(ApiException) as caught:
            await collect(
                stream.stream(
                    custom.list_namespaced_custom_object,
                    G,
                    V,
                    "default",
                    WF,
                    resource_version=first["metadata"]["resourceVersion"],
                    timeout_seconds=1,
                ),
                1,
            )
    assert caught.value.status == 410


async def test_history_bound_expires_old_versions() -> None:
    """Once the bounded history overflows, older resourceVersions are 410 Gone."""
    async with (
        KubeEmulator(history=2) as kube,
        client.ApiClient(kube.client_configuration()) as api,
    ):
        custom = client.CustomObjectsApi(api)
        first = await create(custom, "wf-a")
        for name in ("wf-b", "wf-c", "wf-d"):
            await create(custom, name)
        async with watch.Watch() as stream:
            with pytest.raises(ApiException) as caught:
                await collect(
                    stream.stream(
                        custom.list_namespaced_custom_object,
                        G,
                        V,
                        "default",
                        WF,
                        timeout_seconds=1,
                        resource_version=first["metadata"]["resourceVersion"],
                    ),
                    1,
                )
    assert caught.value.status == 410


async def test_watch_sends_bookmarks_when_asked(
    kube: KubeEmulator, custom: client.CustomObjectsApi
) -> None:
    """allowWatchBookmarks yields BOOKMARK events carrying a resourceVersion."""
    async with watch.Watch() as stream:
        seen = await collect(
            stream.stream(
                custom.list_namespaced_custom_object,
                G,
                V,
                "default",
                WF,
                allow_watch_bookmarks=True,
            ),
            1,
        )
    assert seen[0][0] == "BOOKMARK"
    assert seen[0][1]["metadata"]["resourceVersion"] == kube.resource_version


async def test_stopping_the_emulator_ends_open_watches(custom: client.CustomObjectsApi) -> None:
    """Stopping the emulator closes watch streams instead of hanging."""
    async with KubeEmulator() as kube, client.ApiClient(kube.client_configuration()) as api:
        custom = client.CustomObjectsApi(api)
        async with watch.Watch() as stream:
            events = asyncio.create_task(
                collect(
                    stream.stream(
                        custom.list_namespaced_custom_object,
                        G,
                        V,
                        "default",
                        WF,
                        timeout_seconds=300,
                    ),
                    1,
                )
            )
            await asyncio.wait_for(kube.wait_watching(1), DEADLINE)
            await kube.stop()
            assert await events == []


# --- error injection ------------------------------------------------------------------


async def test_injected_429_fails_before_creating(
    kube: KubeEmulator, custom: client.CustomObjectsApi
) -> None:
    """An injected 429 carries Retry-After, creates nothing, and the retry succeeds."""
    kube.inject(429, method="POST", path_contains="/workflows", retry_after=3)
    with pytest.raises(ApiException) as caught:
        await create(custom, "wf-a")
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "3"
    assert status_of(caught.value)["reason"] == "TooManyRequests"
    assert kube.objects(G, V, WF) == []
    created = await create(custom, "wf-a")
    assert created["metadata"]["name"] == "wf-a"


async def test_injection_hits_only_the_next_matching_requests(
    kube: KubeEmulator, custom: client.CustomObjectsApi
) -> None:
    """An injection for two GETs leaves POSTs alone and is used up after two GETs."""
    await create(custom, "wf-a")
    kube.inject(500, count=2, method="GET", body_message="boom")
    await create(custom, "wf-b")
    statuses = []
    for _ in range(3):
        try:
            await custom.get_namespaced_custom_object(G, V, "default", WF, "wf-a")
            statuses.append(200)
        except ApiException as err:
            statuses.append(err.status)
    assert statuses == [500, 500, 200]


# --- slowness -------------------------------------------------------------------------


async def until(condition: Any, what: str) -> None:
    """Poll `condition` (real time) until it holds; fail after DEADLINE seconds."""
    give_up = asyncio.get_running_loop().time() + DEADLINE
    while not condition():
        assert asyncio.get_running_loop().time() < give_up, f"timed out waiting for {what}"
        await asyncio.sleep(0.002)


@pytest.fixture
async def slow() -> AsyncIterator[tuple[KubeEmulator, VirtualClock, client.CustomObjectsApi]]:
    """An emulator whose delays run on a virtual clock, and a client for it."""
    clock = VirtualClock()
    async with contextlib.AsyncExitStack() as stack:
        emulator = await stack.enter_async_context(KubeEmulator(sleep=clock.sleep))
        api_client = client.ApiClient(emulator.client_configuration())
        await stack.enter_async_context(api_client)
        yield emulator, clock, client.CustomObjectsApi(api_client)


async def test_delay_serves_the_request_and_holds_the_answer(
    slow: tuple[KubeEmulator, VirtualClock, client.CustomObjectsApi],
) -> None:
    """A delay (after) applies a create at once and answers it only when the time is up."""
    kube, clock, custom = slow
    delay = kube.delay(5.0, method="POST", path_contains="/workflows")
    creating = asyncio.ensure_future(create(custom, "wf-a"))
    await until(lambda: delay.held == 1, "the answer to be held")
    assert names(kube.objects(G, V, WF)) == ["wf-a"] and not creating.done()
    await clock.advance(4.9)
    assert not creating.done() and delay.held == 1
    await clock.advance(0.1)
    assert (await asyncio.wait_for(creating, DEADLINE))["metadata"]["name"] == "wf-a"
    assert delay.held == 0 and delay.remaining == 0


async def test_delay_before_holds_the_request_until_it_is_served(
    slow: tuple[KubeEmulator, VirtualClock, client.CustomObjectsApi],
) -> None:
    """A delay (before) applies a create only when its time is up; later requests are fast."""
    kube, clock, custom = slow
    delay = kube.delay(lambda: 3.0, method="POST", before=True)
    creating = asyncio.ensure_future(create(custom, "wf-a"))
    await until(lambda: delay.held == 1, "the request to be held")
    assert kube.objects(G, V, WF) == []
    await clock.advance(3.0)
    await asyncio.wait_for(creating, DEADLINE)
    assert names(kube.objects(G, V, WF)) == ["wf-a"]
    await asyncio.wait_for(create(custom, "wf-b"), DEADLINE)  # the delay was used up


async def test_released_delay_answers_held_requests_at_once(
    slow: tuple[KubeEmulator, VirtualClock, client.CustomObjectsApi],
) -> None:
    """An endless delay holds every matching request until release() lets them all go."""
    kube, _, custom = slow
    delay = kube.delay(math.inf, count=10, method="GET")
    await create(custom, "wf-a")
    reads = [
        asyncio.ensure_future(custom.get_namespaced_custom_object(G, V, "default", WF, "wf-a"))
        for _ in range(2)
    ]
    await until(lambda: delay.held == 2, "both reads to be held")
    delay.release()
    for read in reads:
        assert (await asyncio.wait_for(read, DEADLINE))["metadata"]["name"] == "wf-a"
    assert delay.remaining == 0


# --- built-in resources ---------------------------------------------------------------


async def test_lease_replace_with_stale_version_is_409(
    coordination: client.CoordinationV1Api,
) -> None:
    """Leader election: a Lease replace with an old resourceVersion loses with 409."""
    spec = client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15)
    lease = await coordination.create_namespaced_lease(
        "default", client.V1Lease(metadata=client.V1ObjectMeta(name="leader"), spec=spec)
    )
    lease.spec.holder_identity = "b"
    taken = await coordination.replace_namespaced_lease("leader", "default", lease)
    assert taken.spec.holder_identity == "b"
    lease.spec.holder_identity = "c"
    with pytest.raises(ApiException) as caught:
        await coordination.replace_namespaced_lease("leader", "default", lease)
    assert caught.value.status == 409


async def test_config_map_round_trip(core: client.CoreV1Api) -> None:
    """A ConfigMap can be created, read, patched, replaced and deleted."""
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="state"), data={"k": "1"})
    await core.create_namespaced_config_map("default", body)
    await core.patch_namespaced_config_map("state", "default", {"data": {"j": "2"}})
    read = await core.read_namespaced_config_map("state", "default")
    assert read.data == {"k": "1", "j": "2"}
    read.data = {"k": "3"}
    replaced = await core.replace_namespaced_config_map("state", "default", read)
    assert replaced.data == {"k": "3"}
    deleted = await core.delete_namespaced_config_map("state", "default")
    assert deleted.status == "Success"
    with pytest.raises(ApiException) as caught:
        await core.read_namespaced_config_map("state", "default")
    assert caught.value.status == 404


@pytest.mark.parametrize(("name", "status"), [("data", 200), ("missing", 404)])
async def test_namespace_lookup(core: client.CoreV1Api, name: str, status: int) -> None:
    """Reading a namespace succeeds for configured ones and is 404 otherwise."""
    try:
        found = await core.read_namespace(name)
        assert found.status.phase == "Active"
        seen = 200
    except ApiException as err:
        seen = err.status
    assert seen == status


# --- auth, introspection, kubeconfig, subprocess ---------------------------------------


@pytest.mark.parametrize(("token", "status"), [(None, 401), ("wrong", 401), ("secret", 200)])
async def test_bearer_token_is_checked(token: str | None, status: int) -> None:
    """With a token configured, requests without the right bearer token get 401."""
    async with (
        KubeEmulator(token="secret") as kube,
        client.ApiClient(kube.client_configuration(token=token or "")) as api,
    ):
        try:
            await client.CoreV1Api(api).read_namespace("default")
            seen = 200
        except ApiException as err:
            seen = err.status
    assert seen == status


async def test_seeded_objects_are_visible_to_clients(
    kube: KubeEmulator, custom: client.CustomObjectsApi
) -> None:
    """put_object and set_status change what clients read, and requests are counted."""
    template = {
        "apiVersion": f"{G}/{V}",
        "kind": "WorkflowTemplate",
        "metadata": {"name": "tpl", "namespace": "data"},
        "spec": {},
    }
    kube.put_object(G, V, "workflowtemplates", template)
    kube.set_status(G, V, "workflowtemplates", "tpl", {"phase": "Ready"}, namespace="data")
    read = await custom.get_namespaced_custom_object(G, V, "data", "workflowtemplates", "tpl")
    assert read["status"] == {"phase": "Ready"}
    assert kube.count(method="GET", path_contains="/workflowtemplates/tpl") == 1
    assert kube.requests[-1][0] == "GET"


async def test_kubeconfig_file_points_at_the_emulator(kube: KubeEmulator, tmp_path: Path) -> None:
    """A client loaded from the written kubeconfig reaches the emulator."""
    path = kube.kubeconfig(tmp_path / "kubeconfig")
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        found = await client.CoreV1Api(api).read_namespace("data")
    assert found.metadata.name == "data"


async def test_subprocess_mode_serves_until_sigterm() -> None:
    """`python -m trigger.testing.kubeapi` prints READY, answers, and exits on SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trigger.testing.kubeapi",
        "--port",
        "0",
        "--namespaces",
        "default,data",
        stdout=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(DEADLINE):
            line = (await process.stdout.readline()).decode().split()
        assert line[0] == "READY"
        async with client.ApiClient(client.Configuration(host=line[1])) as api:
            found = await client.CoreV1Api(api).read_namespace("data")
        assert found.metadata.name == "data"
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE):
            code = await process.wait()
    assert code == 0
