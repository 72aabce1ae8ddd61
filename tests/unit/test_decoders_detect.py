"""Event files recognised by shape: every shipped example, the fixtures, and the refusals."""

from __future__ import annotations

import base64
import json
from importlib.resources import files
from pathlib import Path

import pytest

from trigger.decoders import ACCEPTED_SHAPES, decode_document, decode_file
from trigger.errors import DecodeError

FIXTURES = Path(__file__).parents[1] / "fixtures"
EXAMPLES = Path(str(files("trigger") / "examples" / "events"))


@pytest.mark.parametrize(
    ("name", "source", "type_", "subject"),
    [
        (
            "eventbridge-put-csv.json",
            "oss",
            "ObjectCreated:PutObject",
            "acs:oss:cn-hangzhou:1234567890123456:example-bucket/incoming/report.csv",
        ),
        (
            "eventbridge-multipart-parquet.json",
            "oss",
            "ObjectCreated:CompleteMultipartUpload",
            "acs:oss:cn-shanghai:1234567890123456:lake-raw/dt=2025-01-02/part-0001.parquet",
        ),
        (
            "mns-push.xml",
            "oss",
            "ObjectCreated:PutObject",
            "acs:oss:cn-beijing:1234567890123456:ingest/drop/2025/01/03/orders 1.json",
        ),
        ("kafka-order.json", "kafka", "kafka.message", "orders/2/418"),
        ("cron-tick.json", "cron", "cron.tick", "nightly-report"),
        ("webhook-request.json", "webhook", "webhook.request", "/hooks/github"),
        (
            "oss-minimal.json",
            "oss",
            "ObjectCreated:PutObject",
            "acs:oss:cn-hangzhou:1234567890123456:example-bucket/incoming/sales.csv",
        ),
        ("kafka-minimal.json", "kafka", "kafka.message", "orders/0/0"),
        ("cron-minimal.json", "cron", "cron.tick", "nightly-report"),
        ("webhook-minimal.json", "webhook", "webhook.request", "/hooks/github"),
        ("workflow-minimal.json", "workflow", "workflow.Failed", "data/load-20250601"),
        ("workflow-succeeded.json", "workflow", "workflow.Succeeded", "data/load-20250601"),
    ],
)
def test_example_files(name: str, source: str, type_: str, subject: str) -> None:
    """Every example event shipped in the package is recognised and decoded."""
    (event,) = decode_file(EXAMPLES / name)
    assert (event.source, event.type, event.subject) == (source, type_, subject)


def test_examples_all_covered() -> None:
    """The table above covers every shipped example file."""
    assert sorted(p.name for p in EXAMPLES.iterdir()) == sorted(
        [
            "cron-minimal.json",
            "cron-tick.json",
            "eventbridge-multipart-parquet.json",
            "eventbridge-put-csv.json",
            "kafka-minimal.json",
            "kafka-order.json",
            "mns-push.xml",
            "oss-day-batch.json",
            "oss-minimal.json",
            "webhook-minimal.json",
            "webhook-request.json",
            "workflow-minimal.json",
            "workflow-succeeded.json",
        ]
    )


def test_kafka_example_has_amount() -> None:
    """The Kafka example is an order with an amount, as the README demo needs."""
    (event,) = decode_file(EXAMPLES / "kafka-order.json")
    assert event.doc["value"]["amount"] == 249.5


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("oss/eventbridge-putobject.json", "oss"),
        ("oss/eventbridge-multipart-complete.json", "oss"),
        ("oss/mns-http-push.xml", "oss"),
        ("oss/mns-notification-message.b64", "oss"),
        ("kafka/record-json.json", "kafka"),
    ],
)
def test_fixtures(name: str, source: str) -> None:
    """Every wire-format fixture is recognised by shape."""
    (event,) = decode_file(FIXTURES / name)
    assert event.source == source


def test_eventbridge_array_file() -> None:
    """A JSON array of CloudEvents gives one event per element."""
    doc = json.loads((FIXTURES / "oss/eventbridge-putobject.json").read_text())
    assert len(decode_document(json.dumps([doc, doc]), where="a.json")) == 2


def test_plain_mns_message_and_json_notification() -> None:
    """A plain `{"events": ...}` message and a JSON push body are both MNS."""
    message = base64.b64decode((FIXTURES / "oss/mns-notification-message.b64").read_text())
    plain = decode_document(message.decode(), where="m.json")
    pushed = decode_document(
        json.dumps({"TopicName": "t", "Message": message.decode()}), where="p.json"
    )
    assert plain[0].fields["key"] == pushed[0].fields["key"] == "drop/2025/01/03/orders 1.json"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "hello there",
        "42",
        '{"foo": 1}',
        base64.b64encode(b'{"foo": 1}').decode(),
        "null",
    ],
)
def test_unrecognised(text: str) -> None:
    """Anything else is refused, naming the file and every accepted shape."""
    with pytest.raises(DecodeError) as caught:
        decode_document(text, where="odd.json")
    assert caught.value.where == "odd.json"
    assert all(shape in str(caught.value) for shape in ACCEPTED_SHAPES)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"kafka": {"timestamp": 0}}', "bad.json: kafka.topic"),
        ('{"specversion": "1.0", "source": "acs.oss"}', "bad.json: $.id"),
        ('{"cron": {"rule": "r"', "bad.json"),
        ("<Notification/>", "bad.json: Notification.Message"),
    ],
)
def test_error_names_file_then_place(text: str, where: str) -> None:
    """A decoding error inside a file is located as `file: path`."""
    with pytest.raises(DecodeError) as caught:
        decode_document(text, where="bad.json")
    assert caught.value.where == where


def test_missing_file(tmp_path: Path) -> None:
    """An unreadable file is a DecodeError naming it."""
    missing = tmp_path / "nope.json"
    with pytest.raises(DecodeError) as caught:
        decode_file(missing)
    assert caught.value.where == str(missing)


def test_file_not_utf8(tmp_path: Path) -> None:
    """A file that is not UTF-8 is a DecodeError."""
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DecodeError, match="UTF-8"):
        decode_file(path)


def test_file_too_large(tmp_path: Path) -> None:
    """A file over max_bytes is refused before it is read."""
    path = tmp_path / "big.json"
    path.write_text(" " * 100)
    with pytest.raises(DecodeError, match="exceeds"):
        decode_file(path, max_bytes=99)
