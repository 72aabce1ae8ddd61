"""The OSS-compatible test server, driven by the real (blocking) oss2 client in a thread."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import oss2
import pytest
from aiohttp import web

from trigger.testing.ossserver import (
    DEFAULT_ACCOUNT,
    OssServer,
    build_eventbridge_event,
    build_mns_message,
    crc64ecma,
)

AK, SK = "AKIDEXAMPLE", "SECRETEXAMPLE"
STS_AK, STS_SK, STS_TOKEN = "STS.AKID", "STSSECRET", "CAIS-security-token+/="
REGION, BUCKET = "cn-hangzhou", "bucket"
REPO = Path(__file__).resolve().parents[2]
DEADLINE = 30.0  # seconds: a hang fails the test instead of stalling the suite
AWKWARD_KEYS = [
    "with space.csv",
    "plus+sign.csv",
    "unicodé/文件 名.csv",
    "percent%20literal.csv",
    "lone%percent",
    "nested/dir/file?.csv",
    "amp&eq=hash#.csv",
    "tilde~star*'quote'.csv",
]


@pytest.fixture
async def oss() -> AsyncIterator[OssServer]:
    credentials = {AK: SK, STS_AK: (STS_SK, STS_TOKEN)}
    async with OssServer([BUCKET], credentials=credentials, region=REGION) as server:
        yield server


def make_bucket(
    server: OssServer, auth: Any = None, name: str = BUCKET, region: str = REGION
) -> oss2.Bucket:
    auth = auth if auth is not None else oss2.Auth(AK, SK)
    return oss2.Bucket(auth, server.endpoint, name, region=region, connect_timeout=DEADLINE)


@pytest.fixture
def bucket(oss: OssServer) -> oss2.Bucket:
    return make_bucket(oss)


async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.wait_for(asyncio.to_thread(function, *args, **kwargs), DEADLINE)


async def list_all(bucket: oss2.Bucket, **kwargs: Any) -> list[Any]:
    return await call(lambda: list(oss2.ObjectIteratorV2(bucket, **kwargs)))


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest().upper()


# --- objects ---------------------------------------------------------------------------------


async def test_put_then_get_returns_bytes_type_and_user_metadata(bucket: oss2.Bucket) -> None:
    """GetObject returns what PutObject stored: bytes, content type and x-oss-meta-*."""
    headers = {"Content-Type": "text/csv", "x-oss-meta-origin": "uploader"}
    await call(bucket.put_object, "in/a.csv", b"a,b\n1,2\n", headers=headers)
    result = await call(bucket.get_object, "in/a.csv")
    body = await call(result.read)
    assert (body, result.content_type) == (b"a,b\n1,2\n", "text/csv")
    assert result.headers["x-oss-meta-origin"] == "uploader"


async def test_put_reports_md5_etag_and_crc64(bucket: oss2.Bucket) -> None:
    """PutObject answers with the upper-case MD5 ETag and the CRC-64 oss2 computes."""
    data = os.urandom(4096)
    result = await call(bucket.put_object, "blob.bin", data)
    expected_crc = oss2.utils.Crc64()
    expected_crc.update(data)
    assert (result.etag, result.crc) == (md5_hex(data), expected_crc.crc)


async def test_head_object_reports_what_oss2_reads(oss: OssServer, bucket: oss2.Bucket) -> None:
    """HeadObject carries size, type, ETag, Last-Modified, object type, CRC and metadata."""
    moment = datetime(2015, 12, 5, 11, 10, 29, tzinfo=UTC)
    oss.put_object(
        BUCKET,
        "k",
        b"12345",
        content_type="text/plain",
        user_meta={"x-oss-meta-Team": "data"},
        last_modified=moment,
    )
    head = await call(bucket.head_object, "k")
    assert (head.content_length, head.content_type, head.etag) == (
        5,
        "text/plain",
        md5_hex(b"12345"),
    )
    assert (head.last_modified, head.object_type) == (int(moment.timestamp()), "Normal")
    assert head.server_crc == crc64ecma(b"12345")
    assert head.headers["x-oss-meta-team"] == "data"
    assert head.headers["x-oss-storage-class"] == "Standard"
    assert head.request_id


async def test_get_object_meta_reports_size_etag_and_time(
    oss: OssServer, bucket: oss2.Bucket
) -> None:
    """GetObjectMeta (HEAD ?objectMeta) carries size, ETag and Last-Modified."""
    stored = oss.put_object(BUCKET, "k", b"abc")
    meta = await call(bucket.get_object_meta, "k")
    assert (meta.content_length, meta.etag) == (3, stored.etag)
    assert meta.last_modified == int(stored.last_modified.timestamp())
    assert oss.count(operation="GetObjectMeta") == 1


async def test_delete_object_answers_204_and_removes_it(
    oss: OssServer, bucket: oss2.Bucket
) -> None:
    """DeleteObject answers 204 and the object is gone."""
    oss.put_object(BUCKET, "k", b"x")
    result = await call(bucket.delete_object, "k")
    assert result.status == 204
    assert not await call(bucket.object_exists, "k")


async def test_wrong_content_md5_is_invalid_digest(oss: OssServer, bucket: oss2.Bucket) -> None:
    """A PutObject whose Content-MD5 does not match its body is refused and stores nothing."""
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(oss2.exceptions.InvalidDigest):
        await call(bucket.put_object, "k", b"data", headers={"Content-MD5": bad})
    assert oss.get_object(BUCKET, "k") is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (b"123456789", 0x995DC9BBDF1939FA),
        (b"\x00" * 1000, None),
        (bytes(range(256)), None),
    ],
)
def test_crc64_matches_oss2(data: bytes, expected: int | None) -> None:
    """crc64ecma agrees with oss2's Crc64 (and with the CRC-64/XZ check value)."""
    reference = oss2.utils.Crc64()
    reference.update(data)
    assert crc64ecma(data) == reference.crc
    if expected is not None:
        assert crc64ecma(data) == expected


# --- listing ---------------------------------------------------------------------------------


async def test_list_pages_2500_objects_in_three_requests(
    oss: OssServer, bucket: oss2.Bucket
) -> None:
    """ObjectIteratorV2 with max_keys=1000 reads 2,500 keys in order over three pages."""
    keys = [f"in/{n:05d}.csv" for n in range(2500)]
    for key in reversed(keys):
        oss.put_object(BUCKET, key, b"x")
    listed = await list_all(bucket, prefix="in/", max_keys=1000)
    assert [o.key for o in listed] == keys
    assert oss.count(operation="ListObjectsV2", status=200) == 3


async def test_list_reports_size_etag_and_time(oss: OssServer, bucket: oss2.Bucket) -> None:
    """A listed object carries its size, ETag, Last-Modified, type and storage class."""
    stored = oss.put_object(BUCKET, "k", b"hello")
    [info] = await list_all(bucket)
    assert (info.size, info.etag, info.type, info.storage_class) == (
        5,
        stored.etag,
        "Normal",
        "Standard",
    )
    assert info.last_modified == int(stored.last_modified.timestamp())


async def test_list_orders_keys_by_utf8_bytes(oss: OssServer, bucket: oss2.Bucket) -> None:
    """Keys list in UTF-8 byte order whatever order they were written in."""
    keys = ["é", "z", "A", "a/b", "a", "文", "a b"]
    for key in keys:
        oss.put_object(BUCKET, key, b"")
    listed = [o.key for o in await list_all(bucket)]
    assert listed == sorted(keys, key=lambda k: k.encode())


@pytest.mark.parametrize("encoding", ["url", ""])
@pytest.mark.parametrize("key", AWKWARD_KEYS)
async def test_awkward_keys_round_trip(bucket: oss2.Bucket, key: str, encoding: str) -> None:
    """Keys with spaces, `+`, `%`, unicode and reserved characters put, list and get back exactly."""
    await call(bucket.put_object, key, b"payload")
    result = await call(bucket.list_objects_v2, prefix=key, encoding_type=encoding)
    assert [o.key for o in result.object_list] == [key]
    assert await call(lambda: bucket.get_object(key).read()) == b"payload"


async def test_url_encoding_applies_to_keys_prefixes_and_tokens() -> None:
    """With encoding-type=url the raw XML carries %-encoded Key, Prefix and token."""
    query = "list-type=2&prefix=d%20ir%2F&max-keys=1&encoding-type=url"
    async with OssServer([BUCKET], allow_anonymous=True) as server:
        server.put_object(BUCKET, "d ir/a+b", b"")
        server.put_object(BUCKET, "d ir/c d", b"")
        url = f"{server.endpoint}/{BUCKET}/?{query}"
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            root = ET.fromstring(await reply.read())
    assert root.findtext("Prefix") == "d%20ir%2F"
    assert root.findtext("Contents/Key") == "d%20ir%2Fa%2Bb"
    assert root.findtext("KeyCount") == "1"
    assert "=" not in (root.findtext("NextContinuationToken") or "=")


async def test_delimiter_groups_common_prefixes(oss: OssServer, bucket: oss2.Bucket) -> None:
    """With a delimiter, keys below it collapse into CommonPrefixes."""
    for key in ["a.csv", "dir1/x", "dir1/y", "dir2/z", "dir2/sub/q", "e.csv"]:
        oss.put_object(BUCKET, key, b"")
    result = await call(bucket.list_objects_v2, delimiter="/")
    assert [o.key for o in result.object_list] == ["a.csv", "e.csv"]
    assert result.prefix_list == ["dir1/", "dir2/"]


async def test_delimiter_paging_yields_each_prefix_once(
    oss: OssServer, bucket: oss2.Bucket
) -> None:
    """Paging one entry at a time never repeats a common prefix nor loses a key."""
    for key in ["a/1", "a/2", "a/3", "b", "c/1", "c/2", "d"]:
        oss.put_object(BUCKET, key, b"")
    listed = await list_all(bucket, delimiter="/", max_keys=1)
    assert [(o.key, o.is_prefix()) for o in listed] == [
        ("a/", True),
        ("b", False),
        ("c/", True),
        ("d", False),
    ]


async def test_key_ending_in_delimiter_under_prefix_is_an_object(
    oss: OssServer, bucket: oss2.Bucket
) -> None:
    """A key equal to prefix+delimiter is listed as an object, and paging continues after it."""
    for key in ["dir/", "dir/a", "dir/sub/b"]:
        oss.put_object(BUCKET, key, b"")
    listed = await list_all(bucket, prefix="dir/", delimiter="/", max_keys=1)
    assert [(o.key, o.is_prefix()) for o in listed] == [
        ("dir/", False),
        ("dir/a", False),
        ("dir/sub/", True),
    ]


async def test_start_after_skips_earlier_keys(oss: OssServer, bucket: oss2.Bucket) -> None:
    """start-after lists only keys strictly after it."""
    for key in ["k1", "k2", "k3", "k4"]:
        oss.put_object(BUCKET, key, b"")
    listed = await list_all(bucket, start_after="k2")
    assert [o.key for o in listed] == ["k3", "k4"]


async def test_max_keys_is_capped_at_1000(oss: OssServer, bucket: oss2.Bucket) -> None:
    """A max-keys above 1000 returns at most 1000 entries and a truncated result."""
    for n in range(1200):
        oss.put_object(BUCKET, f"{n:04d}", b"")
    result = await call(bucket.list_objects_v2, max_keys=5000)
    assert (len(result.object_list), result.is_truncated) == (1000, True)


async def test_fetch_owner_adds_owner(oss: OssServer, bucket: oss2.Bucket) -> None:
    """fetch-owner=true adds each object's Owner."""
    oss.put_object(BUCKET, "k", b"")
    result = await call(bucket.list_objects_v2, fetch_owner=True)
    assert result.object_list[0].owner.id == DEFAULT_ACCOUNT


async def test_invalid_continuation_token_is_invalid_argument(bucket: oss2.Bucket) -> None:
    """A continuation token the server never issued is refused with 400 InvalidArgument."""
    with pytest.raises(oss2.exceptions.InvalidArgument):
        await call(bucket.list_objects_v2, continuation_token="!!not-a-token!!")


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(lambda: oss2.Auth(AK, SK), id="v1"),
        pytest.param(lambda: oss2.AuthV4(AK, SK), id="v4"),
        pytest.param(lambda: oss2.StsAuth(STS_AK, STS_SK, STS_TOKEN), id="sts-v1"),
        pytest.param(
            lambda: oss2.StsAuth(STS_AK, STS_SK, STS_TOKEN, auth_version="v4"), id="sts-v4"
        ),
    ],
)
async def test_signed_requests_succeed(oss: OssServer, auth: Callable[[], Any]) -> None:
    """V1, V4 and STS-signed put, head, meta, list and delete all pass the signature check."""
    bucket = make_bucket(oss, auth())
    headers = {"Content-Type": "text/csv", "x-oss-meta-a": "b"}
    await call(bucket.put_object, "dir/a b+c.csv", b"1", headers=headers)
    await call(bucket.head_object, "dir/a b+c.csv")
    await call(bucket.get_object_meta, "dir/a b+c.csv")
    listed = await call(bucket.list_objects_v2, prefix="dir/", delimiter="/", start_after="d")
    await call(bucket.delete_object, "dir/a b+c.csv")
    assert [o.key for o in listed.object_list] == ["dir/a b+c.csv"]
    assert oss.count(status=403) == 0


@pytest.mark.parametrize("auth_class", [oss2.Auth, oss2.AuthV4])
async def test_wrong_secret_is_signature_mismatch(oss: OssServer, auth_class: type) -> None:
    """A request signed with the wrong secret fails with 403 SignatureDoesNotMatch."""
    bucket = make_bucket(oss, auth_class(AK, "wrong"))
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch) as caught:
        await call(bucket.list_objects_v2)
    assert caught.value.status == 403


async def test_v4_region_must_match_server(oss: OssServer) -> None:
    """A V4 signature scoped to another region is refused."""
    bucket = make_bucket(oss, oss2.AuthV4(AK, SK), region="cn-beijing")
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch):
        await call(bucket.list_objects_v2)


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(lambda: oss2.Auth("NOBODY", SK), id="unknown-ak"),
        pytest.param(lambda: oss2.Auth(STS_AK, STS_SK), id="sts-without-token"),
        pytest.param(lambda: oss2.StsAuth(STS_AK, STS_SK, "forged"), id="sts-wrong-token"),
        pytest.param(lambda: oss2.StsAuth(AK, SK, STS_TOKEN), id="token-on-permanent-key"),
    ],
)
async def test_bad_access_key_or_token_is_refused(oss: OssServer, auth: Callable[[], Any]) -> None:
    """An unknown AccessKeyId or a wrong security token gets 403 InvalidAccessKeyId."""
    with pytest.raises(oss2.exceptions.ServerError) as caught:
        await call(make_bucket(oss, auth()).list_objects_v2)
    assert (caught.value.status, caught.value.code) == (403, "InvalidAccessKeyId")


async def test_unsigned_request_is_access_denied(oss: OssServer) -> None:
    """A request without Authorization is refused with 403 AccessDenied."""
    with pytest.raises(oss2.exceptions.AccessDenied):
        await call(make_bucket(oss, oss2.AnonymousAuth()).list_objects_v2)


async def test_anonymous_access_when_allowed() -> None:
    """With allow_anonymous, unsigned requests are served."""
    async with OssServer([BUCKET], allow_anonymous=True) as server:
        bucket = make_bucket(server, oss2.AnonymousAuth())
        await call(bucket.put_object, "k", b"v")
        assert await call(lambda: bucket.get_object("k").read()) == b"v"


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bucket_name", "operation", "exception"),
    [
        (BUCKET, "get_object", oss2.exceptions.NoSuchKey),
        (BUCKET, "head_object", oss2.exceptions.NoSuchKey),
        (BUCKET, "get_object_meta", oss2.exceptions.NoSuchKey),
        ("missing", "get_object", oss2.exceptions.NoSuchBucket),
        ("missing", "head_object", oss2.exceptions.NoSuchBucket),
        ("missing", "put_object", oss2.exceptions.NoSuchBucket),
    ],
)
async def test_missing_bucket_or_key_maps_to_oss2_exception(
    oss: OssServer, bucket_name: str, operation: str, exception: type[Exception]
) -> None:
    """Missing buckets and keys raise oss2's NoSuchBucket / NoSuchKey (both NotFound)."""
    bucket = make_bucket(oss, name=bucket_name)
    args = ("nope", b"data") if operation == "put_object" else ("nope",)
    with pytest.raises(exception) as caught:
        await call(getattr(bucket, operation), *args)
    assert isinstance(caught.value, oss2.exceptions.NotFound)


async def test_head_error_has_no_body_but_x_oss_err(bucket: oss2.Bucket) -> None:
    """A HEAD error has an empty body; oss2 reads the code from the x-oss-err header."""
    with pytest.raises(oss2.exceptions.NoSuchKey) as caught:
        await call(bucket.head_object, "nope")
    decoded = ET.fromstring(base64.b64decode(caught.value.headers["x-oss-err"]))
    assert (caught.value.body, decoded.findtext("Code")) == (b"", "NoSuchKey")


async def test_error_body_is_oss_error_xml(oss: OssServer) -> None:
    """An error body is OSS's Error XML whose RequestId matches x-oss-request-id."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{oss.endpoint}/{BUCKET}/k") as reply,
    ):
        body, request_id = await reply.read(), reply.headers["x-oss-request-id"]
    root = ET.fromstring(body)
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert [child.tag for child in root][:4] == ["Code", "Message", "RequestId", "HostId"]
    assert (root.tag, root.findtext("Code"), root.findtext("RequestId")) == (
        "Error",
        "AccessDenied",
        request_id,
    )


async def test_injected_503_fails_before_state_changes(oss: OssServer, bucket: oss2.Bucket) -> None:
    """An injected 503 reaches oss2 as ServerError 503 and the put stores nothing."""
    oss.inject(503, "ServiceUnavailable")
    with pytest.raises(oss2.exceptions.ServerError) as caught:
        await call(bucket.put_object, "k", b"v")
    assert (caught.value.status, caught.value.code) == (503, "ServiceUnavailable")
    assert oss.get_object(BUCKET, "k") is None


async def test_injection_is_spent_after_count(bucket: oss2.Bucket, oss: OssServer) -> None:
    """An injection fails exactly `count` matching requests, then requests succeed."""
    oss.inject(500, "InternalError", count=2, operation="ListObjectsV2")
    outcomes = []
    for _ in range(3):
        try:
            await call(bucket.list_objects_v2)
            outcomes.append(200)
        except oss2.exceptions.ServerError as exc:
            outcomes.append(exc.status)
    assert outcomes == [500, 500, 200]


async def test_injection_matches_only_its_operation(oss: OssServer, bucket: oss2.Bucket) -> None:
    """An injection for PutObject leaves listing untouched."""
    oss.inject(503, "ServiceUnavailable", operation="PutObject")
    await call(bucket.list_objects_v2)
    with pytest.raises(oss2.exceptions.ServerError):
        await call(bucket.put_object, "k", b"v")


async def test_injection_can_let_requests_through_first(
    bucket: oss2.Bucket, oss: OssServer
) -> None:
    """With `after`, an injection lets that many matching requests succeed, then fails."""
    oss.inject(503, "ServiceUnavailable", operation="ListObjectsV2", after=1)
    outcomes = []
    for _ in range(3):
        try:
            await call(bucket.list_objects_v2)
            outcomes.append(200)
        except oss2.exceptions.ServerError as exc:
            outcomes.append(exc.status)
    assert outcomes == [200, 503, 200]


async def test_date_comes_from_the_clock_and_can_be_skewed() -> None:
    """Replies carry the server clock's Date; `skew_date` shifts it for one listing only."""
    moment = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    async with OssServer(
        [BUCKET], credentials={AK: SK}, region=REGION, clock=lambda: moment
    ) as oss:
        bucket = make_bucket(oss)
        oss.skew_date(3600, operation="ListObjectsV2", after=1)
        dates = [(await call(bucket.list_objects_v2)).headers["date"] for _ in range(3)]
    assert dates == [
        "Sat, 01 Mar 2025 12:00:00 GMT",
        "Sat, 01 Mar 2025 13:00:00 GMT",
        "Sat, 01 Mar 2025 12:00:00 GMT",
    ]


async def test_hold_keeps_a_request_waiting_until_released(
    oss: OssServer, bucket: oss2.Bucket
) -> None:
    """A held listing is answered only after `release()`; the one before passes."""
    hold = oss.hold(operation="ListObjectsV2", after=1)
    await call(bucket.list_objects_v2)
    assert not hold.reached.is_set()
    listing = asyncio.ensure_future(call(bucket.list_objects_v2))
    await asyncio.wait_for(hold.reached.wait(), DEADLINE)
    assert not listing.done() and oss.count(operation="ListObjectsV2") == 1
    hold.release()
    await listing
    assert oss.count(operation="ListObjectsV2", status=200) == 2


async def test_requests_are_logged(oss: OssServer, bucket: oss2.Bucket) -> None:
    """Every answered request is logged with its operation, key and status."""
    await call(bucket.put_object, "k", b"v")
    with pytest.raises(oss2.exceptions.NoSuchKey):
        await call(bucket.get_object, "other")
    assert [(r.operation, r.key, r.status) for r in oss.requests] == [
        ("PutObject", "k", 200),
        ("GetObject", "other", 404),
    ]
    assert oss.count(method="GET", status=404) == 1


# --- EventBridge and MNS payloads ------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], Any]]]]:
    received: list[tuple[dict[str, str], Any]] = []

    async def collect(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.json()))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/oss/eventbridge", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/oss/eventbridge", received
    await runner.cleanup()


async def test_eventbridge_push_follows_put_and_delete(
    receiver: tuple[str, list[tuple[dict[str, str], Any]]],
) -> None:
    """PutObject and DeleteObject each push a CloudEvent with the configured token."""
    url, received = receiver
    async with OssServer(
        [BUCKET], credentials={AK: SK}, eventbridge_url=url, eventbridge_token="s3cret"
    ) as server:
        bucket = make_bucket(server)
        put = await call(
            bucket.put_object, "in/a b.csv", b"abc", headers={"Content-Type": "text/csv"}
        )
        await server.flush_events()
        await call(bucket.delete_object, "in/a b.csv")
        await server.flush_events()
    events = sorted((e for _, e in received), key=lambda e: e["type"])
    assert [e["type"] for e in events] == [
        "oss:ObjectCreated:PutObject",
        "oss:ObjectRemoved:DeleteObject",
    ]
    created = events[0]
    assert created["subject"] == f"acs:oss:{REGION}:{DEFAULT_ACCOUNT}:{BUCKET}/in/a b.csv"
    assert created["data"]["oss"]["object"] | {"objectMeta": None} == {
        "key": "in/a b.csv",
        "size": 3,
        "deltaSize": 3,
        "eTag": put.etag,
        "objectMeta": None,
    }
    assert created["data"]["oss"]["object"]["objectMeta"]["mimeType"] == "text/csv"
    assert {h["x-eventbridge-signature-token"] for h, _ in received} == {"s3cret"}


async def test_unreachable_eventbridge_does_not_fail_the_put() -> None:
    """A push that cannot be delivered is logged; the PutObject still succeeds."""
    async with OssServer(
        [BUCKET], credentials={AK: SK}, eventbridge_url="http://127.0.0.1:9/unreachable"
    ) as server:
        await call(make_bucket(server).put_object, "k", b"v")
        await server.flush_events()
        assert server.get_object(BUCKET, "k") is not None


def test_build_eventbridge_event_has_cloudevent_shape() -> None:
    """build_eventbridge_event produces the EventBridge envelope around the OSS record."""
    time = datetime(2025, 1, 1, 8, tzinfo=UTC)
    event = build_eventbridge_event(
        "b",
        "in/x.csv",
        7,
        '"abc123"',
        "ObjectCreated:PutObject",
        "cn-hangzhou",
        "42",
        time,
        event_id="ID1",
    )
    assert {k: event[k] for k in ("specversion", "id", "source", "type", "subject", "time")} == {
        "specversion": "1.0",
        "id": "ID1",
        "source": "acs.oss",
        "type": "oss:ObjectCreated:PutObject",
        "subject": "acs:oss:cn-hangzhou:42:b/in/x.csv",
        "time": "2025-01-01T08:00:00.000Z",
    }
    assert event["data"]["eventName"] == "ObjectCreated:PutObject"
    assert event["data"]["oss"]["object"]["eTag"] == "ABC123"
    assert event["data"]["oss"]["bucket"]["arn"] == "acs:oss:cn-hangzhou:42:b"


def test_build_mns_message_is_base64_events_document() -> None:
    """build_mns_message base64-encodes {"events": [...]}."""
    record = {"eventName": "ObjectCreated:PutObject", "oss": {"object": {"key": "文件"}}}
    decoded = json.loads(base64.b64decode(build_mns_message([record])))
    assert decoded == {"events": [record]}


# --- standalone ------------------------------------------------------------------------------


async def test_standalone_server_serves_oss2_after_ready() -> None:
    """`python -m trigger.testing.ossserver` prints READY with its endpoint and serves oss2."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trigger.testing.ossserver",
        "--port",
        "0",
        "--bucket",
        "raw-data",
        "--ak",
        AK,
        "--sk",
        SK,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), DEADLINE)).decode()
        assert line.startswith("READY http://127.0.0.1:")
        endpoint = line.split()[1]
        bucket = oss2.Bucket(oss2.Auth(AK, SK), endpoint, "raw-data", connect_timeout=DEADLINE)
        await call(bucket.put_object, "demo.csv", b"1")
        assert [o.key for o in await list_all(bucket)] == ["demo.csv"]
    finally:
        os.kill(process.pid, signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), DEADLINE) == 0
