"""The intake of pushed deliveries, shared by every push receiver (webhooks, EventBridge,
MNS): read a body within its limits, hand its events to the pipeline, answer the sender.

Push deliveries are answered only when done: 200 after every matched rule's Workflow
exists (created or duplicate) or was dead-lettered; 503 with Retry-After when submission
is failing temporarily or did not finish within the push deadline, so the sender retries
and meets the idempotent name; 408 for a body too slow, 413 for one too large. The
receivers own the rest of their answers (400, 401/403, 404, 405).
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from trigger.core.metrics import Metrics
from trigger.core.pipeline import Pipeline
from trigger.errors import TemporarySubmitError
from trigger.events import Event
from trigger.submit.submitter import Outcome

DEFAULT_RETRY_AFTER = 5


@dataclass
class Intake:
    """What a push receiver needs to take a delivery in."""

    pipeline: Pipeline
    metrics: Metrics
    push_deadline: float
    request_timeout: float


async def read_body(ctx: Intake, request: web.Request, source: str) -> bytes | web.Response:
    """The raw body, or the error response for a body too large or too slow."""
    try:
        async with asyncio.timeout(ctx.request_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        ctx.metrics.events_rejected.labels(source, "too-large").inc()
        return error_response(413, "request body is too large")
    except TimeoutError:
        ctx.metrics.events_rejected.labels(source, "body-timeout").inc()
        return error_response(408, "request body was not received in time")


async def deliver(
    ctx: Intake, events: list[Event], *, deadline: float | None = None
) -> web.Response:
    """Handle one push delivery's events; the response says whether the sender must retry.

    `deadline` (seconds) replaces `ctx.push_deadline` for senders with a shorter patience.
    """
    try:
        async with asyncio.timeout(ctx.push_deadline if deadline is None else deadline):
            results = await asyncio.gather(*(ctx.pipeline.handle(e) for e in events))
    except TemporarySubmitError as exc:
        retry = math.ceil(exc.retry_after) if exc.retry_after else DEFAULT_RETRY_AFTER
        return error_response(503, f"submission failing temporarily: {exc}", retry_after=retry)
    except TimeoutError:
        return error_response(
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


def error_response(
    status: int, message: str, *, retry_after: int | None = None, allow: str | None = None
) -> web.Response:
    """A JSON `{"error": message}` answer, with Retry-After or Allow when given."""
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
