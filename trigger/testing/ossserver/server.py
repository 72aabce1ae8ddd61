"""`OssServer`: the OSS endpoint as tests hold it.

It serves buckets on a loopback port through aiohttp: each request is matched against the
injected faults, authenticated, dispatched to its operation (PutObject, GetObject,
HeadObject, GetObjectMeta, DeleteObject, ListObjectsV2), logged, and answered with OSS's
headers and a `Date` from the server's clock. Tests seed and inspect objects directly and
count requests; writes are pushed to EventBridge when a URL is given.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from aiohttp import web

from trigger.testing.ossserver.errors import Fault, error_xml
from trigger.testing.ossserver.events import build_eventbridge_event
from trigger.testing.ossserver.faults import DateSkew, Hold, Injection, Match
from trigger.testing.ossserver.listing import list_objects
from trigger.testing.ossserver.objects import (
    Bucket,
    StoredObject,
    crc64ecma,
    http_date,
    object_headers,
)
from trigger.testing.ossserver.operations import Target, target_of
from trigger.testing.ossserver.push import Pusher
from trigger.testing.ossserver.signatures import Authenticator, Credentials
from trigger.testing.served import Served

Clock = Callable[[], datetime]

DEFAULT_ACCOUNT: Final = "1234567890123456"
_MAX_KEY_BYTES: Final = 1023
_MAX_BODY: Final = 1 << 30


def _system_clock() -> datetime:
    return datetime.now(UTC)


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
        self._auth = Authenticator(credentials or {}, region, allow_anonymous)
        self._buckets: dict[str, Bucket] = {}
        for name in buckets:
            self.create_bucket(name)
        self._pusher = Pusher(eventbridge_url, eventbridge_token)
        self._host, self._port, self._clock = host, port, clock
        self._injections: list[Injection] = []
        self._skews: list[DateSkew] = []
        self._holds: list[Hold] = []
        self._requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
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
        self._pusher.start()

    async def stop(self) -> None:
        for hold in self._holds:
            hold.release()
        await self._pusher.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def flush_events(self) -> None:
        """Wait until every EventBridge push started so far has finished."""
        await self._pusher.flush()

    # --- seeding and inspection

    def create_bucket(self, name: str) -> None:
        self._buckets.setdefault(name, Bucket(name))

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
        match = Match(method, operation, count, after)
        self._injections.append(Injection(status, code, message, match))

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
        self._skews.append(DateSkew(seconds, Match(method, operation, count, after)))

    def hold(
        self, *, method: str | None = None, operation: str | None = None, after: int = 0
    ) -> Hold:
        """Keep the next matching request (after `after` others) waiting until the returned
        hold is released (or the server stops)."""
        hold = Hold(Match(method, operation, 1, after))
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

    def _bucket(self, name: str) -> Bucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            raise Fault(
                404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=name
            )
        return bucket

    def _check_injection(self, target: Target) -> None:
        for injection in self._injections:
            if injection.match.take(target.method, target.operation):
                raise Fault(injection.status, injection.code, injection.message)

    async def _wait_if_held(self, target: Target) -> None:
        for hold in self._holds:
            if hold.match.take(target.method, target.operation):
                hold.reached.set()
                await hold.released.wait()

    def _date(self, target: Target) -> str:
        method, operation = target.method, target.operation
        offset = sum(s.seconds for s in self._skews if s.match.take(method, operation))
        return http_date(self._clock() + timedelta(seconds=offset))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        request_id = secrets.token_hex(12).upper()
        target = target_of(request)
        await self._wait_if_held(target)
        try:
            self._check_injection(target)
            self._auth.check(target)
            response = await self._dispatch(target, request, request_id)
        except Fault as fault:
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
        self, target: Target, request: web.Request, request_id: str
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
        raise Fault(501, "NotImplemented", f"{operation} is not implemented by this server.")

    async def _put(self, target: Target, request: web.Request, request_id: str) -> web.Response:
        bucket = self._bucket(target.bucket)
        if len(target.key.encode()) > _MAX_KEY_BYTES:
            raise Fault(400, "InvalidObjectName", "The object name is too long.")
        data = await request.read()
        md5 = hashlib.md5(data).digest()  # noqa: S324 - OSS's Content-MD5 is MD5
        sent_md5 = target.headers.get("Content-MD5")
        if sent_md5 is not None and sent_md5 != base64.b64encode(md5).decode():
            raise Fault(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
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

    def _read(self, target: Target) -> web.Response:
        obj = self._bucket(target.bucket).objects.get(target.key)
        if obj is None:
            raise Fault(404, "NoSuchKey", "The specified key does not exist.", Key=target.key)
        if target.operation == "GetObjectMeta":
            return web.Response(
                headers={
                    "ETag": f'"{obj.etag}"',
                    "Content-Length": str(obj.size),
                    "Last-Modified": http_date(obj.last_modified),
                }
            )
        headers = object_headers(obj)
        if target.operation == "HeadObject":
            return web.Response(headers={**headers, "Content-Length": str(obj.size)})
        return web.Response(body=obj.data, headers=headers)

    def _delete(self, target: Target, request_id: str) -> web.Response:
        bucket = self._bucket(target.bucket)
        removed = bucket.delete(target.key)
        if removed is not None:
            self._notify(removed, bucket.name, "ObjectRemoved:DeleteObject", request_id, 0)
        return web.Response(status=204)

    def _list(self, target: Target) -> web.Response:
        bucket = self._bucket(target.bucket)
        body = list_objects(bucket, target.query, self.account)
        return web.Response(body=body, content_type="application/xml")

    def _error(self, fault: Fault, target: Target, request_id: str) -> web.Response:
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
        if not self._pusher.active:
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
        self._pusher.send(event, name=f"oss-push-{request_id}")
