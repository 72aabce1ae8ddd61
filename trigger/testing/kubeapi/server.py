"""`KubeEmulator`: the emulator as tests hold it.

It serves the store on a loopback port through aiohttp, gives clients their configuration
(a kubernetes_asyncio `Configuration`, or a kubeconfig file for a subprocess), checks the
bearer token and the request size limit, and carries the test controls: seed and inspect
objects, inject failures and delays, count requests, compact the watch history.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import yaml
from aiohttp import web

from trigger.testing.kubeapi.errors import ApiStatusError
from trigger.testing.kubeapi.faults import Admission, Delay, Injection, Lost, Sleep
from trigger.testing.kubeapi.resources import CLUSTER_SCOPED, JSON, NAMESPACES, Resource
from trigger.testing.kubeapi.routing import Router, json_response
from trigger.testing.kubeapi.store import Clock, Store
from trigger.testing.served import Served

# The real limits: the API server refuses request bodies over 3 MiB with 413; etcd stores
# at most 1.5 MiB per object (--max-request-bytes), which reaches clients as a 500.
MAX_REQUEST_BYTES: Final = 3 * 1024 * 1024
MAX_OBJECT_BYTES: Final = 1536 * 1024


def _now_utc() -> datetime:
    return datetime.now(UTC)


class KubeEmulator(Served):
    """An in-process Kubernetes API server on a loopback port, for tests."""

    def __init__(
        self,
        namespaces: Iterable[str] = ("default",),
        *,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        history: int = 1000,
        cluster_scoped: Iterable[str] = (),
        bookmark_interval: float = 1.0,
        clock: Clock = _now_utc,
        max_request_bytes: int | None = MAX_REQUEST_BYTES,
        max_object_bytes: int | None = MAX_OBJECT_BYTES,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """`clock` stamps objects; `sleep` waits out `delay`s (a VirtualClock's `sleep`
        makes them virtual)."""
        self.token = token
        self.requests: list[tuple[str, str, str]] = []
        self.request_times: list[float] = []  # time.monotonic() of each, beside `requests`
        self.max_request_bytes = max_request_bytes
        self._namespaces = list(namespaces)
        self._store = Store(
            self._namespaces,
            history,
            clock,
            CLUSTER_SCOPED | frozenset(cluster_scoped),
            max_object_bytes,
        )
        self._host, self._port = host, port
        self._injections: list[Injection] = []
        self._delays: list[Delay] = []
        self._lost: list[Lost] = []
        self._admission: Admission | None = None
        self._sleep = sleep
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._router = Router(self._store, bookmark_interval=bookmark_interval)
        self.app = web.Application(client_max_size=16 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    # lifecycle

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"

    async def stop(self) -> None:
        self._store.close_watchers()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the emulator is not started")
        return self._url

    def client_configuration(self, *, token: str | None = None) -> Any:
        """A kubernetes_asyncio Configuration that points at this emulator."""
        from kubernetes_asyncio.client import Configuration

        config = Configuration(host=self.url)
        token = token if token is not None else self.token
        if token:
            config.api_key = {"BearerToken": token}
            config.api_key_prefix = {"BearerToken": "Bearer"}
        return config

    def kubeconfig(self, path: str | Path, *, token: str | None = None) -> Path:
        """Write a kubeconfig for this emulator (for a daemon running as a subprocess)."""
        token = token if token is not None else self.token
        context = {
            "cluster": "emulator",
            "user": "emulator",
            "namespace": (self._namespaces or ["default"])[0],
        }
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": token} if token else {}}],
            "contexts": [{"name": "emulator", "context": context}],
            "preferences": {},
        }
        target = Path(path)
        target.write_text(yaml.safe_dump(doc, sort_keys=False))
        return target

    # test controls and introspection

    def inject(
        self,
        status: int,
        *,
        count: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
        retry_after: int | None = None,
        body_message: str | None = None,
    ) -> Injection:
        """Fail the next `count` requests matching method and a substring of path?query.

        The failure is answered before any state change, as a Status body with
        `body_message` and, when given, a Retry-After header.
        """
        injection = Injection(status, count, method, path_contains, retry_after, body_message)
        self._injections.append(injection)
        return injection

    def delay(
        self,
        seconds: float | Callable[[], float],
        *,
        count: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
        before: bool = False,
    ) -> Delay:
        """Slow down the next `count` requests matching method and a substring of path?query.

        Each is held `seconds` (a number, `math.inf` until released, or a function drawn
        per request) on the emulator's `sleep`: after it is served (`before=False`, the
        answer is late) or before (`before=True`, the change is late). Injected failures
        are answered after a `before` delay. See `Delay`.
        """
        slow = Delay(seconds, count, method, path_contains, before)
        self._delays.append(slow)
        return slow

    def lose(
        self, *, count: int = 1, method: str | None = None, path_contains: str | None = None
    ) -> Lost:
        """Serve the next `count` matching requests, then drop their connections unanswered
        (the change is made; the client never hears of it)."""
        lost = Lost(count, method, path_contains)
        self._lost.append(lost)
        return lost

    def admit(
        self,
        per_second: float | None,
        *,
        method: str | None = "POST",
        path_contains: str | None = None,
        retry_after: int = 1,
        burst: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Admission | None:
        """Serve at most `per_second` matching requests a second and refuse the rest with
        429 and `Retry-After` (None: no limit). See `Admission`."""
        self._admission = None
        if per_second is not None:
            self._admission = Admission(
                per_second, monotonic, method, path_contains, retry_after, burst
            )
        return self._admission

    def clear_injections(self) -> None:
        """Drop every pending injected failure and lost answer: the API server has
        recovered."""
        self._injections.clear()
        self._lost.clear()

    def count(self, *, method: str | None = None, path_contains: str | None = None) -> int:
        """How many requests matched the method and a substring of path?query."""
        return sum(
            1
            for m, path, query in self.requests
            if (method is None or m == method.upper())
            and (path_contains is None or path_contains in f"{path}?{query}")
        )

    def objects(
        self, group: str, version: str, plural: str, namespace: str | None = None
    ) -> list[JSON]:
        """Copies of the stored objects, sorted by namespace and name."""
        return copy.deepcopy(self._store.select(Resource(group, version, plural), namespace))

    def get_object(
        self, group: str, version: str, plural: str, name: str, namespace: str | None = None
    ) -> JSON | None:
        found = self._store.find(Resource(group, version, plural), namespace, name)
        return copy.deepcopy(found)

    def put_object(self, group: str, version: str, plural: str, obj: JSON) -> JSON:
        """Seed an object (create, or overwrite whatever is stored), notifying watchers."""
        rtype, body = Resource(group, version, plural), copy.deepcopy(obj)
        meta = body.setdefault("metadata", {})
        scoped = plural not in self._store.cluster_scoped
        namespace = meta.get("namespace", "default") if scoped else None
        current = self._store.find(rtype, namespace, meta.get("name", ""))
        if current is None:
            return copy.deepcopy(self._store.create(rtype, namespace, body))
        return copy.deepcopy(self._store.commit(rtype, current, body))

    def set_status(
        self,
        group: str,
        version: str,
        plural: str,
        name: str,
        status: JSON,
        *,
        namespace: str | None = None,
    ) -> JSON:
        """Replace an object's status, as a controller would."""
        rtype = Resource(group, version, plural)
        current = self._store.get(rtype, namespace, name)
        new = {**current, "status": copy.deepcopy(status)}
        return copy.deepcopy(self._store.commit(rtype, current, new, status_only=True))

    def finish_workflow(
        self,
        name: str,
        phase: str,
        *,
        namespace: str = "default",
        outputs: dict[str, str] | None = None,
        message: str = "",
    ) -> JSON:
        """End a Workflow as Argo's controller does: one update of the main resource (the
        Workflow CRD has no status subresource) that sets the final phase, times, output
        parameters and message, and the `workflows.argoproj.io/completed: "true"` and
        `workflows.argoproj.io/phase` labels. Watchers see a MODIFIED event (an ADDED one
        when they select on the completed label)."""
        rtype = Resource("argoproj.io", "v1alpha1", "workflows")
        current = self._store.get(rtype, namespace, name)
        meta = copy.deepcopy(current["metadata"])
        meta.setdefault("labels", {}).update(
            {"workflows.argoproj.io/completed": "true", "workflows.argoproj.io/phase": phase}
        )
        stamp = self._store.timestamp()
        status = copy.deepcopy(current.get("status") or {})
        status.update(
            phase=phase,
            startedAt=status.get("startedAt") or meta.get("creationTimestamp") or stamp,
            finishedAt=stamp,
        )
        if message:
            status["message"] = message
        if outputs:
            params = [{"name": k, "value": v} for k, v in outputs.items()]
            status["outputs"] = {"parameters": params}
        new = {**current, "metadata": meta, "status": status}
        return copy.deepcopy(self._store.commit(rtype, current, new))

    def delete_object(
        self, group: str, version: str, plural: str, name: str, namespace: str | None = None
    ) -> None:
        self._store.delete(Resource(group, version, plural), namespace, name)

    def add_namespace(self, name: str) -> None:
        self._store.create(NAMESPACES, None, {"metadata": {"name": name}})

    def compact(self) -> None:
        """Drop the watch history so watches from an older resourceVersion get 410 Gone."""
        self._store.compact()

    @property
    def resource_version(self) -> str:
        """The newest resourceVersion handed out, as the server's string."""
        return self._store.resource_version

    @property
    def watching(self) -> int:
        """How many watch streams are open."""
        return self._store.watching

    async def wait_watching(self, count: int = 1) -> None:
        """Wait until at least `count` watches are open, so later changes reach them live."""
        while self._store.watching < count:
            await self._store.watchers_changed()

    # request handling

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, request.query_string))
        self.request_times.append(time.monotonic())
        slow = next((d for d in self._delays if d.matches(request.method, request.path_qs)), None)
        if slow is not None:
            slow.remaining -= 1
            if slow.before:
                await slow.hold(self._sleep)
        response = await self._answer(request)
        if slow is not None and not slow.before:
            await slow.hold(self._sleep)
        lost = next((x for x in self._lost if x.matches(request.method, request.path_qs)), None)
        if lost is not None:
            lost.remaining -= 1
            if request.transport is not None:
                request.transport.abort()  # served, and the answer never arrives
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        try:
            for injection in self._injections:
                if injection.matches(request.method, request.path_qs):
                    injection.remaining -= 1
                    raise injection.error()
            if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiStatusError(401, "Unauthorized")
            limit = self.max_request_bytes
            if limit is not None and (request.content_length or 0) > limit:
                raise ApiStatusError(413, f"Request entity too large: limit is {limit}")
            if self._admission is not None:
                refused = self._admission.take(request.method, request.path_qs)
                if refused is not None:
                    raise refused
            return await self._router.route(request)
        except ApiStatusError as err:
            return json_response(err.status, err.code, err.headers)
