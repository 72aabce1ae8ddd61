"""Finished Workflows from the API server: a consistent list, then a watch from its version.

Both ask only for Workflows labelled `workflows.argoproj.io/completed=true` (Argo's
controller sets it with the final phase), in one namespace or in all of them, through
kubernetes-asyncio's CustomObjectsApi on the sink's connection. A watch runs for
`watch_timeout` seconds at most and asks for bookmarks, so the version it reports keeps up
with the cluster even while no Workflow finishes. A version the server has compacted away
(410 Gone, as an answer or as an ERROR event on the stream) is `Gone`: the caller lists
again. Every other failure is a `SourceError`; kubernetes-asyncio's and aiohttp's
exceptions do not leave this module.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from trigger.decoders.workflow import LABEL_COMPLETED
from trigger.errors import SourceError
from trigger.submit.transport import TRANSPORT_ERRORS

GROUP: Final = "argoproj.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "workflows"
SELECTOR: Final = f"{LABEL_COMPLETED}=true"
PAGE: Final = 500
# One watch event is one line, as large as a Workflow can be (etcd takes 1.5 MiB): lines
# are split here with this bound, not by the HTTP client's line reader and its limits.
MAX_EVENT_BYTES: Final = 4 * 1024 * 1024
T = TypeVar("T")


class Gone(Exception):
    """The resourceVersion is too old to watch from (410): list again."""


@dataclass(frozen=True)
class Change:
    """One watch event: ADDED, MODIFIED, DELETED (with the Workflow) or BOOKMARK."""

    type: str
    obj: dict[str, Any]
    version: str


class WorkflowFeed(Protocol):
    """Where the source reads finished Workflows; `namespace` None means all namespaces."""

    async def list_finished(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        """Every finished Workflow and the resourceVersion the list is consistent at."""
        ...

    def watch(self, namespace: str | None, version: str) -> AsyncIterator[Change]:
        """The changes after `version`, until the server ends the watch; raises Gone."""
        ...


class KubernetesFeed:
    """The feed over the Kubernetes API (the `kubernetes` sink's connection)."""

    def __init__(
        self, api_client: client.ApiClient, *, timeout: float = 10.0, watch_timeout: float = 300.0
    ) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._timeout, self._watch_timeout = timeout, watch_timeout

    async def list_finished(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        version = ""
        while True:
            page = await _call(
                f"list workflows in {namespace or 'all namespaces'}",
                functools.partial(self._list, namespace, limit=PAGE, **_continued(token)),
            )
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            items.extend(page.get("items") or [])
            token = meta.get("continue")
            if not token:
                return items, version

    async def watch(self, namespace: str | None, version: str) -> AsyncIterator[Change]:
        where = f"watch workflows in {namespace or 'all namespaces'}"
        response = await _call(
            where,
            lambda: self._list(
                namespace,
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=int(self._watch_timeout),
                _preload_content=False,
                _request_timeout=self._watch_timeout + self._timeout,
            ),
        )
        try:
            buffer = b""
            while True:
                chunk = await _call(where, response.content.readany)
                if not chunk:
                    return  # the server ended the watch (timeoutSeconds)
                *lines, buffer = (buffer + chunk).split(b"\n")
                if len(buffer) > MAX_EVENT_BYTES:
                    raise SourceError(f"{where}: a watch event over {MAX_EVENT_BYTES} bytes")
                for line in lines:
                    if line.strip():
                        yield _change(line, where)
        finally:
            response.release()

    def _list(self, namespace: str | None, **options: Any) -> Awaitable[Any]:
        options.setdefault("_request_timeout", self._timeout)
        if namespace is None:
            return self._custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, label_selector=SELECTOR, **options
            )
        return self._custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, label_selector=SELECTOR, **options
        )


def _continued(token: str | None) -> dict[str, Any]:
    return {"_continue": token} if token else {}


def _change(line: bytes, where: str) -> Change:
    try:
        event = json.loads(line)
        kind, obj = str(event["type"]), event["object"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{where}: unreadable watch event: {line[:200]!r}") from exc
    if kind == "ERROR":
        code = obj.get("code") if isinstance(obj, dict) else None
        if code == 410:
            raise Gone(str(obj.get("message", "")))
        raise SourceError(f"{where}: the watch failed: {obj}")
    version = str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
    return Change(kind, obj, version)


async def _call(where: str, call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except ApiException as exc:
        if exc.status == 410:
            raise Gone(str(exc.reason)) from exc
        raise SourceError(f"{where}: {exc.status} {exc.reason}") from exc
    except TRANSPORT_ERRORS as exc:
        raise SourceError(f"{where}: {type(exc).__name__}: {exc}") from exc
