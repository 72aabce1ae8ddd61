"""`TemplateCatalog`: a watched, in-memory cache of the cluster's templates.

It keeps, per WorkflowTemplate and ClusterWorkflowTemplate, only what the checks use
(name, scope, and each workflow-level parameter: whether it has a default, its enum). It
is fed by list + watch through the shared `ApiClient`: each scope (a namespace, all
namespaces, or the cluster templates) lists, then watches from the list's
resourceVersion with `timeoutSeconds` so the stream cycles; a 410 Gone re-lists at once,
other failures back off (through the injected `sleep`) and resume from the last version.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import structlog
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from trigger.errors import ConfigError
from trigger.submit.templates.model import (
    MalformedTemplate,
    TemplateInfo,
    TemplateKey,
    parse_template,
)

GROUP: Final = "argoproj.io"
VERSION: Final = "v1alpha1"
NAMESPACED: Final = "workflowtemplates"
CLUSTER: Final = "clusterworkflowtemplates"
GONE: Final = 410
PAGE: Final = 500
_WATCH_ERRORS: Final = (ApiException, aiohttp.ClientError, asyncio.TimeoutError, OSError)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Backoff:
    """Waits between failed lists or watches: initial × factor^(n-1), at most `max` seconds."""

    initial: float = 1.0
    factor: float = 2.0
    max: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.max, self.initial * self.factor ** max(0, failures - 1)))


@dataclass(frozen=True)
class _Scope:
    """One list + watch stream: a namespace, all namespaces, or the cluster templates."""

    namespace: str | None  # None: all namespaces (or cluster-scoped)
    cluster_scope: bool

    @property
    def plural(self) -> str:
        return CLUSTER if self.cluster_scope else NAMESPACED

    def owns(self, key: TemplateKey) -> bool:
        if self.cluster_scope or key.cluster_scope:
            return self.cluster_scope == key.cluster_scope
        return self.namespace is None or key.namespace == self.namespace

    def __str__(self) -> str:
        if self.cluster_scope:
            return "ClusterWorkflowTemplates"
        return f"WorkflowTemplates in {self.namespace or 'all namespaces'}"


Subscriber = Callable[[TemplateKey], None]


class TemplateCatalog:
    """An in-memory, watched cache of WorkflowTemplates and ClusterWorkflowTemplates.

    `run()` is the long-lived task (its owner cancels it); `wait_synced()` returns once
    every scope has been listed. If a list keeps failing (no RBAC, no Argo CRDs) the
    catalog keeps retrying with backoff and never syncs: bound `wait_synced` with a timeout.
    """

    def __init__(
        self,
        api_client: client.ApiClient | None = None,
        *,
        configuration: client.Configuration | None = None,
        namespaces: Sequence[str] | None = None,
        cluster_templates: bool = True,
        watch_timeout: int = 300,
        request_timeout: float = 30.0,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        logger: Any = None,
    ) -> None:
        self._api_client = api_client
        self._configuration = configuration
        self.namespaces = None if namespaces is None else tuple(dict.fromkeys(namespaces))
        self.cluster_templates = cluster_templates
        self.watch_timeout = watch_timeout
        self.request_timeout = request_timeout
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._log = logger or structlog.get_logger("trigger.templates")
        self._templates: dict[TemplateKey, TemplateInfo] = {}
        self._subscribers: list[Subscriber] = []
        self._pending = set(self._scopes())
        self._synced = asyncio.Event()
        if not self._pending:
            self._synced.set()

    @classmethod
    def from_objects(cls, objects: Iterable[Any], *, logger: Any = None) -> TemplateCatalog:
        """A synced, offline catalog of template objects (tests, `trigger validate` files)."""
        catalog = cls(namespaces=(), cluster_templates=False, logger=logger)
        for obj in objects:
            with contextlib.suppress(MalformedTemplate):
                catalog._store(catalog._read(obj, None))
        return catalog

    # --- reading --------------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        """Return once every configured scope has been listed at least once."""
        await self._synced.wait()

    def get(self, namespace: str, name: str, cluster_scope: bool) -> TemplateInfo | None:
        """The template, or None; `namespace` is ignored for cluster-scoped templates."""
        return self._templates.get(TemplateKey.of(namespace, name, cluster_scope))

    def __len__(self) -> int:
        return len(self._templates)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(key)` whenever a template changes; returns the unsubscribe call."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    # --- running --------------------------------------------------------------------------

    async def run(self) -> None:
        """List, then watch every scope forever. Cancel the task to stop it."""
        async with self._client() as api, asyncio.TaskGroup() as group:
            for scope in self._scopes():
                group.create_task(self._follow(api, scope), name=f"templates: {scope}")

    async def load(self) -> None:
        """List every scope once (no watch); raises ConfigError when a list fails."""
        async with self._client() as api:
            for scope in self._scopes():
                try:
                    await self._relist(api, scope)
                except _WATCH_ERRORS as exc:
                    raise ConfigError(f"cannot list {scope}: {_describe(exc)}") from exc
                self._mark_synced(scope)

    @contextlib.asynccontextmanager
    async def _client(self) -> Any:
        if self._api_client is not None:
            yield client.CustomObjectsApi(self._api_client)
            return
        if self._configuration is None:
            raise ConfigError("template catalog: no ApiClient or Configuration to list with")
        async with client.ApiClient(self._configuration) as owned:
            yield client.CustomObjectsApi(owned)

    def _scopes(self) -> list[_Scope]:
        namespaces: Sequence[str | None] = (None,) if self.namespaces is None else self.namespaces
        scopes = [_Scope(namespace, False) for namespace in namespaces]
        return [*scopes, _Scope(None, True)] if self.cluster_templates else scopes

    async def _follow(self, api: Any, scope: _Scope) -> None:
        version: str | None = None
        failures = 0
        while True:
            try:
                if version is None:
                    version = await self._relist(api, scope)
                    self._mark_synced(scope)
                version = await self._watch(api, scope, version)
                failures = 0
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == GONE:
                    self._log.info("templates.expired", scope=str(scope))
                    version = None  # our resourceVersion is compacted away: list again
                    continue
                failures = await self._failed(scope, exc, failures)
            # The watch library raises bare Exception on a malformed stream line; a watcher
            # that dies would leave the cache stale for ever, so log, back off and resume.
            except Exception as exc:
                failures = await self._failed(scope, exc, failures)

    async def _failed(self, scope: _Scope, exc: BaseException, failures: int) -> int:
        failures += 1
        delay = self._backoff.delay(failures)
        self._log.warning(
            "templates.failed",
            scope=str(scope),
            error=_describe(exc),
            failures=failures,
            retry_in=delay,
        )
        await self._sleep(delay)
        return failures

    def _mark_synced(self, scope: _Scope) -> None:
        self._pending.discard(scope)
        if not self._pending:
            self._synced.set()

    async def _relist(self, api: Any, scope: _Scope) -> str:
        """Replace the scope's templates with a fresh list; returns its resourceVersion."""
        fresh: dict[TemplateKey, TemplateInfo] = {}
        token: str | None = None
        while True:
            page = await self._list_page(api, scope, token)
            for obj in page.get("items") or []:
                with contextlib.suppress(MalformedTemplate):
                    info = self._read(obj, scope.cluster_scope)
                    fresh[info.key] = info
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        gone = [k for k in self._templates if scope.owns(k) and k not in fresh]
        changed = [k for k, v in fresh.items() if self._templates.get(k) != v]
        for key in gone:
            del self._templates[key]
        self._templates.update(fresh)
        self._notify(*gone, *changed)
        return str(meta.get("resourceVersion") or "")

    async def _list_page(self, api: Any, scope: _Scope, token: str | None) -> dict[str, Any]:
        extra: dict[str, Any] = {"_continue": token} if token else {}
        page: dict[str, Any] = await self._call(
            api, scope, limit=PAGE, _request_timeout=self.request_timeout, **extra
        )
        return page

    def _call(self, api: Any, scope: _Scope, **kwargs: Any) -> Any:
        func, args = _lister(api, scope)
        return func(*args, **kwargs)

    async def _watch(self, api: Any, scope: _Scope, version: str) -> str:
        """Follow one watch stream until its timeout; returns the last resourceVersion."""
        func, args = _lister(api, scope)
        async with watch.Watch() as stream:
            events = stream.stream(
                func,
                *args,
                resource_version=version,
                timeout_seconds=self.watch_timeout,
                allow_watch_bookmarks=True,
                # The server ends the stream at timeout_seconds; this only catches a dead peer.
                _request_timeout=self.watch_timeout + self.request_timeout,
            )
            async for event in events:
                version = self._apply(scope, event.get("type"), event.get("raw_object")) or version
        return version

    def _apply(self, scope: _Scope, kind: Any, obj: Any) -> str | None:
        """Apply one watch event to the cache; returns its resourceVersion."""
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
        if kind == "DELETED":
            with contextlib.suppress(MalformedTemplate):
                key = self._read(obj, scope.cluster_scope).key
                self._templates.pop(key, None)
                self._notify(key)
        elif kind in ("ADDED", "MODIFIED"):
            try:
                self._store(self._read(obj, scope.cluster_scope))
            except MalformedTemplate as exc:
                # A template we cannot read no longer is what we held: forget the old entry.
                if exc.key is not None and self._templates.pop(exc.key, None) is not None:
                    self._notify(exc.key)
        return str(version) if version else None

    def _read(self, obj: Any, cluster_scope: bool | None) -> TemplateInfo:
        try:
            return parse_template(obj, cluster_scope=cluster_scope)
        except MalformedTemplate as exc:
            self._log.warning("templates.malformed", error=str(exc))
            raise

    def _store(self, info: TemplateInfo) -> None:
        self._templates[info.key] = info
        self._notify(info.key)

    def _notify(self, *keys: TemplateKey) -> None:
        for key in keys:
            for callback in list(self._subscribers):
                try:
                    callback(key)
                except Exception:  # one broken subscriber must not stop the watch
                    self._log.exception("templates.subscriber_failed", template=str(key))


def _lister(api: Any, scope: _Scope) -> tuple[Callable[..., Any], tuple[str, ...]]:
    """The list call for a scope and its positional arguments (a watch is a list call too)."""
    if scope.cluster_scope or scope.namespace is None:
        return api.list_cluster_custom_object, (GROUP, VERSION, scope.plural)
    return api.list_namespaced_custom_object, (GROUP, VERSION, scope.namespace, scope.plural)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status}: {exc.reason}"
    return str(exc) or type(exc).__name__
