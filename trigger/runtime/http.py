"""The daemon's HTTP server: webhook deliveries, /metrics, /healthz, /readyz, /status.

Push deliveries are answered only when done: 200 after every matched rule's Workflow
exists (created or duplicate) or was dead-lettered; 503 with Retry-After when submission
is failing temporarily or did not finish within the push deadline, so the sender retries
and meets the idempotent name; 400 for bodies that cannot be decoded; 401/403 for bad
authentication; 404 for unknown paths; 405 (with `Allow`) for a method no rule on the path
takes; 413 over the body limit.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from trigger.decoders.webhook import decode_webhook
from trigger.errors import DecodeError, TemporarySubmitError
from trigger.events import Event
from trigger.runtime.metrics import Metrics
from trigger.runtime.pipeline import Pipeline, RuleStatus
from trigger.sources.webhook import PathAuth
from trigger.submit.submitter import Outcome

log = structlog.get_logger("trigger.http")
DEFAULT_RETRY_AFTER = 5


@dataclass
class Health:
    """What readiness is made of; updated by the daemon."""

    rules_loaded: bool = False
    reload_error: list[str] = field(default_factory=list)
    sources: dict[str, bool] = field(default_factory=dict)
    # What running sources report as keeping them from working durably (a poll checkpoint
    # that cannot be saved): asked on every /readyz.
    source_problems: Callable[[], dict[str, list[str]]] | None = None
    sink_check: Callable[[], Awaitable[None]] | None = None
    leader: bool = False
    template_problems: list[str] = field(default_factory=list)


@dataclass
class HttpContext:
    pipeline: Pipeline
    metrics: Metrics
    health: Health
    webhook_auth: dict[str, PathAuth]
    push_deadline: float
    request_timeout: float
    extra_routes: list[web.RouteDef] = field(default_factory=list)


def build_app(ctx: HttpContext, *, max_body: int, with_metrics: bool = True) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        return await _readyz(ctx)

    async def status(_: web.Request) -> web.Response:
        return await _status(ctx)

    async def deliveries(request: web.Request) -> web.Response:
        return await _webhook(ctx, request)

    app = web.Application(client_max_size=max_body)
    routes = [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/status", status)]
    if with_metrics:
        routes.append(web.get("/metrics", _metrics_handler(ctx.metrics)))
    routes.extend(ctx.extra_routes)
    routes.append(web.route("*", "/{tail:.*}", deliveries))
    app.add_routes(routes)
    return app


def metrics_app(metrics: Metrics) -> web.Application:
    app = web.Application()
    app.add_routes([web.get("/metrics", _metrics_handler(metrics))])
    return app


def _metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handler


async def _readyz(ctx: HttpContext) -> web.Response:
    health = ctx.health
    detail: dict[str, Any] = {
        "rules": {"loaded": health.rules_loaded, "count": len(ctx.pipeline.rules)},
        "sources": health.sources,
    }
    if health.reload_error:
        detail["rules"]["lastReloadError"] = health.reload_error
    sink_ok = True
    if health.sink_check is not None:
        try:
            async with asyncio.timeout(2):
                await health.sink_check()
        except (TemporarySubmitError, TimeoutError) as exc:
            sink_ok = False
            detail["sink"] = f"unreachable: {exc}"
    detail.setdefault("sink", "ok")
    # Problems of a source that still works (a checkpoint it cannot save) are shown, not
    # made fatal: a 503 would take the replica out of its Service and stop every push.
    problems = health.source_problems() if health.source_problems is not None else {}
    if problems:
        detail["problems"] = problems
    ready = health.rules_loaded and sink_ok and all(health.sources.values())
    return web.json_response({"ready": ready, **detail}, status=200 if ready else 503)


async def _status(ctx: HttpContext) -> web.Response:
    rules = ctx.pipeline.rules
    return web.json_response(
        {
            "rules": {
                rule.name: {
                    "source": rule.kind,
                    "file": rule.file,
                    **ctx.pipeline.status.get(rule.name, RuleStatus()).as_dict(),
                }
                for rule in rules.rules
            },
            "lastReloadError": ctx.health.reload_error or None,
            "templateProblems": ctx.health.template_problems,
            "leader": ctx.health.leader,
            "inFlight": ctx.pipeline.submitter.in_flight,
        }
    )


async def _webhook(ctx: HttpContext, request: web.Request) -> web.Response:
    path = request.path
    methods = ctx.pipeline.rules.webhook_methods(path)
    if not methods:
        return _error(404, f"no rule takes deliveries on {path}")
    if request.method not in methods:
        allow = ", ".join(sorted(methods))
        return _error(405, f"{request.method} is not accepted on {path}", allow=allow)
    body = await read_body(ctx, request, "webhook")
    if isinstance(body, web.Response):
        return body
    verdict = ctx.webhook_auth.get(path, PathAuth(None, None)).verify(request.headers, body)
    if verdict.status:
        ctx.metrics.events_rejected.labels("webhook", "auth").inc()
        log.warning("webhook delivery refused", path=path, reason=verdict.message)
        return _error(verdict.status, verdict.message)
    try:
        event = decode_webhook(
            path,
            request.method,
            dict(request.headers),
            dict(request.query),
            body,
            received=ctx.pipeline.clock.now(),
        )
    except DecodeError as exc:
        ctx.metrics.events_rejected.labels("webhook", "undecodable").inc()
        return _error(400, str(exc))
    return await deliver(ctx, [event])


async def read_body(ctx: HttpContext, request: web.Request, source: str) -> bytes | web.Response:
    """The raw body, or the error response for a body too large or too slow."""
    try:
        async with asyncio.timeout(ctx.request_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        ctx.metrics.events_rejected.labels(source, "too-large").inc()
        return _error(413, "request body is too large")
    except TimeoutError:
        ctx.metrics.events_rejected.labels(source, "body-timeout").inc()
        return _error(408, "request body was not received in time")


async def deliver(
    ctx: HttpContext, events: list[Event], *, deadline: float | None = None
) -> web.Response:
    """Handle one push delivery's events; the response says whether the sender must retry.

    `deadline` (seconds) replaces `ctx.push_deadline` for senders with a shorter patience.
    """
    try:
        async with asyncio.timeout(ctx.push_deadline if deadline is None else deadline):
            results = await asyncio.gather(*(ctx.pipeline.handle(e) for e in events))
    except TemporarySubmitError as exc:
        retry = math.ceil(exc.retry_after) if exc.retry_after else DEFAULT_RETRY_AFTER
        return _error(503, f"submission failing temporarily: {exc}", retry_after=retry)
    except TimeoutError:
        return _error(
            503,
            "submission still in progress; retry delivers it exactly once",
            retry_after=DEFAULT_RETRY_AFTER,
        )
    body = {
        "events": [
            {"id": event.id, "workflows": [_outcome(o) for o in outcomes]}
            for event, outcomes in zip(events, results, strict=True)
        ]
    }
    return web.json_response(body)


def _outcome(outcome: Outcome) -> dict[str, Any]:
    data: dict[str, Any] = {
        "rule": outcome.rule,
        "workflow": outcome.workflow,
        "outcome": str(outcome.kind),
    }
    if outcome.reason:
        data["error"] = f"{outcome.reason}: {outcome.message}"
    return data


def _error(
    status: int, message: str, *, retry_after: int | None = None, allow: str | None = None
) -> web.Response:
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if allow is not None:
        headers["Allow"] = allow
    return web.Response(
        status=status,
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers=headers,
    )
