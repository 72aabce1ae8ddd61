"""The intake of pushed deliveries, shared by every push receiver (webhooks, EventBridge,
MNS): read a body within its limits, hand its events to the pipeline, answer the sender.

Push deliveries are answered only when done: 200 after every matched rule's Workflow
exists (created or duplicate) or was dead-lettered; 503 with Retry-After when submission
is failing temporarily or did not finish within the push deadline, so the sender retries
and meets the idempotent name; 408 for a body too slow, 413 for one too large (at once
when its Content-Length says so), 400 for one cut short or malformed. The receivers own
the rest of their answers (400, 401/403, 404, 405).

Every delivery refused here or by a receiver (`Intake.refuse`) is counted in
`trigger_events_rejected_total{source,reason}` and logged as a warning with the reason and
the client's address — once per (source, reason) every 10 s, so a sender repeating a bad
delivery cannot flood the log.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_urldispatcher import _default_expect_handler

from trigger.core.lograte import LogRate
from trigger.core.metrics import Metrics
from trigger.core.pipeline import Pipeline
from trigger.errors import TemporarySubmitError
from trigger.events import Event
from trigger.submit.submitter import Outcome

log = structlog.get_logger("trigger.http")
DEFAULT_RETRY_AFTER = 5


@dataclass
class Intake:
    """What a push receiver needs to take a delivery in."""

    pipeline: Pipeline
    metrics: Metrics
    push_deadline: float
    request_timeout: float
    _refusals: LogRate = field(init=False)

    def __post_init__(self) -> None:
        self._refusals = LogRate(self.pipeline.clock)

    def refuse(
        self,
        request: web.Request,
        source: str,
        reason: str,
        status: int,
        message: str,
        *,
        retry_after: int | None = None,
    ) -> web.Response:
        """Count and log a refused delivery; the error response that tells its sender why."""
        self.metrics.child(self.metrics.events_rejected, source, reason).inc()
        quiet = self._refusals.due((source, reason))
        if quiet is not None:
            log.warning(
                "delivery refused",
                source=source,
                reason=reason,
                status=status,
                path=request.path,
                client=request.remote,
                detail=message,
                not_logged_since_last=quiet,
            )
        return error_response(status, message, retry_after=retry_after)


async def read_body(ctx: Intake, request: web.Request, source: str) -> bytes | web.Response:
    """The raw body, or the error response for a body too large, too slow, cut short or
    malformed."""
    limit = request.client_max_size
    declared = request.content_length
    if declared is not None and declared > limit:
        # Refused before a byte of it is read: the sender learns now, not at a timeout.
        return _too_large(ctx, request, source, f"request body of {declared} bytes", limit)
    try:
        async with asyncio.timeout(ctx.request_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _too_large(ctx, request, source, "request body", limit)
    except TimeoutError:
        message = "request body was not received in time"
        return ctx.refuse(request, source, "body-timeout", 408, message)
    except ConnectionError:
        # Nobody reads this answer; the refusal is for the log and the metric.
        message = "the client closed the connection before the body was complete"
        return ctx.refuse(request, source, "disconnected", 400, message)
    except web.RequestPayloadError as exc:
        return ctx.refuse(request, source, "malformed-body", 400, f"malformed body: {exc}")


async def continue_within_limit(request: web.Request) -> None:
    """The `Expect: 100-continue` answer of every push receiver: the body is invited only
    when its declared length is within the limit. aiohttp's own handler invites any body,
    so a sender declaring 1 GB was told to go ahead, then refused. Saying nothing instead
    lets the receiver refuse it at once (413, counted, the connection closed) before the
    sender has started."""
    declared = request.content_length
    if declared is not None and declared > request.client_max_size:
        return
    await _default_expect_handler(request)


def _too_large(
    ctx: Intake, request: web.Request, source: str, what: str, limit: int
) -> web.Response:
    message = f"{what} is over the limit of {limit} bytes (http.max_body_bytes)"
    response = ctx.refuse(request, source, "too-large", 413, message)
    # No keep-alive after it: aiohttp discards the rest of the body for at most its
    # lingering time, then closes the connection instead of reading a next request.
    response.force_close()
    return response


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


def header_bytes(value: str) -> bytes:
    """A header value as the bytes that arrived. aiohttp decodes headers as UTF-8 with
    `surrogateescape`, so a byte that is not UTF-8 (`\xe9` in a signature) is a lone
    surrogate in the str, which a plain `.encode()` refuses (a 500, a traceback). Compare
    and sign the wire bytes instead: whatever a client sends is then just a mismatch."""
    return value.encode("utf-8", "surrogateescape")


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
