"""What the HTTP sinks share: the status → error table, Retry-After, rotating token files.

Both the Kubernetes and the Argo Server sink answer over HTTP, so they classify failures
with one table: a 409 on create is `AlreadyExists`, 413 and etcd's "request is too large"
(a 500) are `WorkflowTooLarge`, throttling and other server trouble are temporary, the
rest of 4xx is permanent. Transport failures (refused connections,
timeouts, resets) are temporary, except a TLS certificate that fails verification: no
retry can fix a wrong CA bundle, so it is a permanent configuration error that the
readiness check reports at startup.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import aiohttp

from trigger.clock import Clock, SystemClock
from trigger.errors import (
    AlreadyExists,
    PermanentSubmitError,
    SubmitError,
    TemporarySubmitError,
    TriggerError,
    WorkflowTooLarge,
)

# 408 is a 4xx but says "try again": the server gave up waiting, the request was fine.
TEMPORARY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
CONFLICT: Final = 409
TOO_LARGE: Final = 413
# What etcd says, through a 500, of an object over its 1.5 MiB (kubernetes#112152).
ETCD_TOO_LARGE: Final = "request is too large"
TRANSPORT_ERRORS: Final = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    with contextlib.suppress(ValueError):
        return max(0.0, float(text))
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None  # a malformed hint is no hint; the submitter's backoff applies
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


def status_error(
    status: int, message: str, *, retry_after: float | None = None, creating: bool = True
) -> TriggerError:
    """The trigger error for an HTTP failure status.

    A 409 means "the name exists" only for a create; elsewhere it is a write conflict
    that a fresh read and retry resolves.
    """
    text = f"{status}: {message}" if message else str(status)
    if status == CONFLICT and creating:
        return AlreadyExists(text)
    if status == TOO_LARGE or (status >= 500 and ETCD_TOO_LARGE in message):
        # No retry makes an object smaller: a 500 that says so is poison, not an outage.
        return WorkflowTooLarge(text, status=status)
    if status in TEMPORARY_STATUSES or status >= 500 or status == CONFLICT:
        return TemporarySubmitError(text, status=status, retry_after=retry_after)
    return PermanentSubmitError(text, status=status)


def transport_error(exc: BaseException, what: str) -> SubmitError:
    """The trigger error for a failure below HTTP (connect, TLS, timeout, reset)."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return PermanentSubmitError(f"{what}: TLS verification failed: {detail}")
    if isinstance(exc, asyncio.TimeoutError):
        return TemporarySubmitError(f"{what}: timed out")
    return TemporarySubmitError(f"{what}: {type(exc).__name__}: {detail}")


def _read_if_changed(
    path: str, stamp: tuple[int, int, int] | None
) -> tuple[tuple[int, int, int], str | None]:
    info = os.stat(path)
    current = (info.st_mtime_ns, info.st_ino, info.st_size)
    if current == stamp:
        return current, None
    with open(path, encoding="utf-8") as handle:
        return current, handle.read().strip()


class TokenFile:
    """A bearer token kept in a file, re-read when the file changes.

    Kubernetes rotates projected service-account tokens by swapping the file under a
    symlink, so the token is cached by (mtime, inode, size) and the file is looked at
    again at most every `recheck` seconds, off the event loop.
    """

    def __init__(self, path: str, *, recheck: float = 1.0, clock: Clock | None = None) -> None:
        self.path = path
        self._recheck = recheck
        self._clock = clock or SystemClock()
        self._stamp: tuple[int, int, int] | None = None
        self._token: str | None = None
        self._due = 0.0

    async def read(self) -> str:
        """The current token; raises OSError when the file cannot be read the first time."""
        now = self._clock.monotonic()
        if self._token is not None and now < self._due:
            return self._token
        self._due = now + self._recheck
        try:
            stamp, text = await asyncio.to_thread(_read_if_changed, self.path, self._stamp)
        except OSError:
            if self._token is None:
                raise
            return self._token  # mid-rotation; the old token is still the best we have
        if text is not None:
            self._stamp, self._token = stamp, text
        assert self._token is not None
        return self._token
