"""An OSS-compatible HTTP server for tests and demos, driven by the real oss2 client.

Path-style only (`/<bucket>/<key>`, which oss2 uses for an IP endpoint). It implements the
object calls a poller and an uploader make: PutObject, GetObject, HeadObject, GetObjectMeta,
DeleteObject and ListObjectsV2 (prefix, delimiter, start-after, continuation tokens,
max-keys, fetch-owner, `encoding-type=url`). Keys are kept in a sorted list, so a page costs
O(log n + page) however many keys a bucket holds. Requests are authenticated like OSS does
(signature V1 and V4, STS security tokens) and errors carry OSS's XML body, or for HEAD the
same XML base64-encoded in `x-oss-err`. Tests can seed and inspect objects directly, inject
failures for the next N matching requests (before any state change, optionally after
letting some through), hold a request until released, and count requests. Every reply's
`Date` comes from the server's clock; `skew_date` shifts it for the next N matching
replies, as a misbehaving front end would.

With `eventbridge_url`, every successful PutObject and DeleteObject is followed by a push of
the EventBridge CloudEvent OSS would send. `build_eventbridge_event` and `build_mns_message`
build those payloads for tests that post them by hand.

Not emulated: virtual-hosted style, ranges, multipart, copy, ACLs, versioning, ListObjects
V1, the request-time skew check.

Run standalone with
`python -m trigger.testing.ossserver --port 9000 --bucket raw-data --ak AK --sk SK`;
it prints `READY http://127.0.0.1:PORT` once listening and serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import secrets
import signal
import sys
import xml.etree.ElementTree as ET
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Final
from urllib.parse import parse_qsl, quote, unquote
from xml.sax.saxutils import escape

import aiohttp
import structlog
from aiohttp import web

from trigger.testing.served import Served

Clock = Callable[[], datetime]
Credentials = Mapping[str, str | tuple[str, str]]

LOG: Final = structlog.get_logger(__name__)
DEFAULT_ACCOUNT: Final = "1234567890123456"
_MASK64: Final = 0xFFFFFFFFFFFFFFFF
_CRC64_POLY_REFLECTED: Final = 0xC96C5795D7870F42  # ECMA-182, bit-reversed as OSS uses it
_DEFAULT_MAX_KEYS: Final = 100
_MAX_KEYS_LIMIT: Final = 1000
_MAX_KEY_BYTES: Final = 1023
_MAX_BODY: Final = 1 << 30
_V4_SCHEME: Final = "OSS4-HMAC-SHA256"
_V4_SAFE: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-~.")
# oss2's V1 whitelist (auth.ProviderAuth._subresource_key_set): only these enter the signature.
_SUBRESOURCE_NAMES: Final = (
    "response-content-type response-content-language response-cache-control logging "
    "response-content-encoding acl uploadId uploads partNumber group link delete website "
    "location objectInfo objectMeta response-expires response-content-disposition cors "
    "lifecycle restore qos referer stat bucketInfo append position security-token live comp "
    "status vod startTime endTime x-oss-process symlink callback callback-var tagging "
    "encryption versions versioning versionId policy requestPayment x-oss-traffic-limit "
    "qosInfo asyncFetch x-oss-request-payer sequential inventory inventoryId "
    "continuation-token worm wormId wormExtend replication replicationLocation "
    "replicationProgress transferAcceleration cname metaQuery x-oss-ac-source-ip "
    "x-oss-ac-subnet-mask x-oss-ac-vpc-id x-oss-ac-forward-allow resourceGroup style "
    "styleName x-oss-async-process regionList x-oss-write-get-object-response "
    "bucketArchiveDirectRead httpsConfig redundancyTransition x-oss-target-redundancy-type "
    "x-oss-redundancy-transition-taskid accessPoint accessPointPolicy publicAccessBlock "
    "x-oss-access-point-name requesterQosInfo qosRequester resourcePoolInfo resourcePool "
    "resourcePoolBuckets"
)
_SUBRESOURCES: Final = frozenset(_SUBRESOURCE_NAMES.split())


def _crc64_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC64_POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC64_TABLE: Final = _crc64_table()


def crc64ecma(data: bytes) -> int:
    """The CRC-64 OSS reports in `x-oss-hash-crc64ecma` (ECMA-182, reflected, all-ones)."""
    crc = _MASK64
    for byte in data:
        crc = _CRC64_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _MASK64


def http_date(moment: datetime) -> str:
    """`Sat, 05 Dec 2015 11:10:29 GMT`, the only Last-Modified form oss2 parses."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def iso_millis(moment: datetime) -> str:
    """`2015-12-05T11:10:29.000Z`, the only LastModified form oss2's list parser accepts."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _system_clock() -> datetime:
    return datetime.now(UTC)


# --- payloads OSS sends elsewhere ---------------------------------------------------------


def build_oss_record(  # noqa: PLR0917 - positional, in the order of the record's fields
    bucket: str,
    key: str,
    size: int,
    etag: str,
    event_name: str,
    region: str,
    account: str,
    time: datetime,
    *,
    request_id: str = "",
    mime_type: str = "application/octet-stream",
    user_meta: Mapping[str, str] | None = None,
    delta_size: int | None = None,
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """One legacy OSS event record (an MNS `events` item, or a CloudEvent's `data`)."""
    return {
        "eventName": event_name,
        "eventSource": "acs:oss",
        "eventTime": iso_millis(time),
        "eventVersion": "1.0",
        "region": region,
        "oss": {
            "bucket": {
                "name": bucket,
                "arn": f"acs:oss:{region}:{account}:{bucket}",
                "ownerIdentity": account,
                "virtualBucket": "",
            },
            "object": {
                "key": key,
                "size": size,
                "deltaSize": size if delta_size is None else delta_size,
                "eTag": etag.strip('"').upper(),
                "objectMeta": {"mimeType": mime_type, "userMeta": dict(user_meta or {})},
            },
            "ossSchemaVersion": "1.0",
        },
        "requestParameters": {"sourceIPAddress": source_ip},
        "responseElements": {"requestId": request_id},
        "userIdentity": {"principalId": account},
    }


def build_eventbridge_event(  # noqa: PLR0917 - positional, like build_oss_record
    bucket: str,
    key: str,
    size: int,
    etag: str,
    event_name: str,
    region: str,
    account: str,
    time: datetime,
    *,
    event_id: str | None = None,
    **record: Any,
) -> dict[str, Any]:
    """The CloudEvent EventBridge delivers for an OSS event (a "Complete Event" target).

    Extra keyword arguments (`request_id`, `mime_type`, `user_meta`, `delta_size`,
    `source_ip`) go to `build_oss_record`.
    """
    event_id = event_id or secrets.token_hex(12).upper()
    record.setdefault("request_id", event_id)
    data = build_oss_record(bucket, key, size, etag, event_name, region, account, time, **record)
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "acs.oss",
        "type": f"oss:{event_name}",
        "subject": f"acs:oss:{region}:{account}:{bucket}/{key}",
        "time": iso_millis(time),
        "datacontenttype": "application/json;charset=utf-8",
        "aliyunaccountid": account,
        "aliyunoriginalaccountid": account,
        "aliyunregionid": region,
        "aliyunpublishtime": iso_millis(time),
        "aliyuneventbusname": "default",
        "data": data,
    }


def build_mns_message(records: Sequence[Mapping[str, Any]]) -> str:
    """An OSS event-notification MNS message body: base64 of `{"events": [...]}`."""
    document = json.dumps({"events": list(records)}, ensure_ascii=False)
    return base64.b64encode(document.encode()).decode()


# --- storage --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    """One object as the server holds it; `etag` is upper-case hex without quotes."""

    key: str
    data: bytes
    content_type: str
    etag: str
    last_modified: datetime
    user_meta: Mapping[str, str]
    crc64: int

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server answered, for test assertions."""

    method: str
    bucket: str
    key: str
    operation: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    status: int


@dataclass
class _Match:
    """Which requests an injection applies to: `remaining` of them, after `skip` others."""

    method: str | None
    operation: str | None
    remaining: int = 1
    skip: int = 0

    def take(self, method: str, operation: str) -> bool:
        """Whether this request is one of them (and count it)."""
        if self.remaining <= 0 or self.method not in (None, method):
            return False
        if self.operation not in (None, operation):
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        self.remaining -= 1
        return True


@dataclass
class _Injection:
    status: int
    code: str
    message: str
    match: _Match


@dataclass
class _DateSkew:
    seconds: float
    match: _Match


@dataclass
class Hold:
    """A request the server keeps waiting until `release()`; `reached` is set meanwhile."""

    match: _Match
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.released.set()


class _Fault(Exception):
    """An OSS error reply; `extra` adds elements after HostId (as OSS does)."""

    def __init__(self, status: int, code: str, message: str, **extra: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.extra = status, code, message, extra


@dataclass
class _Page:
    contents: list[StoredObject] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    last: tuple[str, str] | None = None  # ("K", key) or ("P", common prefix)
    truncated: bool = False


def _successor(prefix: str) -> str:
    """The smallest string greater than every string that starts with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class _Bucket:
    """Objects of one bucket, keys kept sorted (code-point order is UTF-8 byte order)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.keys: list[str] = []
        self.objects: dict[str, StoredObject] = {}

    def put(self, obj: StoredObject) -> None:
        if obj.key not in self.objects:
            insort(self.keys, obj.key)
        self.objects[obj.key] = obj

    def delete(self, key: str) -> StoredObject | None:
        obj = self.objects.pop(key, None)
        if obj is not None:
            del self.keys[bisect_left(self.keys, key)]
        return obj

    def start_index(self, prefix: str, start_after: str, resume: tuple[str, str] | None) -> int:
        if resume is not None:
            kind, name = resume
            after = bisect_right(self.keys, name) if kind == "K" else self._skip(name)
        else:
            after = bisect_right(self.keys, start_after) if start_after else 0
        return max(after, bisect_left(self.keys, prefix))

    def _skip(self, common_prefix: str) -> int:
        return bisect_left(self.keys, _successor(common_prefix))

    def page(self, prefix: str, delimiter: str, index: int, max_keys: int) -> _Page:
        page, keys = _Page(), self.keys
        while len(page.contents) + len(page.prefixes) < max_keys and index < len(keys):
            key = keys[index]
            if not key.startswith(prefix):
                break
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[: cut + len(delimiter)]
                page.prefixes.append(common)
                page.last, index = ("P", common), self._skip(common)
            else:
                page.contents.append(self.objects[key])
                page.last, index = ("K", key), index + 1
        page.truncated = index < len(keys) and keys[index].startswith(prefix)
        return page


def _encode_token(last: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode((last[0] + last[1]).encode()).decode()


def _decode_token(token: str) -> tuple[str, str]:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise _Fault(400, "InvalidArgument", "The continuation token is invalid.") from exc
    if text[:1] not in ("K", "P") or len(text) < 2:
        raise _Fault(400, "InvalidArgument", "The continuation token is invalid.")
    return text[0], text[1:]


# --- signatures -----------------------------------------------------------------------------


def v1_string_to_sign(
    method: str, headers: Mapping[str, str], bucket: str, key: str, query: Mapping[str, str]
) -> bytes:
    """What oss2's `Auth` (V1) signs for this request."""
    lower = {name.lower(): value for name, value in headers.items()}
    oss_headers = sorted((k, v) for k, v in lower.items() if k.startswith("x-oss-"))
    canonical_headers = "".join(f"{k}:{v}\n" for k, v in oss_headers)
    subresources = sorted((k, v) for k, v in query.items() if k in _SUBRESOURCES)
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


@dataclass(frozen=True)
class _Target:
    method: str
    bucket: str
    key: str
    query: dict[str, str]
    headers: Mapping[str, str]

    @property
    def operation(self) -> str:
        if not self.bucket:
            return "ListBuckets"
        if not self.key:
            listing = self.method == "GET" and self.query.get("list-type") == "2"
            return "ListObjectsV2" if listing else f"{self.method}Bucket"
        if self.method == "HEAD" and "objectMeta" in self.query:
            return "GetObjectMeta"
        if set(self.query) & _SUBRESOURCES:
            return f"{self.method}ObjectSubresource"
        names = {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject"}
        return names.get(self.method, "DeleteObject" if self.method == "DELETE" else "Unknown")


def _target(request: web.Request) -> _Target:
    bucket, _, key = request.rel_url.raw_path.lstrip("/").partition("/")
    query = dict(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True))
    return _Target(request.method, unquote(bucket), unquote(key), query, request.headers)


class _Authenticator:
    """Checks V1 and V4 signatures and STS tokens the way OSS does."""

    def __init__(self, credentials: Credentials, region: str, allow_anonymous: bool) -> None:
        self._credentials = credentials
        self._region = region
        self._allow_anonymous = allow_anonymous

    def check(self, target: _Target) -> None:
        header = target.headers.get("Authorization")
        if header is None:
            if not self._allow_anonymous:
                raise _Fault(403, "AccessDenied", "You have no right to access this object.")
            return
        scheme, _, rest = header.partition(" ")
        if scheme == "OSS":
            self._check_v1(rest.strip(), target)
        elif scheme == _V4_SCHEME:
            self._check_v4(rest.strip(), target)
        else:
            raise _Fault(400, "InvalidArgument", "Authorization header is invalid.")

    def _secret(self, access_key: str, target: _Target) -> str:
        configured = self._credentials.get(access_key)
        if configured is None:
            raise _Fault(
                403,
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
                OSSAccessKeyId=access_key,
            )
        secret, token = (configured, None) if isinstance(configured, str) else configured
        if target.headers.get("x-oss-security-token") != token:
            raise _Fault(403, "InvalidAccessKeyId", "The security token you provided is invalid.")
        return secret

    def _check_v1(self, credential: str, target: _Target) -> None:
        access_key, _, provided = credential.rpartition(":")
        secret = self._secret(access_key, target)
        to_sign = v1_string_to_sign(
            target.method, target.headers, target.bucket, target.key, target.query
        )
        if not hmac.compare_digest(v1_signature(secret, to_sign), provided):
            raise self._mismatch(access_key, provided, to_sign.decode(errors="replace"))

    def _check_v4(self, rest: str, target: _Target) -> None:
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
            raise _Fault(
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
    def _mismatch(access_key: str, provided: str, signed: str) -> _Fault:
        return _Fault(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            OSSAccessKeyId=access_key,
            SignatureProvided=provided,
            StringToSign=signed,
        )


# --- responses ------------------------------------------------------------------------------


def _xml_document(root: ET.Element) -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode").encode()
    )


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = text
    return child


def error_xml(code: str, message: str, request_id: str, host_id: str, **extra: str) -> bytes:
    """OSS's error body: Code, Message, RequestId, HostId, then any extra elements."""
    elements = {"Code": code, "Message": message, "RequestId": request_id, "HostId": host_id}
    body = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in {**elements, **extra}.items())
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{body}</Error>\n'.encode()


def _object_headers(obj: StoredObject) -> dict[str, str]:
    headers = {
        "Content-Type": obj.content_type,
        "ETag": f'"{obj.etag}"',
        "Last-Modified": http_date(obj.last_modified),
        "x-oss-object-type": "Normal",
        "x-oss-storage-class": "Standard",
        "x-oss-hash-crc64ecma": str(obj.crc64),
        "Accept-Ranges": "bytes",
    }
    headers.update(obj.user_meta)
    return headers


@dataclass(frozen=True)
class _ListQuery:
    prefix: str
    delimiter: str
    start_after: str
    token: str
    max_keys: int
    fetch_owner: bool
    url_encoded: bool

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> _ListQuery:
        raw_max = query.get("max-keys") or str(_DEFAULT_MAX_KEYS)
        if not raw_max.isdigit() or int(raw_max) < 1:
            raise _Fault(400, "InvalidArgument", f"max-keys {raw_max!r} is not a positive number.")
        encoding = query.get("encoding-type", "")
        if encoding not in ("", "url"):
            raise _Fault(400, "InvalidArgument", f"Unsupported encoding-type {encoding!r}.")
        return cls(
            prefix=query.get("prefix", ""),
            delimiter=query.get("delimiter", ""),
            start_after=query.get("start-after", ""),
            token=query.get("continuation-token", ""),
            max_keys=min(int(raw_max), _MAX_KEYS_LIMIT),
            fetch_owner=query.get("fetch-owner", "false").lower() == "true",
            url_encoded=encoding == "url",
        )

    def encode(self, text: str) -> str:
        return quote(text, safe="") if self.url_encoded else text


def _list_xml(bucket: str, q: _ListQuery, page: _Page, account: str) -> bytes:
    root = ET.Element("ListBucketResult")
    _text(root, "Name", bucket)
    _text(root, "Prefix", q.encode(q.prefix))
    if q.token:
        _text(root, "ContinuationToken", q.encode(q.token))
    _text(root, "MaxKeys", str(q.max_keys))
    _text(root, "Delimiter", q.encode(q.delimiter))
    if q.start_after:
        _text(root, "StartAfter", q.encode(q.start_after))
    if q.url_encoded:
        _text(root, "EncodingType", "url")
    _text(root, "IsTruncated", "true" if page.truncated else "false")
    if page.truncated and page.last is not None:
        _text(root, "NextContinuationToken", q.encode(_encode_token(page.last)))
    _text(root, "KeyCount", str(len(page.contents) + len(page.prefixes)))
    for obj in page.contents:
        contents = ET.SubElement(root, "Contents")
        _text(contents, "Key", q.encode(obj.key))
        _text(contents, "LastModified", iso_millis(obj.last_modified))
        _text(contents, "ETag", f'"{obj.etag}"')
        _text(contents, "Type", "Normal")
        _text(contents, "Size", str(obj.size))
        _text(contents, "StorageClass", "Standard")
        if q.fetch_owner:
            owner = ET.SubElement(contents, "Owner")
            _text(owner, "ID", account)
            _text(owner, "DisplayName", account)
    for common in page.prefixes:
        _text(ET.SubElement(root, "CommonPrefixes"), "Prefix", q.encode(common))
    return _xml_document(root)


# --- the server -----------------------------------------------------------------------------


class OssServer(Served):
    """An in-memory, path-style OSS endpoint on a loopback port.

    `credentials` maps AccessKeyId to its secret, or to `(secret, security_token)` for STS
    credentials (the token must then accompany every request). Requests without an
    `Authorization` header are refused unless `allow_anonymous`. `clock` stamps
    Last-Modified (seconds precision, as OSS).
    """

    def __init__(
        self,
        buckets: Iterable[str] = (),
        *,
        credentials: Credentials | None = None,
        region: str = "cn-hangzhou",
        account: str = DEFAULT_ACCOUNT,
        allow_anonymous: bool = False,
        eventbridge_url: str | None = None,
        eventbridge_token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = _system_clock,
    ) -> None:
        self.region, self.account = region, account
        self._auth = _Authenticator(credentials or {}, region, allow_anonymous)
        self._buckets: dict[str, _Bucket] = {}
        for name in buckets:
            self.create_bucket(name)
        self._eventbridge_url, self._eventbridge_token = eventbridge_url, eventbridge_token
        self._host, self._port, self._clock = host, port, clock
        self._injections: list[_Injection] = []
        self._skews: list[_DateSkew] = []
        self._holds: list[Hold] = []
        self._requests: list[RecordedRequest] = []
        self._pushes: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._endpoint: str | None = None

    # --- lifecycle

    @property
    def endpoint(self) -> str:
        """`http://127.0.0.1:PORT`, the endpoint to give `oss2.Bucket`."""
        if self._endpoint is None:
            raise RuntimeError("the OSS server is not started")
        return self._endpoint

    async def start(self) -> None:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        host, port = self._runner.addresses[0][:2]
        self._endpoint = f"http://{host}:{port}"
        if self._eventbridge_url:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def stop(self) -> None:
        for hold in self._holds:
            hold.release()
        await self.flush_events()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def flush_events(self) -> None:
        """Wait until every EventBridge push started so far has finished."""
        while self._pushes:
            await asyncio.gather(*self._pushes, return_exceptions=True)

    # --- seeding and inspection

    def create_bucket(self, name: str) -> None:
        self._buckets.setdefault(name, _Bucket(name))

    def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        user_meta: Mapping[str, str] | None = None,
        last_modified: datetime | None = None,
    ) -> StoredObject:
        """Store an object directly (no request is logged, no event is pushed)."""
        obj = StoredObject(
            key=key,
            data=data,
            content_type=content_type,
            etag=hashlib.md5(data).hexdigest().upper(),  # noqa: S324 - OSS ETags are MD5
            last_modified=(last_modified or self._clock()).astimezone(UTC).replace(microsecond=0),
            user_meta={k.lower(): v for k, v in (user_meta or {}).items()},
            crc64=crc64ecma(data),
        )
        self._bucket(bucket).put(obj)
        return obj

    def get_object(self, bucket: str, key: str) -> StoredObject | None:
        return self._bucket(bucket).objects.get(key)

    def delete_object(self, bucket: str, key: str) -> bool:
        return self._bucket(bucket).delete(key) is not None

    def keys(self, bucket: str) -> list[str]:
        """The bucket's keys in listing order."""
        return list(self._bucket(bucket).keys)

    def inject(
        self,
        status: int,
        code: str,
        *,
        count: int = 1,
        method: str | None = None,
        operation: str | None = None,
        message: str = "Injected failure.",
        after: int = 0,
    ) -> None:
        """Fail the next `count` requests matching `method`/`operation` with an OSS error,
        after letting `after` of them through."""
        match = _Match(method, operation, count, after)
        self._injections.append(_Injection(status, code, message, match))

    def skew_date(
        self,
        seconds: float,
        *,
        count: int = 1,
        method: str | None = None,
        operation: str | None = None,
        after: int = 0,
    ) -> None:
        """Answer the next `count` matching requests (after `after` others) with a `Date`
        `seconds` off the server's clock."""
        self._skews.append(_DateSkew(seconds, _Match(method, operation, count, after)))

    def hold(
        self, *, method: str | None = None, operation: str | None = None, after: int = 0
    ) -> Hold:
        """Keep the next matching request (after `after` others) waiting until the returned
        hold is released (or the server stops)."""
        hold = Hold(_Match(method, operation, 1, after))
        self._holds.append(hold)
        return hold

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self._requests)

    def count(
        self,
        *,
        method: str | None = None,
        operation: str | None = None,
        bucket: str | None = None,
        key: str | None = None,
        status: int | None = None,
    ) -> int:
        """How many logged requests match every given attribute."""
        wanted = {
            "method": method,
            "operation": operation,
            "bucket": bucket,
            "key": key,
            "status": status,
        }
        return sum(
            all(v is None or getattr(r, k) == v for k, v in wanted.items()) for r in self._requests
        )

    # --- request handling

    def _bucket(self, name: str) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            raise _Fault(
                404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=name
            )
        return bucket

    def _check_injection(self, target: _Target) -> None:
        for injection in self._injections:
            if injection.match.take(target.method, target.operation):
                raise _Fault(injection.status, injection.code, injection.message)

    async def _wait_if_held(self, target: _Target) -> None:
        for hold in self._holds:
            if hold.match.take(target.method, target.operation):
                hold.reached.set()
                await hold.released.wait()

    def _date(self, target: _Target) -> str:
        method, operation = target.method, target.operation
        offset = sum(s.seconds for s in self._skews if s.match.take(method, operation))
        return http_date(self._clock() + timedelta(seconds=offset))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        request_id = secrets.token_hex(12).upper()
        target = _target(request)
        await self._wait_if_held(target)
        try:
            self._check_injection(target)
            self._auth.check(target)
            response = await self._dispatch(target, request, request_id)
        except _Fault as fault:
            response = self._error(fault, target, request_id)
        response.headers["x-oss-request-id"] = request_id
        response.headers["Server"] = "AliyunOSS"
        response.headers["Date"] = self._date(target)
        self._requests.append(
            RecordedRequest(
                target.method,
                target.bucket,
                target.key,
                target.operation,
                target.query,
                dict(request.headers),
                response.status,
            )
        )
        return response

    async def _dispatch(
        self, target: _Target, request: web.Request, request_id: str
    ) -> web.Response:
        operation = target.operation
        if operation == "PutObject":
            return await self._put(target, request, request_id)
        if operation == "ListObjectsV2":
            return self._list(target)
        if operation == "DeleteObject":
            return self._delete(target, request_id)
        if operation in ("GetObject", "HeadObject", "GetObjectMeta"):
            return self._read(target)
        raise _Fault(501, "NotImplemented", f"{operation} is not implemented by this server.")

    async def _put(self, target: _Target, request: web.Request, request_id: str) -> web.Response:
        bucket = self._bucket(target.bucket)
        if len(target.key.encode()) > _MAX_KEY_BYTES:
            raise _Fault(400, "InvalidObjectName", "The object name is too long.")
        data = await request.read()
        md5 = hashlib.md5(data).digest()  # noqa: S324 - OSS's Content-MD5 is MD5
        sent_md5 = target.headers.get("Content-MD5")
        if sent_md5 is not None and sent_md5 != base64.b64encode(md5).decode():
            raise _Fault(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
        meta = {
            k.lower(): v for k, v in target.headers.items() if k.lower().startswith("x-oss-meta-")
        }
        content_type = target.headers.get("Content-Type", "application/octet-stream")
        obj = self.put_object(
            bucket.name, target.key, data, content_type=content_type, user_meta=meta
        )
        self._notify(obj, bucket.name, "ObjectCreated:PutObject", request_id, obj.size)
        return web.Response(
            headers={
                "ETag": f'"{obj.etag}"',
                "Content-MD5": base64.b64encode(md5).decode(),
                "x-oss-hash-crc64ecma": str(obj.crc64),
            }
        )

    def _read(self, target: _Target) -> web.Response:
        obj = self._bucket(target.bucket).objects.get(target.key)
        if obj is None:
            raise _Fault(404, "NoSuchKey", "The specified key does not exist.", Key=target.key)
        if target.operation == "GetObjectMeta":
            return web.Response(
                headers={
                    "ETag": f'"{obj.etag}"',
                    "Content-Length": str(obj.size),
                    "Last-Modified": http_date(obj.last_modified),
                }
            )
        headers = _object_headers(obj)
        if target.operation == "HeadObject":
            return web.Response(headers={**headers, "Content-Length": str(obj.size)})
        return web.Response(body=obj.data, headers=headers)

    def _delete(self, target: _Target, request_id: str) -> web.Response:
        bucket = self._bucket(target.bucket)
        removed = bucket.delete(target.key)
        if removed is not None:
            self._notify(removed, bucket.name, "ObjectRemoved:DeleteObject", request_id, 0)
        return web.Response(status=204)

    def _list(self, target: _Target) -> web.Response:
        bucket = self._bucket(target.bucket)
        q = _ListQuery.parse(target.query)
        resume = _decode_token(q.token) if q.token else None
        index = bucket.start_index(q.prefix, q.start_after, resume)
        page = bucket.page(q.prefix, q.delimiter, index, q.max_keys)
        body = _list_xml(bucket.name, q, page, self.account)
        return web.Response(body=body, content_type="application/xml")

    def _error(self, fault: _Fault, target: _Target, request_id: str) -> web.Response:
        host = f"oss-{self.region}.aliyuncs.com"
        host_id = f"{target.bucket}.{host}" if target.bucket else host
        body = error_xml(fault.code, fault.message, request_id, host_id, **fault.extra)
        if target.method == "HEAD":
            encoded = base64.b64encode(body).decode()
            return web.Response(status=fault.status, headers={"x-oss-err": encoded})
        return web.Response(status=fault.status, body=body, content_type="application/xml")

    # --- EventBridge pushes

    def _notify(
        self, obj: StoredObject, bucket: str, event_name: str, request_id: str, size: int
    ) -> None:
        if self._session is None or self._eventbridge_url is None:
            return
        event = build_eventbridge_event(
            bucket,
            obj.key,
            size,
            obj.etag,
            event_name,
            self.region,
            self.account,
            self._clock(),
            event_id=request_id,
            mime_type=obj.content_type,
            user_meta=obj.user_meta,
            delta_size=size if size else -obj.size,
        )
        push = self._push(self._session, self._eventbridge_url, event)
        task = asyncio.create_task(push, name=f"oss-push-{request_id}")
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def _push(self, session: aiohttp.ClientSession, url: str, event: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/json;charset=utf-8"}
        if self._eventbridge_token:
            headers["x-eventbridge-signature-token"] = self._eventbridge_token
        body = json.dumps(event, ensure_ascii=False).encode()
        try:
            async with session.post(url, data=body, headers=headers) as reply:
                if reply.status >= 300:
                    LOG.warning("eventbridge push refused", status=reply.status, id=event["id"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            LOG.warning("eventbridge push failed", error=str(exc), id=event["id"])


# --- standalone ---------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve an in-memory OSS endpoint.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--bucket", action="append", default=[], help="repeatable")
    parser.add_argument("--ak", help="AccessKeyId accepted")
    parser.add_argument("--sk", help="its AccessKeySecret")
    parser.add_argument("--region", default="cn-hangzhou")
    parser.add_argument("--anonymous", action="store_true", help="accept unsigned requests")
    parser.add_argument("--eventbridge-url", help="POST an EventBridge CloudEvent here")
    parser.add_argument("--eventbridge-token", help="sent as x-eventbridge-signature-token")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    credentials = {args.ak: args.sk} if args.ak and args.sk else {}
    server = OssServer(
        args.bucket,
        credentials=credentials,
        region=args.region,
        allow_anonymous=args.anonymous or not credentials,
        host=args.host,
        port=args.port,
        eventbridge_url=args.eventbridge_url,
        eventbridge_token=args.eventbridge_token,
    )
    stopped = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stopped.set)
    async with server:
        sys.stdout.write(f"READY {server.endpoint}\n")
        sys.stdout.flush()
        await stopped.wait()


def main(argv: Sequence[str] | None = None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
