"""WorkflowTemplate awareness: a watched cache of templates, and the checks rules need.

`TemplateCatalog` keeps, per WorkflowTemplate and ClusterWorkflowTemplate, only what the
checks use (name, scope, and each workflow-level parameter: whether it has a default, its
enum). It is fed by list + watch through the shared `ApiClient`: each scope (a namespace,
all namespaces, or the cluster templates) lists, then watches from the list's
resourceVersion with `timeoutSeconds` so the stream cycles; a 410 Gone re-lists at once,
other failures back off (through the injected `sleep`) and resume from the last version.

`check_rules` (load time, pure) and `check_rendered` (submit time, pure) compare rules and
rendered Workflows with a catalog; `locate` gives a `TemplateProblem` its file:line:column,
and `validate_against_cluster` is the one-shot list + check behind `trigger validate
--cluster`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, Final, Literal, NamedTuple, Protocol

import aiohttp
import structlog
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from trigger.errors import ConfigError, Problem, TemporarySubmitError
from trigger.rules.router import RuleSet
from trigger.rules.rule import Rule
from trigger.rules.yamldoc import Document, Path, YamlProblem, read_documents

GROUP: Final = "argoproj.io"
VERSION: Final = "v1alpha1"
NAMESPACED: Final = "workflowtemplates"
CLUSTER: Final = "clusterworkflowtemplates"
GONE: Final = 410
PAGE: Final = 500
TEMPLATE_MISSING_GRACE: Final = 300.0
"""Seconds a submitter should keep retrying `TemplateMissing` before dead-lettering."""
_WATCH_ERRORS: Final = (ApiException, aiohttp.ClientError, asyncio.TimeoutError, OSError)

Severity = Literal["error", "warning"]
Sleep = Callable[[float], Awaitable[None]]


class TemplateKey(NamedTuple):
    """Identity of a template; `namespace` is "" for a ClusterWorkflowTemplate."""

    namespace: str
    name: str
    cluster_scope: bool

    @classmethod
    def of(cls, namespace: str | None, name: str, cluster_scope: bool) -> TemplateKey:
        return cls("" if cluster_scope else namespace or "", name, cluster_scope)

    def __str__(self) -> str:
        if self.cluster_scope:
            return f"ClusterWorkflowTemplate {self.name}"
        return f"WorkflowTemplate {self.namespace}/{self.name}"


@dataclass(frozen=True)
class TemplateParameter:
    """One of a template's `spec.arguments.parameters`."""

    name: str
    has_default: bool  # `value`, `default` or `valueFrom`: a Workflow need not supply it
    enum: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TemplateInfo:
    """What the checks need to know about one template."""

    name: str
    namespace: str  # "" when cluster-scoped
    cluster_scope: bool
    parameters: tuple[TemplateParameter, ...] = ()

    @property
    def key(self) -> TemplateKey:
        return TemplateKey.of(self.namespace, self.name, self.cluster_scope)

    def parameter(self, name: str) -> TemplateParameter | None:
        return next((p for p in self.parameters if p.name == name), None)


class MalformedTemplate(ValueError):
    """A template object the catalog cannot read; `key` is set when its name is known."""

    def __init__(self, message: str, key: TemplateKey | None = None) -> None:
        super().__init__(message)
        self.key = key


def parse_template(obj: Any, *, cluster_scope: bool | None = None) -> TemplateInfo:
    """Read a (Cluster)WorkflowTemplate object; raises MalformedTemplate.

    `cluster_scope` None takes the scope from the object's `kind`.
    """
    if not isinstance(obj, Mapping):
        raise MalformedTemplate("not an object")
    if cluster_scope is None:
        cluster_scope = obj.get("kind") == "ClusterWorkflowTemplate"
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        raise MalformedTemplate("metadata.name is missing")
    if not cluster_scope and (not isinstance(namespace, str) or not namespace):
        raise MalformedTemplate(f"template {name}: metadata.namespace is missing")
    key = TemplateKey.of(namespace, name, cluster_scope)
    try:
        parameters = _parameters(obj.get("spec"))
    except MalformedTemplate as exc:
        raise MalformedTemplate(f"{key}: {exc}", key) from exc
    return TemplateInfo(name, key.namespace, cluster_scope, parameters)


def _parameters(spec: Any) -> tuple[TemplateParameter, ...]:
    spec = {} if spec is None else spec
    if not isinstance(spec, Mapping):
        raise MalformedTemplate("spec is not an object")
    arguments = spec.get("arguments") or {}
    raw = arguments.get("parameters") if isinstance(arguments, Mapping) else None
    if not isinstance(arguments, Mapping) or not isinstance(raw or [], list):
        raise MalformedTemplate("spec.arguments.parameters is not a list")
    return tuple(_parameter(i, item) for i, item in enumerate(raw or []))


def _parameter(index: int, item: Any) -> TemplateParameter:
    where = f"spec.arguments.parameters[{index}]"
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
        raise MalformedTemplate(f"{where} has no name")
    enum = item.get("enum")
    if enum is not None and not (
        isinstance(enum, list) and all(_text(v) is not None for v in enum)
    ):
        raise MalformedTemplate(f"{where}.enum is not a list of scalars")
    has_default = any(item.get(k) is not None for k in ("value", "default", "valueFrom"))
    values = None if enum is None else tuple(str(_text(v)) for v in enum)
    return TemplateParameter(item["name"], has_default, values)


def _text(value: Any) -> str | None:
    """Argo's enum values are strings; YAML numbers and booleans are written as YAML would."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return None


class TemplateLookup(Protocol):
    """What the checks need from a catalog."""

    @property
    def synced(self) -> bool: ...

    def get(self, namespace: str, name: str, cluster_scope: bool) -> TemplateInfo | None: ...


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


# --- checks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateProblem:
    """A rule that does not fit its template; `field` is dotted under `spec`."""

    rule: str
    file: str
    index: int
    field: str  # "workflow.template", "workflow.parameters" or "workflow.parameters.<name>"
    message: str
    severity: Severity = "error"


class TemplateMissing(TemporarySubmitError):
    """The Workflow's template is not (yet) in the catalog.

    Temporary because templates and rules are often deployed together and the template
    may arrive a little later. The submitter should retry it for a bounded grace period
    (configurable, default `TEMPLATE_MISSING_GRACE`, 5 minutes) counted from the first
    attempt, and then dead-letter the event, so a rule whose template never comes does
    not hold its source for ever.
    """

    def __init__(self, key: TemplateKey) -> None:
        super().__init__(f"{key} not found")
        self.key = key


def check_rules(rules: RuleSet | Iterable[Rule], catalog: TemplateLookup) -> list[TemplateProblem]:
    """Every problem between the rules and the templates they instantiate."""
    found: list[TemplateProblem] = []
    for rule in rules.rules if isinstance(rules, RuleSet) else rules:
        found.extend(check_rule(rule, catalog))
    return found


def check_rule(rule: Rule, catalog: TemplateLookup) -> list[TemplateProblem]:
    workflow = rule.workflow
    key = TemplateKey.of(workflow.namespace, workflow.template, workflow.clusterScope)
    info = catalog.get(key.namespace, key.name, key.cluster_scope)

    def problem(where: str, message: str, severity: Severity = "error") -> TemplateProblem:
        return TemplateProblem(rule.name, rule.file, rule.index, where, message, severity)

    if info is None:
        return [problem("workflow.template", f"{key} not found")]
    supplied = dict(rule.parameters)
    found: list[TemplateProblem] = []
    missing = [p.name for p in info.parameters if not p.has_default and p.name not in supplied]
    if missing:
        found.append(
            problem(
                "workflow.parameters",
                f"workflow.parameters: missing "
                f"{', '.join(missing)}, required by {key} (no default)",
            )
        )
    for name, template in rule.parameters:
        where = f"workflow.parameters.{name}"
        declared = info.parameter(name)
        if declared is None:
            found.append(
                problem(where, f"{where}: {key} declares no parameter {name!r}", "warning")
            )
        elif declared.enum is not None and template.is_literal:
            refused = _refused(declared, template.render({}), key)
            if refused:
                found.append(problem(where, f"{where}: {refused}"))
    return found


def _refused(parameter: TemplateParameter, value: str, key: TemplateKey) -> str | None:
    if parameter.enum is None or value in parameter.enum:
        return None
    allowed = ", ".join(parameter.enum)
    return f"{value!r} is not allowed by {key} (enum: {allowed})"


def check_rendered(workflow: Mapping[str, Any], catalog: TemplateLookup) -> str | None:
    """Why a rendered Workflow's parameters break its template's enums, or None.

    Raises `TemplateMissing` when the catalog is synced and the template is not in it;
    answers None while the catalog is not synced (the cache must not hold submissions up).
    """
    spec = workflow.get("spec") or {}
    ref = spec.get("workflowTemplateRef") or {}
    if not ref.get("name") or not catalog.synced:
        return None
    namespace = (workflow.get("metadata") or {}).get("namespace") or "default"
    key = TemplateKey.of(namespace, ref["name"], bool(ref.get("clusterScope")))
    info = catalog.get(key.namespace, key.name, key.cluster_scope)
    if info is None:
        raise TemplateMissing(key)
    refusals: list[str] = []
    for given in (spec.get("arguments") or {}).get("parameters") or []:
        name, value = str(given.get("name")), _text(given.get("value"))
        declared = info.parameter(name)
        refused = None if declared is None or value is None else _refused(declared, value, key)
        if refused:
            refusals.append(f"parameter {name}: {refused}")
    return "; ".join(refusals) or None


# --- locating and validating -----------------------------------------------------------------

_FILE_UNREADABLE: Final = ()
Documents = dict[str, tuple[Document, ...]]


def _documents(file: str, cache: Documents) -> tuple[Document, ...]:
    if file not in cache:
        try:
            text = FsPath(file).read_text(encoding="utf-8")
            cache[file] = tuple(read_documents(text))
        except (OSError, UnicodeDecodeError, YamlProblem):
            cache[file] = _FILE_UNREADABLE  # the file changed since it was loaded
    return cache[file]


def _path(where: str) -> tuple[Path, bool]:
    """The document path of a problem's field, and whether to point at the key."""
    prefix = "workflow.parameters."
    if where.startswith(prefix):
        return ("spec", "workflow", "parameters", where[len(prefix) :]), False
    if where == "workflow.parameters":
        return ("spec", "workflow", "parameters"), True
    return ("spec", *where.split(".")), False


def locate(
    problem: TemplateProblem, rules: RuleSet | None = None, *, documents: Documents | None = None
) -> Problem:
    """The problem as a `file:line:column` Problem; warnings start with "warning: ".

    The rule file is read again (positions are only kept while loading); pass one
    `documents` dict to read each file once for many problems.
    """
    rule = rules.by_name.get(problem.rule) if rules is not None else None
    file, index = (rule.file, rule.index) if rule is not None else (problem.file, problem.index)
    line, column = 1, 1
    doc = next(
        (d for d in _documents(file, {} if documents is None else documents) if d.index == index),
        None,
    )
    if doc is not None:
        path, key = _path(problem.field)
        line, column = doc.where(path, key=key)
    prefix = "warning: " if problem.severity == "warning" else ""
    return Problem(file, line, column, problem.rule, prefix + problem.message)


async def validate_against_cluster(
    rules: RuleSet, api_client: client.ApiClient, *, namespaces: Sequence[str] | None = None
) -> list[Problem]:
    """List the templates once and check every rule against them.

    `namespaces` None lists only the namespaces the rules name (least privilege); cluster
    templates are listed only when a rule uses one. Raises ConfigError when a list fails.
    """
    if namespaces is None:
        namespaces = sorted(
            {r.workflow.namespace for r in rules.rules if not r.workflow.clusterScope}
        )
    catalog = TemplateCatalog(
        api_client,
        namespaces=namespaces,
        cluster_templates=any(r.workflow.clusterScope for r in rules.rules),
    )
    await catalog.load()
    documents: Documents = {}
    return [locate(p, rules, documents=documents) for p in check_rules(rules, catalog)]


__all__ = [
    "TEMPLATE_MISSING_GRACE",
    "Backoff",
    "MalformedTemplate",
    "TemplateCatalog",
    "TemplateInfo",
    "TemplateKey",
    "TemplateLookup",
    "TemplateMissing",
    "TemplateParameter",
    "TemplateProblem",
    "check_rendered",
    "check_rule",
    "check_rules",
    "locate",
    "parse_template",
    "validate_against_cluster",
]
