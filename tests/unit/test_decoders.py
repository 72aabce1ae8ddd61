"""OSS decoders: EventBridge CloudEvents and MNS notifications, against the real fixtures."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from trigger.decoders import decode_eventbridge, decode_mns, decode_mns_message
from trigger.errors import DecodeError

FIXTURES = Path(__file__).parents[1] / "fixtures"
MNS_NS = "http://mns.aliyuncs.com/doc/v1/"


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def cloudevent(name: str = "oss/eventbridge-putobject.json") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(fixture_text(name))
    return doc


def mns_record(key: str = "drop/orders%201.json", request_id: str = "REQ1") -> dict[str, Any]:
    """One entry of an MNS message's `events`, shaped like the real fixture."""
    return {
        "eventName": "ObjectCreated:PutObject",
        "eventSource": "acs:oss",
        "eventTime": "2025-01-03T04:05:06.000Z",
        "eventVersion": "1.0",
        "oss": {
            "bucket": {
                "arn": "acs:oss:cn-beijing:1234567890123456:ingest",
                "name": "ingest",
                "ownerIdentity": "1234567890123456",
            },
            "object": {"key": key, "size": 2048, "eTag": "9A0364B9E99BB480DD25E1F0284C8555"},
            "ossSchemaVersion": "1.0",
        },
        "region": "cn-beijing",
        "requestParameters": {"sourceIPAddress": "192.0.2.44"},
        "responseElements": {"requestId": request_id},
        "userIdentity": {"principalId": "1234567890123456"},
    }


def b64_message(*records: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps({"events": list(records)}).encode()).decode()


def xml_push(message: str, *, namespace: bool = True) -> str:
    ns = f' xmlns="{MNS_NS}"' if namespace else ""
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<Notification{ns}><TopicOwner>1</TopicOwner>'
        f"<TopicName>oss-events</TopicName><MessageId>M1</MessageId>"
        f"<Message>{message}</Message><PublishTime>1735877106000</PublishTime></Notification>"
    )


# --- EventBridge ------------------------------------------------------------------------


def test_eventbridge_putobject_fields() -> None:
    """A PutObject CloudEvent decodes to every OSS field of DESIGN §2."""
    (event,) = decode_eventbridge(fixture_text("oss/eventbridge-putobject.json").encode())
    assert dict(event.fields) == {
        "bucket": "example-bucket",
        "key": "incoming/report.csv",
        "size": 59537,
        "etag": "5EB63BBBE01EEED093CB22BB8F5ACDC3",
        "region": "cn-hangzhou",
        "account": "1234567890123456",
        "eventName": "ObjectCreated:PutObject",
        "sourceIp": "203.0.113.10",
        "requestId": "66F2A1B3C4D5E6F7A8B9C0D1",
        "contentType": "text/csv",
        "userMeta": {"x-oss-meta-origin": "uploader"},
    }


def test_eventbridge_envelope() -> None:
    """id, type (prefix stripped), subject, time and data come from the CloudEvent."""
    doc = cloudevent()
    (event,) = decode_eventbridge(doc)
    assert (event.id, event.source, event.type) == (
        "66F2A1B3C4D5E6F7A8B9C0D1",
        "oss",
        "ObjectCreated:PutObject",
    )
    assert event.subject == doc["subject"]
    assert event.time == datetime(2025, 1, 1, 8, tzinfo=UTC)
    assert event.data == doc["data"]


def test_eventbridge_multipart_etag_kept() -> None:
    """A multipart ETag keeps its `-<parts>` suffix and upper-case hex."""
    (event,) = decode_eventbridge(fixture_text("oss/eventbridge-multipart-complete.json"))
    assert event.fields["etag"] == "0F7230CAA4BE94CCBDC99C5500000000-56"
    assert event.type == "ObjectCreated:CompleteMultipartUpload"
    assert event.fields["contentType"] is None
    assert event.fields["userMeta"] == {}


def test_eventbridge_array() -> None:
    """A JSON array of CloudEvents gives one Event each, in order."""
    body = json.dumps([cloudevent(), cloudevent("oss/eventbridge-multipart-complete.json")])
    events = decode_eventbridge(body)
    assert [e.id for e in events] == ["66F2A1B3C4D5E6F7A8B9C0D1", "67A0000000000000000000B2"]


def test_eventbridge_etag_quotes_stripped() -> None:
    """An ETag delivered in quotes loses them, keeping its case."""
    doc = cloudevent()
    doc["data"]["oss"]["object"]["eTag"] = '"5eb63bbbe01eeed093cb22bb8f5acdc3"'
    (event,) = decode_eventbridge(doc)
    assert event.fields["etag"] == "5eb63bbbe01eeed093cb22bb8f5acdc3"


def test_eventbridge_key_verbatim() -> None:
    """EventBridge keys are not percent-decoded."""
    doc = cloudevent()
    doc["data"]["oss"]["object"]["key"] = "incoming/a%20b.csv"
    (event,) = decode_eventbridge(doc)
    assert event.fields["key"] == "incoming/a%20b.csv"


def test_eventbridge_subject_built_when_absent() -> None:
    """Without a subject the OSS resource name is built from region, account, bucket, key."""
    doc = cloudevent()
    del doc["subject"]
    (event,) = decode_eventbridge(doc)
    assert (
        event.subject == "acs:oss:cn-hangzhou:1234567890123456:example-bucket/incoming/report.csv"
    )


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2021-05-06T08:00:00.149Asia/Shanghai", datetime(2021, 5, 6, 0, 0, 0, 149000, tzinfo=UTC)),
        ("2021-05-06T08:00:00.179PRC", datetime(2021, 5, 6, 0, 0, 0, 179000, tzinfo=UTC)),
        ("2021-05-06T08:00:00+08:00", datetime(2021, 5, 6, 0, tzinfo=UTC)),
    ],
)
def test_eventbridge_lenient_time(stamp: str, expected: datetime) -> None:
    """Alibaba's zone-suffixed times are parsed to UTC."""
    doc = cloudevent()
    doc["data"]["eventTime"] = stamp
    (event,) = decode_eventbridge(doc)
    assert event.time == expected


def test_eventbridge_falls_back_to_cloudevent_time_and_type() -> None:
    """Without eventTime/eventName the CloudEvent's time and type are used."""
    doc = cloudevent()
    del doc["data"]["eventTime"], doc["data"]["eventName"]
    (event,) = decode_eventbridge(doc)
    assert event.time == datetime(2025, 1, 1, 8, tzinfo=UTC)
    assert event.fields["eventName"] == "ObjectCreated:PutObject"


def test_eventbridge_removal_without_size() -> None:
    """A removal event without size or ETag reads as size 0 and an empty ETag."""
    doc = cloudevent()
    doc["type"] = "oss:ObjectRemoved:DeleteObject"
    doc["data"]["eventName"] = "ObjectRemoved:DeleteObject"
    del doc["data"]["oss"]["object"]["size"], doc["data"]["oss"]["object"]["eTag"]
    (event,) = decode_eventbridge(doc)
    assert (event.type, event.fields["size"], event.fields["etag"]) == (
        "ObjectRemoved:DeleteObject",
        0,
        "",
    )


def _drop(path: str) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            doc = doc[part]
        del doc[last]

    return edit


def _set(path: str, value: Any) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            doc = doc[part]
        doc[last] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (_drop("specversion"), "$.specversion"),
        (_drop("id"), "$.id"),
        (_drop("type"), "$.type"),
        (_drop("data"), "$.data"),
        (_set("data", "text"), "$.data"),
        (_set("source", "acs.ecs"), "$.source"),
        (_drop("data.oss"), "$.data.oss"),
        (_drop("data.oss.bucket.name"), "$.data.oss.bucket.name"),
        (_set("data.oss.bucket.name", 7), "$.data.oss.bucket.name"),
        (_drop("data.oss.object.key"), "$.data.oss.object.key"),
        (_set("data.oss.object.size", "59537"), "$.data.oss.object.size"),
        (_set("data.oss.object.size", True), "$.data.oss.object.size"),
        (_drop("data.oss.object.size"), "$.data.oss.object.size"),
        (_drop("data.oss.object.eTag"), "$.data.oss.object.eTag"),
        (_set("data.oss.object.objectMeta", []), "$.data.oss.object.objectMeta"),
        (_set("data.oss.object.objectMeta.userMeta", "x"), "$.data.oss.object.objectMeta.userMeta"),
        (_set("data.eventTime", "yesterday"), "$.data.eventTime"),
        (
            _set("data.requestParameters.sourceIPAddress", 1),
            "$.data.requestParameters.sourceIPAddress",
        ),
    ],
)
def test_eventbridge_problem_located(edit: Any, where: str) -> None:
    """A missing or mistyped member is a DecodeError naming its path."""
    doc = cloudevent()
    edit(doc)
    with pytest.raises(DecodeError) as caught:
        decode_eventbridge(doc)
    assert caught.value.where == where


def test_eventbridge_problem_in_array_located() -> None:
    """In an array the path names the element's index."""
    bad = cloudevent()
    del bad["data"]["oss"]["object"]["key"]
    with pytest.raises(DecodeError) as caught:
        decode_eventbridge([cloudevent(), bad])
    assert caught.value.where == "$[1].data.oss.object.key"


def test_eventbridge_non_oss_source_named() -> None:
    """A CloudEvent from another source is refused with that source in the message."""
    doc = cloudevent()
    doc["source"] = "acs.ecs"
    with pytest.raises(DecodeError, match=r"acs\.ecs"):
        decode_eventbridge(doc)


def test_eventbridge_region_and_account_from_arn() -> None:
    """Region and account fall back to the bucket ARN."""
    doc = cloudevent()
    for name in ("aliyunaccountid", "aliyunregionid", "subject"):
        del doc[name]
    del doc["data"]["region"], doc["data"]["userIdentity"]
    del doc["data"]["oss"]["bucket"]["ownerIdentity"]
    doc["data"]["oss"]["bucket"]["arn"] = "acs:oss:cn-shenzhen:42:example-bucket"
    (event,) = decode_eventbridge(doc)
    assert (event.fields["region"], event.fields["account"]) == ("cn-shenzhen", "42")


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b"\xff\xfe{}", "body"),
        (b'{"specversion": ', "body"),
        (b"[1, 2]", "$[0]"),
        (b'{"specversion": NaN}', "body"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
    ],
)
def test_eventbridge_bad_body(body: bytes, where: str) -> None:
    """Invalid UTF-8, invalid or hostile JSON and non-objects are DecodeErrors."""
    with pytest.raises(DecodeError) as caught:
        decode_eventbridge(body)
    assert caught.value.where == where


@pytest.mark.parametrize("body", [b" " * 2049, " " * 2049, "\u4e2d" * 700])
def test_eventbridge_size_guard(body: bytes | str) -> None:
    """A body larger than max_bytes (UTF-8 bytes for text) is refused before parsing."""
    with pytest.raises(DecodeError, match="exceeds the limit of 2048 bytes"):
        decode_eventbridge(body, max_bytes=2048)


# --- MNS --------------------------------------------------------------------------------


def test_mns_xml_fixture() -> None:
    """The real XML push decodes to one event with its key percent-decoded."""
    (event,) = decode_mns(fixture_text("oss/mns-http-push.xml").encode())
    assert event.fields["key"] == "drop/2025/01/03/orders 1.json"
    assert (event.fields["bucket"], event.fields["size"], event.fields["region"]) == (
        "ingest",
        2048,
        "cn-beijing",
    )
    assert event.type == "ObjectCreated:PutObject"
    assert (
        event.subject == "acs:oss:cn-beijing:1234567890123456:ingest/drop/2025/01/03/orders 1.json"
    )
    assert event.time == datetime(2025, 1, 3, 4, 5, 6, tzinfo=UTC)
    assert event.id.startswith("mns:5F1B2C3D4E5F60718293A4B5:")


def test_mns_data_is_raw_entry() -> None:
    """`data` is the undecoded `events[i]` entry (its key still encoded)."""
    record = mns_record()
    (event,) = decode_mns(b64_message(record))
    assert event.data == record


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(xml_push(b64_message(mns_record())), id="xml-namespaced"),
        pytest.param(xml_push(b64_message(mns_record()), namespace=False), id="xml-plain"),
        pytest.param(
            json.dumps({"TopicName": "t", "MessageId": "M1", "Message": b64_message(mns_record())}),
            id="json-notification",
        ),
        pytest.param(b64_message(mns_record()), id="simplified-base64"),
        pytest.param(
            "\n" + b64_message(mns_record())[:40] + "\n" + b64_message(mns_record())[40:],
            id="wrapped-base64",
        ),
        pytest.param(json.dumps({"events": [mns_record()]}), id="plain-message"),
        pytest.param(xml_push(json.dumps({"events": [mns_record()]})), id="xml-plain-json-message"),
    ],
)
def test_mns_body_forms(body: str) -> None:
    """XML, JSON and SIMPLIFIED bodies, base64 or plain messages, all decode alike."""
    (event,) = decode_mns(body)
    assert (event.fields["bucket"], event.fields["key"]) == ("ingest", "drop/orders 1.json")


def test_mns_simplified_fixture() -> None:
    """The base64 message fixture alone (SIMPLIFIED push) decodes."""
    (event,) = decode_mns(
        fixture_text("oss/mns-notification-message.b64"), content_type="text/plain"
    )
    assert event.fields["etag"] == "9A0364B9E99BB480DD25E1F0284C8555"


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("a%20b.csv", "a b.csv"),
        ("a%2Bb.csv", "a+b.csv"),
        ("a+b.csv", "a+b.csv"),
        ("%E4%B8%AD/%E6%96%87.txt", "\u4e2d/\u6587.txt"),
        ("100%25.csv", "100%.csv"),
        ("plain/key.csv", "plain/key.csv"),
    ],
)
def test_mns_key_percent_decoded_once(encoded: str, decoded: str) -> None:
    """MNS keys are percent-decoded exactly once, and `+` stays `+`."""
    (event,) = decode_mns_message(b64_message(mns_record(key=encoded)))
    assert event.fields["key"] == decoded


def test_mns_key_invalid_utf8_located() -> None:
    """A percent-encoded key that is not UTF-8 names the key's path."""
    with pytest.raises(DecodeError) as caught:
        decode_mns_message(b64_message(mns_record(key="bad%FF.csv")))
    assert caught.value.where == "events[0].oss.object.key"


def test_mns_several_events_distinct_ids() -> None:
    """Each entry of `events` is one Event, and their ids differ."""
    records = [mns_record(key=f"k{i}.csv", request_id="SAME") for i in range(3)]
    events = decode_mns(b64_message(*records))
    assert [e.fields["key"] for e in events] == ["k0.csv", "k1.csv", "k2.csv"]
    assert len({e.id for e in events}) == 3


def test_mns_redelivery_same_ids() -> None:
    """A redelivered body (the same message resent) yields the same ids."""
    body = xml_push(b64_message(mns_record(), mns_record(key="other.csv")))
    assert [e.id for e in decode_mns(body)] == [e.id for e in decode_mns(body)]


def test_mns_id_without_request_id_is_stable() -> None:
    """Without a requestId the id is a content hash, equal across redeliveries."""
    record = mns_record()
    del record["responseElements"]
    first, second = decode_mns(b64_message(record)), decode_mns(b64_message(record))
    assert first[0].id == second[0].id
    assert first[0].id.startswith("mns:sha256:")


def _bad_record(edit: Any) -> dict[str, Any]:
    record = mns_record()
    edit(record)
    return record


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (_drop("oss.object.key"), "events[2].oss.object.key"),
        (_drop("eventName"), "events[2].eventName"),
        (_set("eventName", 3), "events[2].eventName"),
        (_drop("oss.bucket"), "events[2].oss.bucket"),
        (_set("oss.object", None), "events[2].oss.object"),
        (_drop("eventTime"), "events[2].eventTime"),
        (_set("responseElements.requestId", []), "events[2].responseElements.requestId"),
    ],
)
def test_mns_problem_located(edit: Any, where: str) -> None:
    """A bad entry is reported with its index in `events`."""
    body = b64_message(mns_record(), mns_record(), _bad_record(edit))
    with pytest.raises(DecodeError) as caught:
        decode_mns(body)
    assert caught.value.where == where


def test_mns_region_and_account_required() -> None:
    """Without region, owner, principal and ARN the region is reported missing."""
    record = mns_record()
    del record["region"], record["oss"]["bucket"]["arn"]
    with pytest.raises(DecodeError) as caught:
        decode_mns_message(b64_message(record))
    assert caught.value.where == "events[0].region"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("not*base64!", "Message (base64)"),
        (base64.b64encode(b"\xff\xfe").decode(), "Message (base64)"),
        (base64.b64encode(b"{nope").decode(), "Message (base64)"),
        (json.dumps({"events": {"a": 1}}), "events"),
        (json.dumps({"events": [1]}), "events[0]"),
        (json.dumps({"Message": 5}), "Message"),
        (json.dumps({"Other": 1}), "body"),
        (xml_push("not*base64!"), "Message (base64)"),
        (xml_push(""), "Message"),
        ("<Notification><TopicName>t</TopicName></Notification>", "Notification.Message"),
        ("<Other/>", "body"),
        ("<Notification><Message>", "body"),
        (b"\xc3\x28", "body"),
    ],
)
def test_mns_bad_body(body: str | bytes, where: str) -> None:
    """Invalid base64, UTF-8, JSON, XML or shape is a DecodeError naming the place."""
    with pytest.raises(DecodeError) as caught:
        decode_mns(body)
    assert caught.value.where == where


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<Notification><Message>&lol2;</Message></Notification>"""


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        '<!doctype Notification SYSTEM "file:///etc/passwd"><Notification/>',
        "<Notification><!ENTITY x 'y'></Notification>",
    ],
)
def test_mns_xml_declarations_refused(body: str) -> None:
    """XML with a DOCTYPE or ENTITY declaration is refused before parsing."""
    with pytest.raises(DecodeError, match="DOCTYPE"):
        decode_mns(body)


def test_mns_xml_content_type_forces_xml() -> None:
    """A body labelled XML that is not XML fails as XML."""
    with pytest.raises(DecodeError, match="invalid XML"):
        decode_mns(b64_message(mns_record()), headers={"Content-Type": "text/xml;charset=utf-8"})


def test_mns_size_guard() -> None:
    """A body over max_bytes is refused."""
    with pytest.raises(DecodeError, match="exceeds"):
        decode_mns(xml_push(b64_message(mns_record())), max_bytes=100)


def test_mns_empty_events() -> None:
    """A message with no events decodes to no Events."""
    assert decode_mns(json.dumps({"events": []})) == []


def test_eventbridge_does_not_mutate_input() -> None:
    """Decoding an already-parsed CloudEvent leaves it untouched."""
    doc = cloudevent()
    before = copy.deepcopy(doc)
    decode_eventbridge(doc)
    assert doc == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("\ufeff{}", "Unexpected UTF-8 BOM"),
        ('{"a": NaN}', "NaN is not valid JSON"),
        ('{"a": 1', "Expecting ',' delimiter"),
        ("", "Expecting value"),
        ('{"a": 1e400}', "number 1e400 is out of range"),
        ('{"a": -' + "9" * 400 + '.0}', "is out of range"),
        ('{"a": "x\\ud800"}', "lone surrogate"),
        ('{"\\uDC00": 1}', "lone surrogate"),
    ],
)
def test_parse_json_failures_are_decode_errors(text: str, message: str) -> None:
    """The shared decoder refuses what json.loads() refuses, with the reason in the error."""
    from trigger.decoders._common import parse_json

    with pytest.raises(DecodeError, match=message):
        parse_json(text, where="body")


def test_parse_json_keeps_surrogate_pairs_and_large_finite_numbers() -> None:
    """A \\u escape pair is one character; 1e308 is a number like any other."""
    from trigger.decoders._common import parse_json

    assert parse_json('{"a": "\\ud83d\\ude00", "b": 1e308}', where="body") == {
        "a": "\U0001f600",
        "b": 1e308,
    }
