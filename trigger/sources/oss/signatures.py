"""Authentication of OSS event pushes: EventBridge tokens and signatures, MNS signatures.

EventBridge (HTTP target) authenticates a push with a shared token
(`x-eventbridge-signature-token`, compared in constant time) and/or an RSA signature
(v2: `x-eventbridge-signature-v2` = base64 RSA-SHA256 over the string-to-sign, checked
against the certificate at `x-eventbridge-signature-url`). The string-to-sign is the
target URL, the signed headers as `name: value` lines and the raw body; whether a final
newline follows the body is unverified, so both forms are accepted.

MNS (HTTP endpoint) signs with RSA-SHA1 (PKCS#1 v1.5): `Authorization` is the base64
signature over `VERB\\nContent-MD5\\nContent-Type\\nDate\\n` + the sorted `x-mns-*`
headers as `name:value` lines + the request path; `x-mns-signing-cert-url` is the base64
of the certificate URL. Key size and certificate expiry are not enforced (MNS's own test
certificate is 512-bit and expired in 2016); the certificate URL's host is.

Certificates are fetched only from hosts on an allow-list (glob patterns), over HTTPS
(plain HTTP only for loopback hosts, which tests and demos use), without following
redirects, with a timeout and a size cap; they are cached (bounded LRU with a TTL) and a
fetch in progress is shared by concurrent deliveries.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fnmatch
import hmac
import ipaddress
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from trigger.clock import Clock
from trigger.core.intake import header_bytes
from trigger.errors import TriggerError

EB_TOKEN: Final = "x-eventbridge-signature-token"  # noqa: S105 - a header name
EB_TIMESTAMP: Final = "x-eventbridge-signature-timestamp"
EB_HASH_METHOD: Final = "x-eventbridge-hash-method"
EB_VERSION: Final = "x-eventbridge-signature-version"
EB_CERT_URL: Final = "x-eventbridge-signature-url"
EB_SIGNATURE_V2: Final = "x-eventbridge-signature-v2"
MNS_CERT_URL: Final = "x-mns-signing-cert-url"
MAX_CERT_BYTES: Final = 64 * 1024
CERT_CACHE_SIZE: Final = 16  # distinct certificate URLs kept
CERT_TTL: Final = 3600.0  # seconds a fetched certificate is trusted before refetching
CERT_TIMEOUT: Final = 5.0  # seconds for one certificate fetch


class AuthError(TriggerError):
    """A push cannot be authenticated: answer 401."""


class CertificateUnavailable(TriggerError):
    """The certificate could not be fetched for a reason that may pass: answer 503."""


# --- certificates ------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_cert_url(url: str, hosts: Sequence[str]) -> str:
    """Return `url` if it may be fetched: HTTPS (or HTTP on loopback), host on the allow-list."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError as exc:
        raise AuthError(f"certificate URL is invalid: {url!r}") from exc
    if parts.username or parts.password or not host:
        raise AuthError(f"certificate URL is invalid: {url!r}")
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(host)):
        raise AuthError(f"certificate URL must use https: {url!r}")
    if not any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in hosts):
        raise AuthError(f"certificate host {host!r} is not on the allow-list")
    return url


def load_public_key(data: bytes) -> rsa.RSAPublicKey:
    """The RSA public key of a PEM or DER X.509 certificate."""
    try:
        if b"-----BEGIN" in data:
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
        key = cert.public_key()
    except ValueError as exc:
        raise AuthError(f"certificate cannot be read: {exc}") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise AuthError("certificate does not hold an RSA key")
    return key


class CertificateCache:
    """Fetches certificates with aiohttp and keeps their keys (LRU, TTL, shared fetches)."""

    def __init__(
        self,
        clock: Clock,
        *,
        size: int = CERT_CACHE_SIZE,
        ttl: float = CERT_TTL,
        timeout: float = CERT_TIMEOUT,
    ) -> None:
        self._clock = clock
        self._size, self._ttl, self._timeout = size, ttl, timeout
        self._keys: OrderedDict[str, tuple[float, rsa.RSAPublicKey]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[rsa.RSAPublicKey]] = {}
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0  # certificate downloads made (for tests and logs)

    async def public_key(self, url: str) -> rsa.RSAPublicKey:
        """The key of the certificate at `url` (already checked against an allow-list)."""
        cached = self._keys.get(url)
        if cached is not None and cached[0] > self._clock.monotonic():
            self._keys.move_to_end(url)
            return cached[1]
        pending = self._pending.get(url)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(url))
            self._pending[url] = pending
            pending.add_done_callback(lambda done: self._forget(url, done))
        return await asyncio.shield(pending)

    def _forget(self, url: str, done: asyncio.Future[rsa.RSAPublicKey]) -> None:
        self._pending.pop(url, None)
        if not done.cancelled():
            done.exception()  # retrieved: every waiter may have gone (client disconnected)

    async def _fetch(self, url: str) -> rsa.RSAPublicKey:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self._timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
        self.fetches += 1
        try:
            async with self._session.get(url, allow_redirects=False) as reply:
                if reply.status >= 500:
                    raise CertificateUnavailable(f"certificate fetch: HTTP {reply.status}")
                if reply.status != 200:
                    raise AuthError(f"certificate fetch: HTTP {reply.status}")
                data = await reply.content.read(MAX_CERT_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CertificateUnavailable(f"certificate fetch failed: {exc!r}") from exc
        if len(data) > MAX_CERT_BYTES:
            raise AuthError("certificate is too large")
        key = load_public_key(data)
        self._keys[url] = (self._clock.monotonic() + self._ttl, key)
        while len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return key

    async def close(self) -> None:
        for pending in list(self._pending.values()):
            pending.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None


# --- signatures --------------------------------------------------------------------------


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AuthError(f"{what} is not base64") from exc


def verify_rsa(
    key: rsa.RSAPublicKey,
    signature: bytes,
    candidates: Sequence[bytes],
    algorithm: hashes.HashAlgorithm,
) -> bool:
    """True when `signature` (PKCS#1 v1.5) verifies over one of the candidate messages."""
    for message in candidates:
        try:
            key.verify(signature, message, padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            continue
        return True
    return False


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names lower-cased; the first of repeated headers wins."""
    result: dict[str, str] = {}
    for name, value in headers.items():
        result.setdefault(name.lower(), value)
    return result


def eventbridge_strings_to_sign(url: str, headers: Mapping[str, str], body: bytes) -> list[bytes]:
    """The v2 string-to-sign, with and without the final newline (which one is unverified)."""
    lower = lower_headers(headers)
    names = (EB_TIMESTAMP, EB_HASH_METHOD, EB_VERSION, EB_CERT_URL, EB_TOKEN)
    lines = "".join(f"{name}: {lower[name]}\n" for name in names if name in lower)
    base = header_bytes(f"{url}\n{lines}") + body
    return [base + b"\n", base]


def mns_string_to_sign(method: str, headers: Mapping[str, str], path: str) -> bytes:
    """What MNS signs: verb, Content-MD5, Content-Type, Date, sorted x-mns-* headers, path."""
    lower = lower_headers(headers)
    fixed = [
        method,
        lower.get("content-md5", ""),
        lower.get("content-type", ""),
        lower.get("date", ""),
    ]
    mns = sorted((k, v) for k, v in lower.items() if k.startswith("x-mns-"))
    return header_bytes("\n".join(fixed) + "\n" + "".join(f"{k}:{v}\n" for k, v in mns) + path)


def _check_skew(moment: datetime, now: datetime, max_skew: float, what: str) -> None:
    skew = abs((now - moment).total_seconds())
    if skew > max_skew:
        raise AuthError(f"{what} is {skew:.0f} s away from now (limit {max_skew:.0f} s)")


@dataclass(frozen=True)
class EventBridgeAuth:
    """How EventBridge pushes authenticate. With neither a token nor signature checks,
    everything is refused unless `allow_unauthenticated` (the daemon listens on loopback
    alone)."""

    token: bytes | None
    verify_signature: bool
    cert_hosts: tuple[str, ...]
    max_skew: float
    allow_unauthenticated: bool = False
    problem: str | None = None  # why every push is refused (a configured secret is missing)

    @property
    def refuses_everything(self) -> str | None:
        """The reason every push is refused, or None."""
        if self.problem:
            return self.problem
        if self.token is None and not self.verify_signature and not self.allow_unauthenticated:
            return (
                "neither a token (oss.push.eventbridge_token_env/_file) nor signature "
                "verification (oss.push.eventbridge_verify_signature) is configured, and "
                "the daemon listens beyond loopback"
            )
        return None

    @property
    def unauthenticated(self) -> bool:
        """True when pushes are taken with nothing checked (loopback only)."""
        return self.token is None and not self.verify_signature and not self.problem

    async def check(
        self,
        headers: Mapping[str, str],
        body: bytes,
        urls: Sequence[str],
        now: datetime,
        certs: CertificateCache,
    ) -> None:
        """Raise AuthError (or CertificateUnavailable) unless the push is authentic."""
        refused = self.refuses_everything
        if refused:
            raise AuthError(f"EventBridge receiver refuses every push: {refused}")
        lower = lower_headers(headers)
        if self.token is not None:
            given = header_bytes(lower.get(EB_TOKEN, ""))
            if not given:
                raise AuthError(f"missing {EB_TOKEN}")
            if not hmac.compare_digest(given, self.token):
                raise AuthError(f"invalid {EB_TOKEN}")
        if self.verify_signature:
            await self._check_signature(lower, body, urls, now, certs)

    async def _check_signature(
        self,
        lower: Mapping[str, str],
        body: bytes,
        urls: Sequence[str],
        now: datetime,
        certs: CertificateCache,
    ) -> None:
        missing = [h for h in (EB_TIMESTAMP, EB_CERT_URL, EB_SIGNATURE_V2) if not lower.get(h)]
        if missing:
            raise AuthError(f"missing {', '.join(missing)}")
        method = lower.get(EB_HASH_METHOD, "")
        if method.upper() != "SHA256":
            raise AuthError(f"unsupported {EB_HASH_METHOD} {method!r} (only v2 SHA256)")
        stamp = lower[EB_TIMESTAMP].strip()
        if not stamp.isdigit():
            raise AuthError(f"invalid {EB_TIMESTAMP}")
        try:
            moment = datetime.fromtimestamp(int(stamp) / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise AuthError(f"invalid {EB_TIMESTAMP}") from exc
        _check_skew(moment, now, self.max_skew, EB_TIMESTAMP)
        url = check_cert_url(lower[EB_CERT_URL].strip(), self.cert_hosts)
        signature = _b64(lower[EB_SIGNATURE_V2], EB_SIGNATURE_V2)
        key = await certs.public_key(url)
        candidates = [s for u in urls for s in eventbridge_strings_to_sign(u, lower, body)]
        if not verify_rsa(key, signature, candidates, hashes.SHA256()):
            raise AuthError("EventBridge signature does not verify")


@dataclass(frozen=True)
class MnsAuth:
    """How MNS pushes authenticate: the RSA-SHA1 signature; with it turned off, nothing —
    but only when `allow_unauthenticated` (the daemon listens on loopback alone), else
    every push is refused."""

    verify_signature: bool
    cert_hosts: tuple[str, ...]
    max_skew: float
    allow_unauthenticated: bool = False

    @property
    def refuses_everything(self) -> str | None:
        """The reason every push is refused, or None."""
        if not self.verify_signature and not self.allow_unauthenticated:
            return (
                "signature verification (oss.push.mns_verify_signature) is off and the "
                "daemon listens beyond loopback"
            )
        return None

    @property
    def unauthenticated(self) -> bool:
        """True when pushes are taken with nothing checked (loopback only)."""
        return not self.verify_signature

    async def check(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        now: datetime,
        certs: CertificateCache,
    ) -> None:
        """Raise AuthError (or CertificateUnavailable) unless the push is authentic."""
        refused = self.refuses_everything
        if refused:
            raise AuthError(f"MNS receiver refuses every push: {refused}")
        if not self.verify_signature:
            return
        lower = lower_headers(headers)
        missing = [h for h in ("authorization", MNS_CERT_URL, "date") if not lower.get(h)]
        if missing:
            raise AuthError(f"missing {', '.join(missing)}")
        try:
            moment = parsedate_to_datetime(lower["date"])
        except (TypeError, ValueError) as exc:
            raise AuthError("invalid Date header") from exc
        if moment.tzinfo is None:
            raise AuthError("invalid Date header: no time zone")
        _check_skew(moment, now, self.max_skew, "Date")
        raw_url = _b64(lower[MNS_CERT_URL], MNS_CERT_URL)
        url = check_cert_url(raw_url.decode("utf-8", "replace"), self.cert_hosts)
        signature = _b64(lower["authorization"], "Authorization")
        key = await certs.public_key(url)
        message = mns_string_to_sign(method, lower, path)
        if not verify_rsa(key, signature, [message], hashes.SHA1()):  # noqa: S303 - MNS's algorithm
            raise AuthError("MNS signature does not verify")
