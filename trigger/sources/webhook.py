"""The generic webhook source: authenticated HTTP deliveries become events.

Each rule names a path; rules sharing a path share its authentication (the loader
enforces it). Authentication is an HMAC-SHA256 of the raw body with a secret from the
environment or a file, in a configurable header (GitHub's `X-Hub-Signature-256:
sha256=<hex>` form works), or a bearer token; comparisons are constant-time. A path whose
secret is not available refuses every delivery (fail closed), and so does a path without
authentication unless the daemon listens on loopback alone; the daemon says so at load.

`receive` answers one delivery: 404 for a path no rule takes, 405 (with `Allow`) for a
method no rule on the path takes, 401/403 for bad authentication, 400 for a body that
cannot be decoded; the rest is the shared intake's (trigger.core.intake).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from trigger.core.intake import Intake, deliver, error_response, header_bytes, read_body
from trigger.decoders.webhook import decode_webhook
from trigger.errors import ConfigError, DecodeError
from trigger.rules.model import WebhookAuth
from trigger.rules.router import RuleSet

SOURCE = "webhook"  # the `source` label of its metrics


@dataclass(frozen=True)
class Verdict:
    """The result of checking one delivery: `status` 0 means accepted."""

    status: int
    message: str = ""


ACCEPTED = Verdict(0)


@dataclass(frozen=True)
class PathAuth:
    """How deliveries to one path authenticate; `problem` says why every one is refused
    (its secret is unavailable, or it has no authentication beyond loopback)."""

    auth: WebhookAuth | None
    secret: bytes | None
    problem: str | None = None

    def verify(self, headers: Mapping[str, str], body: bytes) -> Verdict:
        if self.problem is not None:
            return Verdict(401, f"this path refuses every delivery: {self.problem}")
        if self.auth is None:
            return ACCEPTED
        if self.auth.bearerTokenEnv or self.auth.bearerTokenFile:
            return self._bearer(headers.get("Authorization", ""))
        return self._hmac(headers.get(self.auth.hmacHeader, ""), body)

    def _bearer(self, header: str) -> Verdict:
        scheme, _, token = header.partition(" ")
        if not header:
            return Verdict(401, "missing Authorization header")
        assert self.secret is not None
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            header_bytes(token.strip()), self.secret
        ):
            return Verdict(403, "invalid bearer token")
        return ACCEPTED

    def _hmac(self, header: str, body: bytes) -> Verdict:
        assert self.auth is not None and self.secret is not None
        if not header:
            return Verdict(401, f"missing {self.auth.hmacHeader} header")
        given = header.strip().removeprefix("sha256=").lower()
        expected = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(header_bytes(given), expected.encode()):
            return Verdict(403, f"invalid {self.auth.hmacHeader} signature")
        return ACCEPTED


OPEN_BEYOND_LOOPBACK = (
    "no authentication is configured (source.webhook.auth) and the daemon listens beyond "
    "loopback"
)


def resolve_auth(
    rules: RuleSet, environ: Mapping[str, str] | None = None, *, open_ok: bool
) -> dict[str, PathAuth]:
    """Per webhook path, its authentication with the secret read now (at load/reload).
    `open_ok`: the daemon listens on loopback alone, so a path without `auth` takes
    unauthenticated deliveries; otherwise such a path refuses them."""
    env = os.environ if environ is None else environ
    result: dict[str, PathAuth] = {}
    for rule in rules.rules:
        if rule.kind != "webhook" or rule.webhook.path in result:
            continue
        auth = rule.webhook.auth
        if auth is None:
            problem = None if open_ok else OPEN_BEYOND_LOOPBACK
            result[rule.webhook.path] = PathAuth(None, None, problem)
            continue
        try:
            result[rule.webhook.path] = PathAuth(auth, read_secret(auth, env))
        except ConfigError as exc:
            result[rule.webhook.path] = PathAuth(auth, None, f"webhook secret unavailable: {exc}")
    return result


def read_secret(auth: WebhookAuth, environ: Mapping[str, str]) -> bytes:
    """The secret an auth block names; ConfigError when it is missing or empty."""
    variable = auth.hmacSecretEnv or auth.bearerTokenEnv
    if variable:
        value = environ.get(variable, "")
        if not value:
            raise ConfigError(f"environment variable {variable} is not set")
        return value.encode()
    path = auth.hmacSecretFile or auth.bearerTokenFile
    assert path is not None  # the model guarantees exactly one source
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from exc
    if not value:
        raise ConfigError(f"secret file {path} is empty")
    return value.encode()


async def receive(ctx: Intake, auth: Mapping[str, PathAuth], request: web.Request) -> web.Response:
    """Take one webhook delivery: the path's rules and methods, its body within limits,
    its authentication, then the pipeline (see trigger.core.intake for the answers)."""
    path = request.path
    methods = ctx.pipeline.rules.webhook_methods(path)
    if not methods:
        return error_response(404, f"no rule takes deliveries on {path}")
    if request.method not in methods:
        allow = ", ".join(sorted(methods))
        return error_response(405, f"{request.method} is not accepted on {path}", allow=allow)
    body = await read_body(ctx, request, SOURCE)
    if isinstance(body, web.Response):
        return body
    verdict = auth.get(path, PathAuth(None, None)).verify(request.headers, body)
    if verdict.status:
        return ctx.refuse(request, SOURCE, "auth", verdict.status, verdict.message)
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
        return ctx.refuse(request, SOURCE, "undecodable", 400, str(exc))
    return await deliver(ctx, [event])
