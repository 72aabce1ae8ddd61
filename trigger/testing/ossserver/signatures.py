"""How OSS authenticates a request: signatures V1 and V4, and STS security tokens.

The string-to-sign and canonical-request builders reproduce what oss2 signs, so the
`Authenticator` accepts exactly the requests a real endpoint would and answers the others
with OSS's error codes (`SignatureDoesNotMatch` carries the string it signed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Final

from trigger.testing.ossserver.errors import Fault
from trigger.testing.ossserver.operations import SUBRESOURCES, Target

Credentials = Mapping[str, str | tuple[str, str]]


_V4_SCHEME: Final = "OSS4-HMAC-SHA256"
_V4_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-~.")


def v1_string_to_sign(
    method: str, headers: Mapping[str, str], bucket: str, key: str, query: Mapping[str, str]
) -> bytes:
    """What oss2's `Auth` (V1) signs for this request."""
    lower = {name.lower(): value for name, value in headers.items()}
    oss_headers = sorted((k, v) for k, v in lower.items() if k.startswith("x-oss-"))
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in oss_headers)
    subresources = sorted((k, v) for k, v in query.items() if k in SUBRESOURCES)
    resource = f"/{bucket}/{key}"
    if subresources:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in subresources)
    date = lower.get("x-oss-date") or lower.get("date", "")
    fields = [method, lower.get("content-md5", ""), lower.get("content-type", ""), date]
    return "\n".join([*fields, canonical_headers + resource]).encode()


def v1_signature(secret: str, string_to_sign: bytes) -> str:
    digest = hmac.new(secret.encode(), string_to_sign, hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _v4_encode(text: str, keep_slash: bool) -> str:
    return "".join(
        chr(b) if b in _V4_SAFE or (keep_slash and b == ord("/")) else f"%{b:02X}"
        for b in text.encode()
    )


def v4_canonical_request(
    method: str,
    headers: Mapping[str, str],
    bucket: str,
    key: str,
    query: Mapping[str, str],
    *,
    additional: Iterable[str] = (),
) -> bytes:
    """What oss2's `AuthV4` hashes before signing."""
    extra = sorted({name.lower() for name in additional})
    lower = {name.lower(): value for name, value in headers.items()}
    signed = sorted(
        (k, v)
        for k, v in lower.items()
        if k.startswith("x-oss-") or k in ("content-type", "content-md5") or k in extra
    )
    params = sorted((_v4_encode(k, False), _v4_encode(v, False)) for k, v in query.items())
    parts = [
        method,
        _v4_encode(f"/{bucket}/{key}", True),
        "&".join(f"{k}={v}" if v else k for k, v in params),
        "".join(f"{k}:{v}\n" for k, v in signed),
        ";".join(extra),
        lower.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
    ]
    return "\n".join(parts).encode()


def v4_signature(secret: str, timestamp: str, scope: str, canonical_request: bytes) -> str:
    """Sign a V4 canonical request; `scope` is `yyyymmdd/region/oss/aliyun_v4_request`."""
    digest = hashlib.sha256(canonical_request).hexdigest()
    string_to_sign = f"{_V4_SCHEME}\n{timestamp}\n{scope}\n{digest}".encode()
    key = ("aliyun_v4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign, hashlib.sha256).hexdigest()


class Authenticator:
    """Checks V1 and V4 signatures and STS tokens the way OSS does."""

    def __init__(self, credentials: Credentials, region: str, allow_anonymous: bool) -> None:
        self._credentials = credentials
        self._region = region
        self._allow_anonymous = allow_anonymous

    def check(self, target: Target) -> None:
        header = target.headers.get("Authorization")
        if header is None:
            if not self._allow_anonymous:
                raise Fault(403, "AccessDenied", "You have no right to access this object.")
            return
        scheme, _, rest = header.partition(" ")
        if scheme == "OSS":
            self._check_v1(rest.strip(), target)
        elif scheme == _V4_SCHEME:
            self._check_v4(rest.strip(), target)
        else:
            raise Fault(400, "InvalidArgument", "Authorization header is invalid.")

    def _secret(self, access_key: str, target: Target) -> str:
        configured = self._credentials.get(access_key)
        if configured is None:
            raise Fault(
                403,
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
                OSSAccessKeyId=access_key,
            )
        secret, token = (configured, None) if isinstance(configured, str) else configured
        if target.headers.get("x-oss-security-token") != token:
            raise Fault(403, "InvalidAccessKeyId", "The security token you provided is invalid.")
        return secret

    def _check_v1(self, credential: str, target: Target) -> None:
        access_key, _, provided = credential.rpartition(":")
        secret = self._secret(access_key, target)
        to_sign = v1_string_to_sign(
            target.method, target.headers, target.bucket, target.key, target.query
        )
        if not hmac.compare_digest(v1_signature(secret, to_sign), provided):
            raise self._mismatch(access_key, provided, to_sign.decode(errors="replace"))

    def _check_v4(self, rest: str, target: Target) -> None:
        fields = dict(part.strip().partition("=")[::2] for part in rest.split(","))
        access_key, _, scope = fields.get("Credential", "").partition("/")
        provided = fields.get("Signature", "")
        secret = self._secret(access_key, target)
        timestamp = target.headers.get("x-oss-date", "")
        date, region, product, terminator = [*scope.split("/"), "", "", ""][:4]
        if (date, region, product, terminator) != (
            timestamp[:8],
            self._region,
            "oss",
            "aliyun_v4_request",
        ):
            raise Fault(
                403,
                "SignatureDoesNotMatch",
                f"Invalid credential scope {scope!r}: expected date {timestamp[:8]!r}, "
                f"region {self._region!r}, product 'oss'.",
            )
        additional = [name for name in fields.get("AdditionalHeaders", "").split(";") if name]
        canonical = v4_canonical_request(
            target.method,
            target.headers,
            target.bucket,
            target.key,
            target.query,
            additional=additional,
        )
        if not hmac.compare_digest(v4_signature(secret, timestamp, scope, canonical), provided):
            raise self._mismatch(access_key, provided, canonical.decode(errors="replace"))

    @staticmethod
    def _mismatch(access_key: str, provided: str, signed: str) -> Fault:
        return Fault(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            OSSAccessKeyId=access_key,
            SignatureProvided=provided,
            StringToSign=signed,
        )
