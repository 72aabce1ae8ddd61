"""The Argo Server sink: creates Workflows through Argo Server's HTTP API.

For clusters where trigger may not talk to the Kubernetes API, only to Argo Server (its
`/api/v1` gateway, with a bearer token). One aiohttp session, created in `connect`, serves
every call. Argo Server answers errors as gRPC-gateway JSON, `{"code": 6, "message": …}`:
the gRPC code 6 (AlreadyExists) is the idempotent outcome, everything else is classified
by HTTP status with the body's `message`. The token may come from a file, re-read when it
changes, so rotated service-account tokens keep working.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import aiohttp

from trigger.clock import Clock, SystemClock
from trigger.errors import (
    AlreadyExists,
    ConfigError,
    PermanentSubmitError,
    TemporarySubmitError,
)
from trigger.submit.base import Created, conflict, identity
from trigger.submit.ratelimit import TokenBucket
from trigger.submit.transport import (
    TRANSPORT_ERRORS,
    TokenFile,
    parse_retry_after,
    status_error,
    transport_error,
)

GRPC_ALREADY_EXISTS: Final = 6
PAGE: Final = 500


@dataclass(frozen=True)
class ArgoServerOptions:
    """How to reach Argo Server."""

    url: str
    """Base URL, e.g. https://argo-server.argo:2746."""
    token: str | None = None
    """Bearer token (a service account token); none when the server runs in server auth mode."""
    token_file: str | None = None
    """File holding the bearer token; re-read when it changes (rotation)."""
    ca_file: str | None = None
    """CA bundle that signs the server's certificate (PEM); default the system store."""
    insecure_skip_tls_verify: bool = False
    """Do not verify the server's certificate (test installs only)."""
    timeout: float = 10
    """Per-request timeout, seconds (connect, send and read the whole answer)."""
    connection_pool: int = 64
    """Maximum concurrent connections to the server."""
    qps: float = 0
    """Client-side request rate ceiling, requests per second; 0: none."""
    burst: int = 100
    """Requests allowed at once above `qps` after an idle period."""


def _ssl(options: ArgoServerOptions) -> ssl.SSLContext | bool:
    if options.insecure_skip_tls_verify:
        return False
    return ssl.create_default_context(cafile=options.ca_file)  # reads the CA file


def _error(
    status: int, raw: bytes, headers: Mapping[str, str], clock: Clock, *, creating: bool
) -> Exception:
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    message = body.get("message")
    text = message if isinstance(message, str) else raw[:500].decode("utf-8", "replace")
    if creating and body.get("code") == GRPC_ALREADY_EXISTS:
        return AlreadyExists(text)
    retry_after = parse_retry_after(headers.get("Retry-After"), clock.now())
    return status_error(status, text, retry_after=retry_after, creating=creating)


class ArgoServerSink:
    """Creates, reads, lists and stops Workflows through Argo Server."""

    kind = "argo-server"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        options: ArgoServerOptions,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.session = session
        self.options = options
        self._url = options.url.rstrip("/")
        self._clock = clock or SystemClock()
        self._tokens = (
            TokenFile(options.token_file, clock=self._clock)
            if options.token_file and not options.token
            else None
        )
        self._throttle = (
            TokenBucket(options.qps, options.burst, self._clock) if options.qps > 0 else None
        )

    @classmethod
    async def connect(
        cls, options: ArgoServerOptions, *, clock: Clock | None = None
    ) -> ArgoServerSink:
        """Open the one session every call reuses."""
        try:
            context = await asyncio.to_thread(_ssl, options)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"argo-server sink: CA file {options.ca_file}: {exc}") from exc
        connector = aiohttp.TCPConnector(limit=options.connection_pool, ssl=context)
        session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=options.timeout)
        )
        return cls(session, options, clock=clock)

    async def _headers(self) -> dict[str, str]:
        token = self.options.token
        if self._tokens is not None:
            token = await self._tokens.read()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        creating: bool = False,
    ) -> dict[str, Any]:
        if self._throttle is not None:
            await self._throttle.acquire()
        try:
            headers = await self._headers()
            async with self.session.request(
                method, self._url + path, json=body, params=params, headers=headers
            ) as response:
                raw = await response.read()
                status, answer_headers = response.status, response.headers
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc, what) from exc
        if not 200 <= status < 300:
            raise _error(status, raw, answer_headers, self._clock, creating=creating)
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise TemporarySubmitError(f"{what}: the answer is not JSON", status=status) from exc
        return answer if isinstance(answer, dict) else {}

    async def create(self, workflow: Mapping[str, Any]) -> Created:
        """POST the Workflow under its own (deterministic) name; an existing name is read
        to tell a redelivery (AlreadyExists) from a collision (NameTaken)."""
        meta = workflow.get("metadata") or {}
        name, namespace = identity(workflow)
        body = dict(workflow)
        if "generateName" in meta:
            body["metadata"] = {k: v for k, v in meta.items() if k != "generateName"}
        try:
            created = await self._request(
                "POST",
                f"/api/v1/workflows/{quote(namespace, safe='')}",
                f"create workflow {namespace}/{name}",
                body={"namespace": namespace, "workflow": body},
                creating=True,
            )
        except AlreadyExists:
            existing = await self.get_workflow(namespace, name)
            raise conflict(existing, workflow, f"workflow {namespace}/{name}") from None
        found = created.get("metadata") or {}
        return Created(name=found.get("name", name), namespace=namespace, uid=found.get("uid"))

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored Workflow, or None when there is none by that name."""
        try:
            return await self._request(
                "GET", _object_path(namespace, name), f"get workflow {namespace}/{name}"
            )
        except PermanentSubmitError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_workflows(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Every Workflow in the namespace whose labels match, following continue tokens."""
        items: list[dict[str, Any]] = []
        params = {"listOptions.labelSelector": label_selector, "listOptions.limit": str(PAGE)}
        while True:
            page = await self._request(
                "GET",
                f"/api/v1/workflows/{quote(namespace, safe='')}",
                f"list workflows in {namespace}",
                params=params,
            )
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {**params, "listOptions.continue": token}

    async def patch_workflow(
        self, namespace: str, name: str, merge_patch: Mapping[str, Any]
    ) -> None:
        """Argo Server has no generic patch endpoint; use stop_workflow for stopping."""
        raise NotImplementedError("the argo-server sink cannot patch workflows")

    async def stop_workflow(self, namespace: str, name: str) -> None:
        """Stop the Workflow (exit handlers still run) through the /stop endpoint."""
        await self._request(
            "PUT",
            f"{_object_path(namespace, name)}/stop",
            f"stop workflow {namespace}/{name}",
            body={"namespace": namespace, "name": name},
        )

    async def check(self) -> None:
        """GET /api/v1/version."""
        await self._request("GET", "/api/v1/version", "check")

    async def close(self) -> None:
        """Close the session. Idempotent."""
        await self.session.close()


def _object_path(namespace: str, name: str) -> str:
    return f"/api/v1/workflows/{quote(namespace, safe='')}/{quote(name, safe='')}"
