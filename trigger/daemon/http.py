"""The daemon's HTTP app: /healthz, /readyz, /status, /metrics, and the routes of the push
receivers (webhooks on any other path, the OSS receivers on theirs).

Readiness is made of the parts the daemon assembles (`Health`); the receivers answer
through the shared intake (trigger.core.intake).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from trigger.core.intake import Intake, continue_within_limit, error_response
from trigger.core.metrics import Metrics
from trigger.core.pipeline import RuleStatus
from trigger.daemon.verdicts import Verdicts
from trigger.errors import TemporarySubmitError
from trigger.sources.webhook import PathAuth, receive


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
    verdicts: Verdicts | None = None  # each loaded rule: active or idle, and why
    # The queues section of /status (trigger.daemon.queues.QueueStatus.describe).
    queues: Callable[[], Awaitable[dict[str, Any]]] | None = None
    loaded_at: datetime | None = None  # when the running rules were loaded


@dataclass
class HttpContext(Intake):
    """The app's context: the intake every receiver shares, and what the daemon adds."""

    health: Health = field(default_factory=Health)
    webhook_auth: dict[str, PathAuth] = field(default_factory=dict)
    extra_routes: list[web.RouteDef] = field(default_factory=list)


def build_app(ctx: HttpContext, *, max_body: int, with_metrics: bool = True) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        return await _readyz(ctx)

    async def status(_: web.Request) -> web.Response:
        return await _status(ctx)

    app = web.Application(client_max_size=max_body)
    routes = [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/status", status)]
    if with_metrics:
        routes.append(web.get("/metrics", _metrics_handler(ctx.metrics)))
    routes.extend(ctx.extra_routes)
    builtin = _methods(routes)

    async def deliveries(request: web.Request) -> web.Response:
        # Every other method on a built-in path lands here: it is a 405, unless a webhook
        # rule takes it on that path.
        allowed = builtin.get(request.path)
        taken = ctx.pipeline.rules.webhook_methods(request.path)
        if allowed is not None and request.method not in taken:
            message = f"{request.method} is not accepted on {request.path}"
            return error_response(405, message, allow=", ".join(sorted(allowed | taken)))
        return await receive(ctx, ctx.webhook_auth, request)

    routes.append(
        web.route("*", "/{tail:.*}", deliveries, expect_handler=continue_within_limit)
    )
    app.add_routes(routes)
    return app


def _methods(routes: list[web.RouteDef]) -> dict[str, frozenset[str]]:
    """The methods each path of `routes` takes (GET routes answer HEAD too)."""
    methods: dict[str, set[str]] = {}
    for route in routes:
        taken = methods.setdefault(route.path, set())
        taken.add(route.method)
        if route.method == "GET" and route.kwargs.get("allow_head", True):
            taken.add("HEAD")
    return {path: frozenset(found) for path, found in methods.items()}


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
        "rules": {"loaded": health.rules_loaded, "count": len(ctx.pipeline.rules.written)},
        "sources": health.sources,
    }
    if health.verdicts is not None:  # idle rules are shown, not fatal: strict mode refuses them
        detail["rules"]["active"] = health.verdicts.active_count
        detail["rules"]["idle"] = health.verdicts.idle
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
    return web.json_response(
        {
            "rules": {name: _rule_status(ctx, name) for name in ctx.pipeline.rules.written},
            "lastReloadError": ctx.health.reload_error or None,
            "templateProblems": ctx.health.template_problems,
            "leader": ctx.health.leader,
            "inFlight": ctx.pipeline.submitter.in_flight,
            "flow": flow.describe() if (flow := ctx.pipeline.submitter.flow) else None,
            "queues": await ctx.health.queues() if ctx.health.queues is not None else {},
        }
    )


def _rule_status(ctx: HttpContext, name: str) -> dict[str, Any]:
    """One rule as written: a gate rule once (its firings' counts), its members inside
    (each one's verdict and the events it matched)."""
    rules, verdicts, status = ctx.pipeline.rules, ctx.health.verdicts, ctx.pipeline.status
    members = rules.gates.get(name)
    rule = rules.by_name[name] if members is None else members[0]
    shown: dict[str, Any] = {
        "source": rule.kind if members is None else "gate",
        "file": rule.file,
        **_verdict(verdicts, name),
        **status.get(name, RuleStatus()).as_dict(),
    }
    if members is not None:
        shown["members"] = {
            member.gate.member if member.gate else member.name: {
                "rule": member.name,
                "source": member.kind,
                **_verdict(verdicts, member.name),
                **status.get(member.name, RuleStatus()).as_dict(),
            }
            for member in members
        }
    return shown


def _verdict(verdicts: Verdicts | None, name: str) -> dict[str, Any]:
    if verdicts is None:
        return {}
    verdict = verdicts.of(name)
    return {"verdict": verdict.state, "reason": verdict.reason}
