"""A fake Argo Server (the Workflows REST API) for tests, served over real HTTP by aiohttp.

It answers the calls trigger's `argo-server` sink and rule validation make:
`POST /api/v1/workflows/{namespace}` (a `WorkflowCreateRequest`: `generateName`, uid,
creationTimestamp, resourceVersion, 409 on a duplicate name, 400 on a missing or invalid
name, `serverDryRun`), `GET` of one or all Workflows (`listOptions.labelSelector`),
WorkflowTemplates and ClusterWorkflowTemplates, and `GET /api/v1/version`. Failures are
grpc-gateway JSON bodies, `{"code": <grpc code>, "message": ...}`, with Argo's HTTP
statuses. Bearer tokens are checked (401), optionally restricted to namespaces (403).
Tests can seed templates and Workflows, inject failures for the next N matching requests
(before any state change, optionally with `Retry-After`), count requests, and serve TLS
with a throw-away CA (`tls=True`, then trust `ca_file`).

Known simplifications: no Workflow spec validation beyond the name (with
`check_template_refs`, a `workflowTemplateRef` must name a seeded template); an empty list
has `"items": null`, as Argo's encoder writes a nil slice.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import ssl
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from trigger.testing.kubeapi import ApiStatusError, parse_label_selector, selector_matches
from trigger.testing.pki import write_test_pki
from trigger.testing.served import Served

JSON = dict[str, Any]
Clock = Callable[[], datetime]
Handler = Callable[[web.Request], Awaitable[web.Response]]

API_VERSION: Final = "argoproj.io/v1alpha1"
ARGO_VERSION: Final = "v3.6.2"
_GRPC_CODES: Final = {
    400: 3,
    401: 16,
    403: 7,
    404: 5,
    409: 6,
    429: 8,
    500: 13,
    501: 12,
    503: 14,
    504: 4,
}
_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_MAX_NAME: Final = 63  # Argo refuses longer Workflow names, although Kubernetes allows 253
_SUFFIX_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generateName alphabet


class ArgoError(Exception):
    """A grpc-gateway error reply."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message, self.retry_after = status, message, retry_after

    def response(self) -> web.Response:
        body = {"code": _GRPC_CODES.get(self.status, 2), "message": self.message}
        response = web.json_response(body, status=self.status)
        if self.retry_after is not None:
            response.headers["Retry-After"] = f"{self.retry_after:g}"
        return response


@dataclass(frozen=True)
class ArgoRequest:
    """One request the fake answered, for test assertions."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    status: int


@dataclass
class _Injection:
    status: int
    remaining: int
    retry_after: float | None
    message: str
    method: str | None
    path: str | None

    def matches(self, method: str, path: str) -> bool:
        return self.method in (None, method) and (self.path is None or path.startswith(self.path))


def _system_clock() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_name(name: str) -> None:
    if len(name) > _MAX_NAME or not _NAME.fullmatch(name):
        raise ArgoError(
            400,
            f"workflow name {name!r} must be a lowercase RFC 1123 subdomain of at most "
            f"{_MAX_NAME} characters",
        )


# --- the fake ---------------------------------------------------------------------------------


class ArgoServerFake(Served):
    """An in-memory Argo Server on a loopback port.

    `token` is the bearer token accepted in every namespace (None: no authentication, as
    `--auth-mode=server`); `tokens` maps further tokens to the namespaces they may use.
    `namespaces` lists the namespaces that exist (None: any).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        namespaces: Iterable[str] | None = None,
        tokens: Mapping[str, Collection[str]] | None = None,
        check_template_refs: bool = False,
        tls: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = _system_clock,
        max_object_bytes: int | None = 1536 * 1024,
    ) -> None:
        self.max_object_bytes = max_object_bytes  # etcd's limit, as the cluster behind has it
        self._grants: dict[str, Collection[str] | None] = dict(tokens or {})
        if token is not None:
            self._grants[token] = None
        self._auth = token is not None or bool(tokens)
        self._namespaces = None if namespaces is None else frozenset(namespaces)
        self._check_refs = check_template_refs
        self._tls, self._host, self._port, self._clock = tls, host, port, clock
        self._workflows: dict[tuple[str, str], JSON] = {}
        self._templates: dict[tuple[str, str], JSON] = {}
        self._cluster_templates: dict[str, JSON] = {}
        self._injections: list[_Injection] = []
        self._requests: list[ArgoRequest] = []
        self._resource_version = 0
        self._runner: web.AppRunner | None = None
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._url: str | None = None
        self._ca_file: str | None = None

    # --- lifecycle

    @property
    def url(self) -> str:
        """`http(s)://127.0.0.1:PORT`, the Argo Server base URL."""
        if self._url is None:
            raise RuntimeError("the Argo Server fake is not started")
        return self._url

    @property
    def ca_file(self) -> str:
        """PEM file of the CA that signed the server certificate (only with `tls=True`)."""
        if self._ca_file is None:
            raise RuntimeError("the Argo Server fake is not serving TLS")
        return self._ca_file

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        context = self._ssl_context() if self._tls else None
        await web.TCPSite(self._runner, self._host, self._port, ssl_context=context).start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"{'https' if self._tls else 'http'}://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def _ssl_context(self) -> ssl.SSLContext:
        self._tempdir = tempfile.TemporaryDirectory(prefix="argo-fake-")
        ca, cert, key = write_test_pki(Path(self._tempdir.name), self._clock())
        self._ca_file = str(ca)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context

    def _app(self) -> web.Application:
        app = web.Application()
        routes = [
            ("POST", "/api/v1/workflows/{namespace}", self._create),
            ("GET", "/api/v1/workflows/{namespace}", self._list_workflows),
            ("GET", "/api/v1/workflows/{namespace}/{name}", self._get_workflow),
            ("DELETE", "/api/v1/workflows/{namespace}/{name}", self._delete_workflow),
            ("GET", "/api/v1/workflow-templates/{namespace}", self._list_templates),
            ("GET", "/api/v1/workflow-templates/{namespace}/{name}", self._get_template),
            ("GET", "/api/v1/cluster-workflow-templates", self._list_cluster_templates),
            ("GET", "/api/v1/cluster-workflow-templates/{name}", self._get_cluster_template),
            ("GET", "/api/v1/version", self._version),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, self._guard(handler))
        app.router.add_route("*", "/{tail:.*}", self._guard(self._not_found))
        return app

    # --- seeding and inspection

    def add_template(self, template: JSON) -> None:
        """Seed a WorkflowTemplate (needs metadata.namespace) or a ClusterWorkflowTemplate."""
        stored = self._stamp(copy.deepcopy(template), template.get("kind", "WorkflowTemplate"))
        meta = stored["metadata"]
        if stored["kind"] == "ClusterWorkflowTemplate":
            self._cluster_templates[meta["name"]] = stored
        else:
            self._templates[(meta["namespace"], meta["name"])] = stored

    def add_workflow(self, workflow: JSON) -> JSON:
        """Seed a Workflow as if created earlier (needs metadata.name and .namespace)."""
        stored = self._stamp(copy.deepcopy(workflow), "Workflow")
        meta = stored["metadata"]
        self._workflows[(meta["namespace"], meta["name"])] = stored
        return copy.deepcopy(stored)

    def set_phase(self, namespace: str, name: str, phase: str) -> None:
        """Set `status.phase`, as the workflow controller would."""
        self._workflows[(namespace, name)].setdefault("status", {})["phase"] = phase

    def workflows(self, namespace: str | None = None) -> list[JSON]:
        """Stored Workflows in creation order (copies), optionally of one namespace."""
        return [
            copy.deepcopy(wf) for (ns, _), wf in self._workflows.items() if namespace in (None, ns)
        ]

    def inject(
        self,
        status: int,
        *,
        count: int = 1,
        retry_after: float | None = None,
        method: str | None = None,
        path: str | None = None,
        message: str = "injected failure",
    ) -> None:
        """Fail the next `count` requests matching `method` and the `path` prefix."""
        self._injections.append(_Injection(status, count, retry_after, message, method, path))

    @property
    def requests(self) -> list[ArgoRequest]:
        return list(self._requests)

    def count(
        self, *, method: str | None = None, path: str | None = None, status: int | None = None
    ) -> int:
        """How many logged requests match the method, the path prefix and the status."""
        return sum(
            method in (None, r.method)
            and (path is None or r.path.startswith(path))
            and status in (None, r.status)
            for r in self._requests
        )

    # --- plumbing

    def _stamp(self, obj: JSON, kind: str) -> JSON:
        self._resource_version += 1
        obj.setdefault("apiVersion", API_VERSION)
        obj.setdefault("kind", kind)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _timestamp(self._clock()))
        meta["resourceVersion"] = str(self._resource_version)
        meta.setdefault("generation", 1)
        return obj

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.Response:
            body = None
            try:
                body = await _body(request)
                self._check_injection(request)
                self._authorize(request)
                response = await handler(request)
            except ArgoError as error:
                response = error.response()
            record = ArgoRequest(
                request.method, request.path, dict(request.headers), body, response.status
            )
            self._requests.append(record)
            return response

        return guarded

    def _check_injection(self, request: web.Request) -> None:
        for injection in self._injections:
            if injection.remaining > 0 and injection.matches(request.method, request.path):
                injection.remaining -= 1
                raise ArgoError(
                    injection.status, injection.message, retry_after=injection.retry_after
                )

    def _authorize(self, request: web.Request) -> None:
        if not self._auth:
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or token not in self._grants:
            raise ArgoError(
                401, "token not valid. see https://argo-workflows.readthedocs.io/en/latest/faq/"
            )
        allowed = self._grants[token]
        namespace = request.match_info.get("namespace")
        if allowed is not None and namespace is not None and namespace not in allowed:
            raise ArgoError(
                403,
                f'workflows.argoproj.io is forbidden: User "system:serviceaccount:argo:client" '
                f'cannot {request.method.lower()} resource "workflows" in API group '
                f'"argoproj.io" in the namespace "{namespace}"',
            )

    def _namespace(self, request: web.Request) -> str:
        namespace = request.match_info["namespace"]
        if self._namespaces is not None and namespace not in self._namespaces:
            raise ArgoError(404, f'namespaces "{namespace}" not found')
        return namespace

    # --- handlers

    async def _create(self, request: web.Request) -> web.Response:
        namespace = self._namespace(request)
        body = await _body(request)
        workflow = body.get("workflow") if isinstance(body, dict) else None
        if not isinstance(workflow, dict):
            raise ArgoError(400, "workflow is required")
        workflow = copy.deepcopy(workflow)
        meta = workflow.setdefault("metadata", {})
        if meta.setdefault("namespace", namespace) != namespace:
            raise ArgoError(
                400,
                "the namespace of the provided object does not match the "
                "namespace sent on the request",
            )
        meta["name"] = self._name_for(meta)
        _check_name(meta["name"])
        if (namespace, meta["name"]) in self._workflows:
            raise ArgoError(409, f'workflows.argoproj.io "{meta["name"]}" already exists')
        self._check_template_ref(namespace, workflow)
        created = self._stamp(workflow, "Workflow")
        limit = self.max_object_bytes
        if limit is not None and len(json.dumps(created, separators=(",", ":"))) > limit:
            # What Argo Server passes on from the API server when etcd refuses the object.
            raise ArgoError(500, "etcdserver: request is too large")
        if not body.get("serverDryRun"):
            self._workflows[(namespace, meta["name"])] = created
        return web.json_response(created)

    def _name_for(self, meta: JSON) -> str:
        if meta.get("name"):
            return str(meta["name"])
        if meta.get("generateName"):
            while True:
                suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
                name = f"{meta['generateName']}{suffix}"
                if not any(key[1] == name for key in self._workflows):
                    return name
        raise ArgoError(
            400,
            'Workflow.argoproj.io "" is invalid: metadata.name: Required value: '
            "name or generateName is required",
        )

    def _check_template_ref(self, namespace: str, workflow: JSON) -> None:
        ref = (workflow.get("spec") or {}).get("workflowTemplateRef")
        if not self._check_refs or not ref:
            return
        name = ref.get("name", "")
        if ref.get("clusterScope"):
            if name not in self._cluster_templates:
                raise ArgoError(400, f'clusterworkflowtemplates.argoproj.io "{name}" not found')
        elif (namespace, name) not in self._templates:
            raise ArgoError(400, f'workflowtemplates.argoproj.io "{name}" not found')

    async def _get_workflow(self, request: web.Request) -> web.Response:
        key = (self._namespace(request), request.match_info["name"])
        if key not in self._workflows:
            raise ArgoError(404, f'workflows.argoproj.io "{key[1]}" not found')
        return web.json_response(self._workflows[key])

    async def _delete_workflow(self, request: web.Request) -> web.Response:
        key = (self._namespace(request), request.match_info["name"])
        if self._workflows.pop(key, None) is None:
            raise ArgoError(404, f'workflows.argoproj.io "{key[1]}" not found')
        return web.json_response({})

    async def _list_workflows(self, request: web.Request) -> web.Response:
        namespace = self._namespace(request)
        items = [wf for (ns, _), wf in self._workflows.items() if ns == namespace]
        return self._list(request, items)

    async def _list_templates(self, request: web.Request) -> web.Response:
        namespace = self._namespace(request)
        items = [t for (ns, _), t in self._templates.items() if ns == namespace]
        return self._list(request, items)

    async def _get_template(self, request: web.Request) -> web.Response:
        key = (self._namespace(request), request.match_info["name"])
        if key not in self._templates:
            raise ArgoError(404, f'workflowtemplates.argoproj.io "{key[1]}" not found')
        return web.json_response(self._templates[key])

    async def _list_cluster_templates(self, request: web.Request) -> web.Response:
        return self._list(request, list(self._cluster_templates.values()))

    async def _get_cluster_template(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._cluster_templates:
            raise ArgoError(404, f'clusterworkflowtemplates.argoproj.io "{name}" not found')
        return web.json_response(self._cluster_templates[name])

    def _list(self, request: web.Request, items: list[JSON]) -> web.Response:
        try:
            selector = parse_label_selector(request.query.get("listOptions.labelSelector", ""))
        except ApiStatusError as error:
            raise ArgoError(400, str(error)) from error
        matched = [
            obj for obj in items if selector_matches(selector, obj["metadata"].get("labels") or {})
        ]
        metadata = {"resourceVersion": str(self._resource_version)}
        return web.json_response({"metadata": metadata, "items": matched or None})

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "version": ARGO_VERSION,
                "buildDate": "2024-01-01T00:00:00Z",
                "gitCommit": "0" * 40,
                "gitTag": ARGO_VERSION,
                "gitTreeState": "clean",
                "goVersion": "go1.23.1",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    async def _not_found(self, request: web.Request) -> web.Response:
        raise ArgoError(404, "Not Found")


async def _body(request: web.Request) -> Any:
    if not request.body_exists:
        return None
    text = await request.text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ArgoError(400, f"invalid JSON body: {error}") from error
