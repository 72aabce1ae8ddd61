"""The OSS push receivers: EventBridge HTTP targets and MNS HTTP endpoints.

Both are mounted on the daemon's HTTP server at `oss.push.eventbridge_path` and
`oss.push.mns_path` whatever the rules say (a push for a bucket no rule takes is answered
200 with no Workflows). A delivery is answered only when done (`deliver`): 200 after every
matched rule's Workflow exists or was dead-lettered, 503 when submission is failing
temporarily, 400 for an undecodable body, 401 when it cannot be authenticated, 413 over
the body limit, 503 when a signing certificate cannot be fetched right now.

Authentication is decided by the daemon on the facts (`PushAuth.read`): a receiver with
nothing to check — EventBridge with neither a token nor signature verification, MNS with
signature verification off — takes unauthenticated pushes only when the daemon listens on
loopback alone, and refuses every push otherwise. MNS retries a push it did not get a 2xx
for within 5 s, so MNS deliveries get the shorter `mns_reply_within` deadline: a delivery
still submitting then is answered 503 and its retry meets the idempotent Workflow names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from trigger.core.intake import (
    Intake,
    continue_within_limit,
    deliver,
    error_response,
    read_body,
)
from trigger.decoders.oss import decode_eventbridge, decode_mns
from trigger.errors import ConfigError, DecodeError
from trigger.events import Event
from trigger.sources.oss.signatures import (
    AuthError,
    CertificateCache,
    CertificateUnavailable,
    EventBridgeAuth,
    MnsAuth,
)

log = structlog.get_logger("trigger.oss.push")
SOURCE = "oss-push"  # the `source` label of its metrics (polling is "oss-poll")
RETRY_AFTER = 5


def read_token(settings: Any, environ: Mapping[str, str]) -> bytes | None:
    """The EventBridge shared token from env or file; None when none is configured."""
    variable, path = settings.eventbridge_token_env, settings.eventbridge_token_file
    if variable:
        value = environ.get(variable, "")
        if not value:
            raise ConfigError(f"environment variable {variable} is not set")
        return value.encode()
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read token file {path}: {exc.strerror}") from exc
        if not text:
            raise ConfigError(f"token file {path} is empty")
        return text.encode()
    return None


@dataclass(frozen=True)
class PushAuth:
    """How the two receivers authenticate, with their secrets read once, at start."""

    eventbridge: EventBridgeAuth
    mns: MnsAuth

    @classmethod
    def read(cls, settings: Any, environ: Mapping[str, str], *, open_ok: bool) -> PushAuth:
        """From `oss.push` settings; `open_ok`: the daemon listens on loopback alone, so a
        receiver with nothing to check may take unauthenticated pushes."""
        problem = None
        try:
            token = read_token(settings, environ)
        except ConfigError as exc:
            token, problem = None, f"token unavailable: {exc}"
        eventbridge = EventBridgeAuth(
            token=token,
            verify_signature=settings.eventbridge_verify_signature,
            cert_hosts=tuple(settings.eventbridge_cert_hosts),
            max_skew=settings.eventbridge_max_skew,
            allow_unauthenticated=open_ok,
            problem=problem,
        )
        mns = MnsAuth(
            verify_signature=settings.mns_verify_signature,
            cert_hosts=tuple(settings.mns_cert_hosts),
            max_skew=settings.mns_max_skew,
            allow_unauthenticated=open_ok,
        )
        return cls(eventbridge, mns)


class OssPush:
    """The two receivers, sharing one certificate cache. Build with `create`."""

    def __init__(
        self,
        ctx: Intake,
        settings: Any,
        eb_auth: EventBridgeAuth,
        mns_auth: MnsAuth,
        certs: CertificateCache,
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self.eb_auth = eb_auth
        self.mns_auth = mns_auth
        self.certs = certs

    @classmethod
    def create(cls, ctx: Intake, settings: Any, auth: PushAuth) -> OssPush:
        """`settings` is `Settings.oss.push`; `auth` as `PushAuth.read` found it."""
        certs = CertificateCache(ctx.pipeline.clock)
        return cls(ctx, settings, auth.eventbridge, auth.mns, certs)

    def routes(self) -> list[web.RouteDef]:
        expect = continue_within_limit
        return [
            web.post(self.settings.eventbridge_path, self.eventbridge, expect_handler=expect),
            web.post(self.settings.mns_path, self.mns, expect_handler=expect),
        ]

    async def close(self) -> None:
        await self.certs.close()

    async def eventbridge(self, request: web.Request) -> web.Response:
        body = await read_body(self.ctx, request, SOURCE)
        if isinstance(body, web.Response):
            return body
        check = self.eb_auth.check(
            request.headers,
            body,
            self._target_urls(request),
            self.ctx.pipeline.clock.now(),
            self.certs,
        )
        refused = await self._authenticate(check, request)
        if refused is not None:
            return refused
        try:
            events = decode_eventbridge(body, max_bytes=len(body) + 1)
        except DecodeError as exc:
            return self.ctx.refuse(request, SOURCE, "undecodable", 400, str(exc))
        return await deliver(self.ctx, events)

    async def mns(self, request: web.Request) -> web.Response:
        clock = self.ctx.pipeline.clock
        started = clock.monotonic()
        body = await read_body(self.ctx, request, SOURCE)
        if isinstance(body, web.Response):
            return body
        check = self.mns_auth.check(
            request.method, request.raw_path, request.headers, clock.now(), self.certs
        )
        refused = await self._authenticate(check, request)
        if refused is not None:
            return refused
        try:
            events = decode_mns(body, headers=request.headers, max_bytes=len(body) + 1)
        except DecodeError as exc:
            return self.ctx.refuse(request, SOURCE, "undecodable", 400, str(exc))
        left = self.settings.mns_reply_within - (clock.monotonic() - started)
        return await self._deliver_within(events, min(self.ctx.push_deadline, left))

    async def _deliver_within(self, events: list[Event], deadline: float) -> web.Response:
        if deadline <= 0:
            message = "no time left to submit before MNS retries"
            return error_response(503, message, retry_after=RETRY_AFTER)
        return await deliver(self.ctx, events, deadline=deadline)

    def _target_urls(self, request: web.Request) -> list[str]:
        configured = self.settings.eventbridge_target_url
        if configured:
            return [configured]
        # A TLS-terminating proxy turns the signed https:// URL into http:// here.
        url = request.url
        return [str(url), str(url.with_scheme("https" if url.scheme == "http" else "http"))]

    async def _authenticate(
        self, check: Awaitable[None], request: web.Request
    ) -> web.Response | None:
        try:
            await check
        except AuthError as exc:
            return self.ctx.refuse(request, SOURCE, "auth", 401, str(exc))
        except CertificateUnavailable as exc:
            return self.ctx.refuse(
                request, SOURCE, "certificate", 503, str(exc), retry_after=RETRY_AFTER
            )
        return None
