"""How a request reaches the store: the path it names, and one handler per verb.

A path names a collection, an object, or an object's `/status`, of a resource type, in a
namespace or across all of them. GET, POST, PUT, PATCH and DELETE on those map to store
calls; a list with `watch=true` becomes a watch; lists page with `limit`/`continue`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from trigger.testing.kubeapi.discovery import documents
from trigger.testing.kubeapi.errors import ApiStatusError
from trigger.testing.kubeapi.patching import apply_patch
from trigger.testing.kubeapi.resources import JSON, Resource, key_of
from trigger.testing.kubeapi.selectors import parse_field_selector, parse_label_selector
from trigger.testing.kubeapi.store import Store, Watcher
from trigger.testing.kubeapi.watch import TRUE, watch


@dataclass(frozen=True)
class _Ref:
    """What a request path names: a collection, an object, or an object's subresource."""

    rtype: Resource
    namespace: str | None
    name: str | None = None
    sub: str | None = None
    all_namespaces: bool = False

    @property
    def shape(self) -> str:
        if self.name is None:
            return "collection"
        return {None: "object", "status": "status"}.get(self.sub, "other")


def _parse_path(path: str, cluster_scoped: frozenset[str]) -> _Ref | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        return None
    rtype = Resource(group, version, rest[0])
    namespaced = rtype.plural not in cluster_scoped
    if namespaced != (namespace is not None) and not (namespaced and len(rest) == 1):
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return _Ref(rtype, namespace, name, sub, all_namespaces=namespaced and namespace is None)


def _success(rtype: Resource, obj: JSON) -> JSON:
    details = {**rtype.details(obj["metadata"]["name"]), "uid": obj["metadata"].get("uid")}
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


async def _read_json(request: web.Request, *, optional: bool = False) -> Any:
    raw = await request.read()
    if optional and not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as err:
        raise ApiStatusError(400, f"couldn't get version/kind; json parse error: {err}") from None


def _require_object(body: Any) -> JSON:
    if not isinstance(body, dict):
        raise ApiStatusError(400, "the body of the request must be a JSON object")
    return body


def _encode_continue(rv: str, key: tuple[str, str]) -> str:
    raw = json.dumps({"rv": rv, "start": list(key)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _paginate(
    items: list[JSON], limit_text: str | None, token: str | None, rv: str
) -> tuple[list[JSON], JSON]:
    meta: JSON = {"resourceVersion": rv}
    if token:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
            meta["resourceVersion"], start = decoded["rv"], tuple(decoded["start"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ApiStatusError(400, "continue key is not valid") from None
        items = [o for o in items if key_of(o) > start]
    try:
        limit = int(limit_text or 0)
    except ValueError:
        raise ApiStatusError(400, f"invalid limit {limit_text!r}") from None
    if 0 < limit < len(items):
        meta["continue"] = _encode_continue(meta["resourceVersion"], key_of(items[limit - 1]))
        meta["remainingItemCount"] = len(items) - limit
        items = items[:limit]
    return items, meta


_Handler = Callable[[web.Request, _Ref], Awaitable[web.StreamResponse]]


class Router:
    """Answers a request from the store: a discovery document, or the handler of its verb."""

    def __init__(self, store: Store, *, bookmark_interval: float) -> None:
        self._store = store
        self._bookmark_interval = bookmark_interval
        self._verbs: dict[tuple[str, str], _Handler] = {
            ("GET", "collection"): self._list,
            ("POST", "collection"): self._create,
            ("DELETE", "collection"): self._delete_collection,
            ("GET", "object"): self._get,
            ("PUT", "object"): self._replace,
            ("PATCH", "object"): self._patch,
            ("DELETE", "object"): self._delete,
            ("GET", "status"): self._get,
            ("PUT", "status"): self._replace,
            ("PATCH", "status"): self._patch,
        }
        self._discovery = documents(store.cluster_scoped)

    async def route(self, request: web.Request) -> web.StreamResponse:
        """The answer to a request; refusals are raised as ApiStatusError."""
        discovery = self._discovery.get(request.path.rstrip("/"))
        if discovery is not None and request.method == "GET":
            return json_response(discovery)
        ref = _parse_path(request.path, self._store.cluster_scoped)
        if ref is None or ref.shape == "other":
            raise ApiStatusError(404, "the server could not find the requested resource")
        handler = self._verbs.get((request.method, ref.shape))
        if handler is None or (ref.all_namespaces and request.method != "GET"):
            raise ApiStatusError(
                405, "the server does not allow this method on the requested resource"
            )
        return await handler(request, ref)

    async def _get(self, request: web.Request, ref: _Ref) -> web.StreamResponse:
        return json_response(self._store.get(ref.rtype, ref.namespace, ref.name or ""))

    async def _create(self, request: web.Request, ref: _Ref) -> web.StreamResponse:
        body = _require_object(await _read_json(request))
        return json_response(self._store.create(ref.rtype, ref.namespace, body), 201)

    async def _replace(self, request: web.Request, ref: _Ref) -> web.StreamResponse:
        body = _require_object(await _read_json(request))
        obj = self._store.replace(
            ref.rtype, ref.namespace, ref.name or "", body, status_only=ref.sub == "status"
        )
        return json_response(obj)

    async def _patch(self, request: web.Request, ref: _Ref) -> web.StreamResponse:
        body = await _read_json(request)
        current = self._store.get(ref.rtype, ref.namespace, ref.name or "")
        patched = apply_patch(ref.rtype, request.content_type, current, body)
        sent_rv = (patched.get("metadata") or {}).get("resourceVersion")
        obj = self._store.commit(
            ref.rtype, current, patched, status_only=ref.sub == "status", sent_rv=sent_rv
        )
        return json_response(obj)

    async def _delete(self, request: web.Request, ref: _Ref) -> web.StreamResponse:
        options = await _read_json(request, optional=True)
        preconditions = options.get("preconditions") if isinstance(options, dict) else None
        obj, gone = self._store.delete(ref.rtype, ref.namespace, ref.name or "", preconditions)
        return json_response(_success(ref.rtype, obj) if gone and not ref.rtype.custom else obj)

    async def _delete_collection(self, request: web.Request, ref: _Ref) -> web.StreamResponse:
        labels = parse_label_selector(request.query.get("labelSelector", ""))
        fields = parse_field_selector(request.query.get("fieldSelector", ""))
        items = self._store.select(ref.rtype, ref.namespace, labels, fields)
        deleted = [self._store.delete(ref.rtype, ref.namespace, key_of(o)[1])[0] for o in items]
        return json_response(self._list_body(ref.rtype, deleted, {}))

    def _list_body(self, rtype: Resource, items: list[JSON], meta: JSON) -> JSON:
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version,
            "metadata": meta,
            "items": items,
        }

    async def _list(self, request: web.Request, ref: _Ref) -> web.StreamResponse:
        query = request.query
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""))
        watcher = Watcher(ref.rtype, ref.namespace, labels, fields)
        if query.get("watch", "") in TRUE:
            return await watch(
                request, self._store, watcher, bookmark_interval=self._bookmark_interval
            )
        items = self._store.select(ref.rtype, ref.namespace, labels, fields)
        page, meta = _paginate(
            items, query.get("limit"), query.get("continue"), self._store.resource_version
        )
        return json_response(self._list_body(ref.rtype, page, meta))
