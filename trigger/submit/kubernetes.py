"""The Kubernetes sink: creates Workflows as custom objects through the API server.

One `ApiClient` (one aiohttp connection pool) serves every call, and is exposed as
`api_client` so the template cache, leases and ConfigMap state share the connection.
Credentials come from an explicit server + token, the in-cluster service account, or a
kubeconfig. Every request has a timeout and, when a `qps` is set, passes a client-side
token bucket (client-go's qps/burst) — a hard ceiling; how fast creates go below it is
the flow controller's call (trigger.submit.flow). `ApiException` and aiohttp's errors are
mapped onto trigger's error tree here and never leak inward.

Creates, the one call made per Workflow, go straight to the client's REST layer (its
session, TLS, proxy and auth, a rotating token included) instead of through the
generated `CustomObjectsApi`: its per-call argument checks, the recursive sanitising of
a body that is plain JSON already and the generic deserialising of the answer were a
fifth of the client's CPU per create. The other calls are rare and keep the generated API.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.kube_config import (
    KUBE_CONFIG_DEFAULT_LOCATION,
    KubeConfigLoader,
    KubeConfigMerger,
)

from trigger.clock import Clock, SystemClock
from trigger.errors import AlreadyExists, ConfigError, PermanentSubmitError, SubmitError
from trigger.submit.base import Created, conflict, identity
from trigger.submit.ratelimit import TokenBucket
from trigger.submit.transport import (
    TRANSPORT_ERRORS,
    TokenFile,
    parse_retry_after,
    status_error,
    transport_error,
)

GROUP: Final = "argoproj.io"
VERSION: Final = "v1alpha1"
PLURAL: Final = "workflows"
MERGE_PATCH: Final = "application/merge-patch+json"
SERVICE_ACCOUNT: Final = "/var/run/secrets/kubernetes.io/serviceaccount"
PAGE: Final = 500
JSON_HEADERS: Final = {"Accept": "application/json", "Content-Type": "application/json"}
AUTH_SETTINGS: Final = ["BearerToken"]  # what the generated API asks for on every call
T = TypeVar("T")


@dataclass(frozen=True)
class KubernetesOptions:
    """How to reach the API server. Unset credentials fall back to in-cluster or kubeconfig."""

    kubeconfig: str | None = None
    """Kubeconfig path (or `:`-separated list); default `$KUBECONFIG` or ~/.kube/config."""
    context: str | None = None
    """Kubeconfig context; default the file's current-context."""
    in_cluster: bool | None = None
    """True: the pod's service account; None: in-cluster when KUBERNETES_SERVICE_HOST is set."""
    server: str | None = None
    """Explicit API server URL; wins over in-cluster and kubeconfig."""
    token: str | None = None
    """Bearer token for `server`."""
    token_file: str | None = None
    """File holding the bearer token for `server`; re-read when it changes (rotation)."""
    ca_file: str | None = None
    """CA bundle that signs the API server's certificate (PEM), for `server`."""
    insecure_skip_tls_verify: bool = False
    """Do not verify the API server's certificate (test clusters only)."""
    qps: float = 0
    """Client-side request rate ceiling, requests per second; 0: none."""
    burst: int = 100
    """Requests allowed at once above `qps` after an idle period."""
    timeout: float = 10
    """Per-request timeout, seconds (connect, send and read the whole answer)."""
    connection_pool: int = 64
    """Maximum concurrent connections to the API server."""
    check_namespace: str | None = None
    """When set, `check()` lists Workflows there (proves RBAC and the CRD), else GET /version."""
    trust_env: bool = False
    """Read proxy variables and ~/.netrc from the environment on every request (slow)."""


def _message(exc: ApiException) -> str:
    """The API server's Status `message`, or the raw body when it is not a Status."""
    raw: bytes | str | None = exc.body
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw or ""
    try:
        status = json.loads(text) if text else None
    except ValueError:
        return text[:500]
    message = status.get("message") if isinstance(status, dict) else None
    return message if isinstance(message, str) else str(exc.reason or "")


def _retry_after(exc: ApiException, now: datetime) -> float | None:
    header = exc.headers.get("Retry-After") if exc.headers else None
    found = parse_retry_after(header, now)
    if found is not None:
        return found
    try:  # the server also says it in the Status details of a 429
        details = json.loads(exc.body or b"{}").get("details") or {}
        seconds = details.get("retryAfterSeconds")
    except (TypeError, ValueError, AttributeError):
        return None
    return float(seconds) if isinstance(seconds, int | float) else None


def _api_error(exc: ApiException, now: datetime, *, creating: bool) -> Exception:
    status = int(exc.status or 0)
    if status == 0:  # the client refused to build the request
        return PermanentSubmitError(str(exc.reason))
    return status_error(
        status, _message(exc), retry_after=_retry_after(exc, now), creating=creating
    )


def _read_kubeconfig(path: str | None) -> KubeConfigMerger:
    paths = path or KUBE_CONFIG_DEFAULT_LOCATION
    merged = KubeConfigMerger(paths)
    if merged.config is None:
        raise ConfigError(f"no kubeconfig found at {paths}")
    return merged


async def _kubeconfig(options: KubernetesOptions, config: client.Configuration) -> None:
    merged = await asyncio.to_thread(_read_kubeconfig, options.kubeconfig)  # file I/O
    loader = KubeConfigLoader(
        config_dict=merged.config, config_base_path=None, active_context=options.context
    )
    await loader.load_and_set(config)


def _in_cluster_options(options: KubernetesOptions) -> KubernetesOptions:
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ConfigError("in_cluster is set but KUBERNETES_SERVICE_HOST is not")
    host = f"[{host}]" if ":" in host else host
    return KubernetesOptions(
        server=f"https://{host}:{port}",
        token_file=f"{SERVICE_ACCOUNT}/token",
        ca_file=options.ca_file or f"{SERVICE_ACCOUNT}/ca.crt",
        qps=options.qps,
        burst=options.burst,
        timeout=options.timeout,
        connection_pool=options.connection_pool,
        check_namespace=options.check_namespace,
    )


async def _explicit(
    options: KubernetesOptions, config: client.Configuration, clock: Clock | None
) -> None:
    config.host = (options.server or "").rstrip("/")
    config.ssl_ca_cert = options.ca_file
    config.verify_ssl = not options.insecure_skip_tls_verify
    config.api_key_prefix = {"BearerToken": "Bearer"}
    if options.token:
        config.api_key = {"BearerToken": options.token}
    elif options.token_file:
        tokens = TokenFile(options.token_file, clock=clock)
        # The client only asks the hook when a token is already set: read it once now.
        config.api_key = {"BearerToken": await tokens.read()}

        async def refresh(configuration: client.Configuration) -> None:
            configuration.api_key = {"BearerToken": await tokens.read()}

        config.refresh_api_key_hook = refresh


async def load_configuration(
    options: KubernetesOptions, *, clock: Clock | None = None
) -> client.Configuration:
    """Build the client configuration: explicit server, in-cluster, or kubeconfig."""
    config = client.Configuration()
    in_cluster = options.in_cluster
    if in_cluster is None:
        in_cluster = options.server is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    try:
        if options.server is not None:
            await _explicit(options, config, clock)
        elif in_cluster:
            await _explicit(_in_cluster_options(options), config, clock)
        else:
            await _kubeconfig(options, config)
    except (ConfigException, OSError, ValueError) as exc:
        raise ConfigError(f"kubernetes sink: {exc}") from exc
    config.connection_pool_maxsize = options.connection_pool
    return config


class KubernetesSink:
    """Creates, reads, lists and stops Workflows through the Kubernetes API."""

    kind = "kubernetes"

    def __init__(
        self,
        api_client: client.ApiClient,
        options: KubernetesOptions,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.api_client = api_client
        self.options = options
        self._custom = client.CustomObjectsApi(api_client)
        self._clock = clock or SystemClock()
        self._throttle = (
            TokenBucket(options.qps, options.burst, self._clock) if options.qps > 0 else None
        )
        self._timeout = aiohttp.ClientTimeout(total=options.timeout)
        self._paths: dict[str, str] = {}  # namespace → its Workflows' collection path
        self._closed = False

    @classmethod
    async def connect(
        cls, options: KubernetesOptions | None = None, *, clock: Clock | None = None
    ) -> KubernetesSink:
        """Load the configuration and open the one client every call reuses."""
        options = options or KubernetesOptions()
        config = await load_configuration(options, clock=clock)
        api_client = client.ApiClient(config)
        if not options.trust_env:
            # kubernetes_asyncio opens its session with trust_env=True, so every request
            # re-reads ~/.netrc and the proxy variables in worker threads — a fifth of the
            # daemon's CPU under load. Proxies come from the kubeconfig (proxy-url) instead.
            api_client.rest_client.pool_manager._trust_env = False
        return cls(api_client, options, clock=clock)

    async def _call(
        self, what: str, call: Callable[[], Awaitable[T]], *, creating: bool = False
    ) -> T:
        if self._throttle is not None:
            await self._throttle.acquire()
        try:
            return await call()
        except ApiException as exc:
            raise _api_error(exc, self._clock.now(), creating=creating) from exc
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc, what) from exc

    async def create(self, workflow: Mapping[str, Any]) -> Created:
        """POST the Workflow under its own (deterministic) name; on 409, read the stored one
        to tell a redelivery (AlreadyExists) from a collision (NameTaken)."""
        body, namespace, name = _prepare(workflow)
        if self._throttle is not None:
            await self._throttle.acquire()
        try:
            created = await self._post(self._collection(namespace), body)
        except ApiException as exc:
            error = _api_error(exc, self._clock.now(), creating=True)
            if not isinstance(error, AlreadyExists):
                raise error from exc
            existing = await self.get_workflow(namespace, name)
            raise conflict(existing, workflow, f"workflow {namespace}/{name}") from None
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc, f"create workflow {namespace}/{name}") from exc
        meta = created.get("metadata", {}) if isinstance(created, dict) else {}
        return Created(name=meta.get("name", name), namespace=namespace, uid=meta.get("uid"))

    async def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST `body` as JSON through the client's REST layer and auth; the decoded
        answer, or ApiException for a status outside 2xx (as the generated API raises)."""
        api = self.api_client
        headers = {**JSON_HEADERS, **api.default_headers}
        if api.cookie:
            headers["Cookie"] = api.cookie
        await api.update_params_for_auth(headers, [], AUTH_SETTINGS)
        response = await api.rest_client.request(
            "POST",
            f"{api.configuration.host}{path}",
            headers=headers,
            body=body,
            _preload_content=False,
            _request_timeout=self._timeout,
        )
        try:
            data = await response.read()
        finally:
            response.release()
        if not 200 <= response.status <= 299:  # what the REST layer's preloading raises
            error = ApiException(status=response.status, reason=response.reason)
            error.body, error.headers = data, response.headers
            raise error
        try:
            return json.loads(data)
        except ValueError:  # not JSON: the generated API hands back the text
            return data.decode("utf-8", "replace")

    def _collection(self, namespace: str) -> str:
        """`/apis/argoproj.io/v1alpha1/namespaces/NS/workflows`, quoted as the client does."""
        path = self._paths.get(namespace)
        if path is None:
            safe = self.api_client.configuration.safe_chars_for_path_param
            path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace, safe=safe)}/{PLURAL}"
            self._paths[namespace] = path
        return path

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored Workflow, or None when there is none by that name."""
        try:
            found: dict[str, Any] = await self._call(
                f"get workflow {namespace}/{name}",
                lambda: self._custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _request_timeout=self.options.timeout
                ),
            )
        except SubmitError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    async def list_workflows(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Every Workflow in the namespace whose labels match, following continue tokens."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self._list_page(namespace, label_selector, token)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    async def _list_page(
        self, namespace: str, label_selector: str, token: str | None
    ) -> dict[str, Any]:
        extra: dict[str, Any] = {"_continue": token} if token else {}
        page: dict[str, Any] = await self._call(
            f"list workflows in {namespace}",
            lambda: self._custom.list_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                label_selector=label_selector,
                limit=PAGE,
                _request_timeout=self.options.timeout,
                **extra,
            ),
        )
        return page

    async def patch_workflow(
        self, namespace: str, name: str, merge_patch: Mapping[str, Any]
    ) -> None:
        """Apply a JSON merge patch (RFC 7386), sent as application/merge-patch+json."""
        # kubernetes_asyncio sends a dict body as json-patch, which the server refuses;
        # the runtime honours `_content_type` although the bundled stubs omit it.
        patch: Callable[..., Awaitable[Any]] = self._custom.patch_namespaced_custom_object
        await self._call(
            f"patch workflow {namespace}/{name}",
            lambda: patch(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                dict(merge_patch),
                _content_type=MERGE_PATCH,
                _request_timeout=self.options.timeout,
            ),
        )

    async def stop_workflow(self, namespace: str, name: str) -> None:
        """Ask Argo to stop the Workflow (run exit handlers), as `argo stop` does."""
        await self.patch_workflow(namespace, name, {"spec": {"shutdown": "Stop"}})

    async def check(self) -> None:
        """A cheap authenticated read: list one Workflow, or GET /version."""
        namespace = self.options.check_namespace
        if namespace is not None:
            await self._call(
                "check",
                lambda: self._custom.list_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    limit=1,
                    _request_timeout=self.options.timeout,
                ),
            )
            return
        # Not VersionApi.get_code: its strict model refuses answers that omit fields.
        await self._call(
            "check",
            lambda: self.api_client.call_api(
                "/version",
                "GET",
                header_params={"Accept": "application/json"},
                response_types_map={200: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=self.options.timeout,
            ),
        )

    async def close(self) -> None:
        """Close the connection pool. Idempotent."""
        if not self._closed:
            self._closed = True
            await self.api_client.close()


def _prepare(workflow: Mapping[str, Any]) -> tuple[dict[str, Any], str, str]:
    """The body to send, its namespace and name; generateName is dropped under a name."""
    meta = workflow.get("metadata") or {}
    name, namespace = identity(workflow)
    body = dict(workflow)
    if "generateName" in meta:
        body["metadata"] = {k: v for k, v in meta.items() if k != "generateName"}
    return body, namespace, name
