"""Cron ticks and webhook requests as Events, and their event-file forms."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from trigger.decoders import cron_tick, decode_cron_file, decode_webhook, decode_webhook_file
from trigger.errors import DecodeError
from trigger.events import EPOCH, content_id

SHANGHAI = timezone(timedelta(hours=8))
RECEIVED = datetime(2025, 1, 1, 3, 15, tzinfo=UTC)

# --- cron -------------------------------------------------------------------------------


def test_cron_tick() -> None:
    """A tick carries rule, schedule, scheduledTime (UTC), timezone; its id is rule@time."""
    event = cron_tick(
        "nightly", "0 2 * * *", datetime(2025, 1, 1, 2, tzinfo=SHANGHAI), "Asia/Shanghai"
    )
    assert event.id == "nightly@2024-12-31T18:00:00Z"
    assert (event.source, event.type, event.subject) == ("cron", "cron.tick", "nightly")
    assert event.time == datetime(2024, 12, 31, 18, tzinfo=UTC)
    assert dict(event.fields) == {
        "rule": "nightly",
        "schedule": "0 2 * * *",
        "scheduledTime": "2024-12-31T18:00:00Z",
        "timezone": "Asia/Shanghai",
        "fireTime": "2024-12-31T18:00:00Z",  # not fired by the daemon: taken as on time
    }
    assert event.data == event.fields


def test_cron_fire_time() -> None:
    """The fire time, when given, is an RFC 3339 UTC string."""
    scheduled = datetime(2025, 1, 1, tzinfo=UTC)
    event = cron_tick("r", "@daily", scheduled, "UTC", fired=scheduled + timedelta(seconds=1.25))
    assert event.fields["fireTime"] == "2025-01-01T00:00:01.250Z"


def test_cron_same_tick_same_id() -> None:
    """The same tick in another zone's notation has the same id."""
    a = cron_tick("r", "s", datetime(2025, 1, 1, 8, tzinfo=SHANGHAI), "Asia/Shanghai")
    b = cron_tick("r", "s", datetime(2025, 1, 1, 0, tzinfo=UTC), "Asia/Shanghai")
    assert a.id == b.id


def test_cron_file_defaults() -> None:
    """A cron file needs only rule and scheduledTime; schedule is "" and timezone UTC."""
    event = decode_cron_file({"cron": {"rule": "r", "scheduledTime": "2025-01-01T02:00:00Z"}})
    assert (event.fields["schedule"], event.fields["timezone"]) == ("", "UTC")
    assert event.id == "r@2025-01-01T02:00:00Z"


def test_cron_file_lenient_time() -> None:
    """A cron file's time may carry a zone name glued on."""
    event = decode_cron_file({"cron": {"rule": "r", "scheduledTime": "2025-01-01T08:00:00PRC"}})
    assert event.fields["scheduledTime"] == "2025-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("obj", "where"),
    [
        ({"cron": {"scheduledTime": "2025-01-01T00:00:00Z"}}, "cron.rule"),
        ({"cron": {"rule": "r"}}, "cron.scheduledTime"),
        ({"cron": {"rule": "r", "scheduledTime": "tomorrow"}}, "cron.scheduledTime"),
        ({"cron": {"rule": "r", "scheduledTime": 0, "timezone": 8}}, "cron.timezone"),
        ({"cron": {"rule": "r", "scheduledTime": 0, "fireTime": "x"}}, "cron.fireTime"),
        ({"cron": []}, "cron"),
    ],
)
def test_cron_file_problem_located(obj: dict[str, Any], where: str) -> None:
    """A missing or bad member of a cron file names its path."""
    with pytest.raises(DecodeError) as caught:
        decode_cron_file(obj)
    assert caught.value.where == where


# --- webhook ----------------------------------------------------------------------------


def hook(body: bytes, content_type: str | None = None, **headers: str) -> Any:
    if content_type is not None:
        headers["Content-Type"] = content_type
    return decode_webhook("/hooks/x", "post", headers, {"env": "prod"}, body, received=RECEIVED)


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/json", b'{"a": [1, 2]}', {"a": [1, 2]}),
        ("application/json; charset=utf-8", b'"s"', "s"),
        ("application/cloudevents+json", b'{"id": "1"}', {"id": "1"}),
        (
            "application/x-www-form-urlencoded",
            b"a=1&b=2&b=3&c=",
            {"a": "1", "b": ["2", "3"], "c": ""},
        ),
        ("application/x-www-form-urlencoded", b"q=%E4%B8%AD+x", {"q": "\u4e2d x"}),
        ("text/plain", b"hello", "hello"),
        ("text/plain; charset=iso-8859-1", b"caf\xe9", "caf\u00e9"),
        (None, b"no type", "no type"),
        (
            "application/octet-stream",
            b"\x00\xffbinary",
            base64.b64encode(b"\x00\xffbinary").decode(),
        ),
        ("text/plain", b"\xff\xfe", "//4="),
        ("application/json", b"", None),
    ],
)
def test_webhook_body_by_content_type(content_type: str | None, body: bytes, expected: Any) -> None:
    """The body is decoded by its Content-Type."""
    event = hook(body, content_type)
    assert event.fields["body"] == expected
    assert event.data == expected
    assert event.raw == body


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{oops"),
        ("application/json", b"\xff"),
        ("application/x-www-form-urlencoded", b"a=%FF"),
        ("text/plain; charset=klingon", b"x"),
    ],
)
def test_webhook_bad_body(content_type: str, body: bytes) -> None:
    """Invalid JSON, form encoding or charset is a DecodeError."""
    with pytest.raises(DecodeError):
        hook(body, content_type)


def test_webhook_envelope() -> None:
    """Header names are lower-cased, the method upper-cased, subject is the path."""
    event = hook(b"{}", "application/json", **{"X-Trace": "t"})
    assert event.fields["headers"] == {"content-type": "application/json", "x-trace": "t"}
    assert (event.fields["method"], event.fields["path"], event.subject) == (
        "POST",
        "/hooks/x",
        "/hooks/x",
    )
    assert event.fields["query"] == {"env": "prod"}
    assert (event.source, event.type, event.time) == ("webhook", "webhook.request", RECEIVED)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-GitHub-Delivery": "gh", "X-Request-Id": "rq"}, "gh"),
        ({"X-Request-Id": "rq", "Ce-Id": "ce"}, "rq"),
        ({"X-Delivery-Id": "dl", "Idempotency-Key": "ik"}, "dl"),
        ({"ce-id": "ce", "Idempotency-Key": "ik"}, "ce"),
        ({"Idempotency-Key": "ik"}, "ik"),
        ({"X-Request-Id": "", "Idempotency-Key": "ik"}, "ik"),
    ],
)
def test_webhook_delivery_id(headers: dict[str, str], expected: str) -> None:
    """The id is the first delivery-id header present, in a fixed order of preference."""
    assert hook(b"x", **headers).id == expected


def test_webhook_content_id() -> None:
    """Without a delivery id the id hashes method, path and body."""
    assert hook(b"x").id == content_id("POST", "/hooks/x", b"x")
    assert hook(b"x").id != hook(b"y").id


def test_webhook_size_guard() -> None:
    """A body over max_bytes is refused."""
    with pytest.raises(DecodeError, match="exceeds"):
        decode_webhook("/h", "POST", {}, {}, b"x" * 11, received=RECEIVED, max_bytes=10)


def test_webhook_file_json_body() -> None:
    """A JSON body in a file is sent as JSON and parsed back; method defaults to POST."""
    event = decode_webhook_file({"webhook": {"path": "/h", "body": {"n": 1}}})
    assert event.fields["body"] == {"n": 1}
    assert event.fields["headers"]["content-type"] == "application/json"
    assert (event.fields["method"], event.time) == ("POST", EPOCH)


def test_webhook_file_string_body_and_time() -> None:
    """A string body stays text; a file time is the receive time."""
    event = decode_webhook_file(
        {"webhook": {"path": "/h", "method": "put", "body": "hi", "time": "2025-01-01T03:15:00Z"}}
    )
    assert (event.fields["body"], event.fields["method"], event.time) == ("hi", "PUT", RECEIVED)


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({}, "webhook.path"),
        ({"path": "/h", "headers": {"X-A": 1}}, "webhook.headers.X-A"),
        ({"path": "/h", "query": "a=1"}, "webhook.query"),
        ({"path": "/h", "time": "later"}, "webhook.time"),
        ({"path": "/h", "method": 1}, "webhook.method"),
    ],
)
def test_webhook_file_problem_located(spec: dict[str, Any], where: str) -> None:
    """A missing or mistyped member of a webhook file names its path."""
    with pytest.raises(DecodeError) as caught:
        decode_webhook_file({"webhook": spec})
    assert caught.value.where == where


def test_webhook_header_bytes_not_utf8_become_replacement_characters() -> None:
    """A header value's bytes that are not UTF-8 (surrogate-escaped by aiohttp) become
    U+FFFD, so no event carries a lone surrogate into a Workflow."""
    received = "caf\udce9 ok \u00e9"  # b"caf\xe9 ok \xc3\xa9" as aiohttp hands it over
    event = decode_webhook("/h", "POST", {"X-Tag": received}, {}, b"", received=RECEIVED)
    assert event.fields["headers"] == {"x-tag": "caf\ufffd ok \u00e9"}
