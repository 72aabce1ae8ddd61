"""Decoders for OSS object events: EventBridge CloudEvents and MNS notifications.

Both wire formats carry the same OSS record (`eventName`, `oss.bucket`, `oss.object`, ...),
decoded by `decode_oss_record` into an Event with the fields of DESIGN §2.

Object keys: MNS delivers them percent-encoded (`orders%201.json`), so they are decoded
once here with `unquote`, not `unquote_plus`: OSS encodes a space as `%20` and a `+` as
`%2B`, and a literal `+` must stay a `+`. EventBridge keys are taken verbatim (the sample
deliveries carry plain keys, matching the CloudEvent `subject`).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote

from trigger.decoders._common import (
    MAX_BYTES,
    as_list,
    as_mapping,
    opt_int,
    opt_mapping,
    opt_str,
    parse_json,
    req_int,
    req_mapping,
    req_str,
    text_of,
    unbase64,
    utf8,
)
from trigger.errors import DecodeError
from trigger.events import Event, content_id, parse_time

OSS_CLOUDEVENT_SOURCE: Final = "acs.oss"
_TYPE_PREFIX: Final = "oss:"
_MESSAGE_WHERE: Final = "Message"
_BASE64_WHERE: Final = "Message (base64)"
# Entity declarations are how "billion laughs" and external-entity attacks start; a real
# MNS notification never has a DOCTYPE, so refusing both is safe and keeps expat simple.
_DECLARATION: Final = re.compile(r"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)


# --- the OSS record, shared by both wire formats ----------------------------------------


def decode_oss_record(
    record: Any,
    *,
    where: str,
    event_id: str | None = None,
    event_type: str | None = None,
    subject: str | None = None,
    account: str | None = None,
    region: str | None = None,
    time: Any = None,
    key_encoded: bool = False,
) -> Event:
    """Decode one OSS record (an MNS `events[i]` entry or a CloudEvent's `data`).

    The keyword arguments carry what an envelope already knows (the CloudEvent's id, type,
    subject, account, region and time); the record's own values fill the rest. Without an
    `event_id` the id is derived from the record (MNS: see `_record_id`).
    """
    rec = as_mapping(record, where)
    oss = req_mapping(rec, "oss", where)
    bucket_where = f"{where}.oss.bucket"
    bucket_obj = req_mapping(oss, "bucket", f"{where}.oss")
    bucket = req_str(bucket_obj, "name", bucket_where)
    event_name = opt_str(rec, "eventName", where) or event_type
    if event_name is None:
        raise DecodeError("missing", where=f"{where}.eventName")
    event_name = event_name.removeprefix(_TYPE_PREFIX)
    fields: dict[str, Any] = {"bucket": bucket}
    fields.update(_object_fields(oss, f"{where}.oss", event_name, key_encoded=key_encoded))
    key = fields["key"]
    region, account = _origin(rec, bucket_obj, where, region=region, account=account)
    moment = rec.get("eventTime") or time
    if moment is None:
        raise DecodeError("missing", where=f"{where}.eventTime")
    responses = opt_mapping(rec, "responseElements", where) or {}
    request_id = opt_str(responses, "requestId", f"{where}.responseElements")
    fields.update(
        region=region,
        account=account,
        eventName=event_name,
        sourceIp=_source_ip(rec, where),
        requestId=request_id,
    )
    return Event(
        id=event_id or _record_id(rec, request_id, event_name, bucket, key),
        source="oss",
        type=(event_type or event_name).removeprefix(_TYPE_PREFIX),
        subject=subject or f"acs:oss:{region}:{account}:{bucket}/{key}",
        time=parse_time(moment, where=f"{where}.eventTime"),
        data=rec,
        fields=fields,
    )


def _object_fields(
    oss: Mapping[str, Any], where: str, event_name: str, *, key_encoded: bool
) -> dict[str, Any]:
    """key, size, etag, contentType and userMeta from `oss.object`."""
    obj_where = f"{where}.object"
    obj = req_mapping(oss, "object", where)
    key = req_str(obj, "key", obj_where)
    if key_encoded:
        key = _unquote(key, f"{obj_where}.key")
    # A created object always has a size and an ETag; removal and restore events may not.
    if event_name.startswith("ObjectCreated:"):
        size: int | None = req_int(obj, "size", obj_where)
        etag: str | None = req_str(obj, "eTag", obj_where)
    else:
        size = opt_int(obj, "size", obj_where)
        etag = opt_str(obj, "eTag", obj_where)
    meta = opt_mapping(obj, "objectMeta", obj_where) or {}
    user_meta = opt_mapping(meta, "userMeta", f"{obj_where}.objectMeta") or {}
    return {
        "key": key,
        "size": size or 0,
        "etag": (etag or "").strip('"'),
        "contentType": opt_str(meta, "mimeType", f"{obj_where}.objectMeta"),
        "userMeta": user_meta if isinstance(user_meta, dict) else dict(user_meta),
    }


def _unquote(key: str, where: str) -> str:
    try:
        return unquote(key, errors="strict")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"percent-encoded key is not UTF-8: {key!r}", where=where) from exc


def _origin(
    rec: Mapping[str, Any],
    bucket: Mapping[str, Any],
    where: str,
    *,
    region: str | None,
    account: str | None,
) -> tuple[str, str]:
    """The region and account id, from the record or its envelope, else the bucket ARN."""
    bucket_where = f"{where}.oss.bucket"
    # acs:oss:<region>:<account>:<bucket>
    arn = (opt_str(bucket, "arn", bucket_where) or "").split(":")
    arn_region, arn_account = (arn[2], arn[3]) if len(arn) >= 5 else ("", "")
    region = opt_str(rec, "region", where) or region or arn_region
    identity = opt_mapping(rec, "userIdentity", where) or {}
    account = (
        account
        or opt_str(bucket, "ownerIdentity", bucket_where)
        or opt_str(identity, "principalId", f"{where}.userIdentity")
        or arn_account
    )
    missing = "missing (and no bucket ARN to take it from)"
    if not region:
        raise DecodeError(missing, where=f"{where}.region")
    if not account:
        raise DecodeError(missing, where=f"{bucket_where}.ownerIdentity")
    return region, account


def _source_ip(rec: Mapping[str, Any], where: str) -> str | None:
    params = opt_mapping(rec, "requestParameters", where) or {}
    return opt_str(params, "sourceIPAddress", f"{where}.requestParameters")


def _record_id(
    rec: Mapping[str, Any], request_id: str | None, event_name: str, bucket: str, key: str
) -> str:
    """An id for a record that carries none of its own (MNS).

    It is built only from the record, so an MNS redelivery (the same body, resent) yields
    the same id and deduplicates. The index within `events` is not used: it would collide
    if OSS split one request's events (DeleteObjects) over several messages, silently
    dropping all but the first; bucket, key and event name keep such ids distinct.
    """
    if request_id is None:
        request_id = content_id(json.dumps(rec, sort_keys=True, separators=(",", ":")))
    return f"mns:{request_id}:{event_name}:{bucket}/{key}"


# --- EventBridge ------------------------------------------------------------------------


def decode_eventbridge(
    body: bytes | str | Mapping[str, Any] | list[Any], *, max_bytes: int = MAX_BYTES
) -> list[Event]:
    """Decode one structured-mode CloudEvent, or a JSON array of them (already parsed or not)."""
    doc = body
    if isinstance(body, bytes | str):
        doc = parse_json(text_of(body, max_bytes, where="body"), where="body")
    if isinstance(doc, list):
        return [_cloudevent(item, f"$[{i}]") for i, item in enumerate(doc)]
    return [_cloudevent(doc, "$")]


def _cloudevent(value: Any, where: str) -> Event:
    ce = as_mapping(value, where)
    req_str(ce, "specversion", where)
    source = req_str(ce, "source", where)
    if source != OSS_CLOUDEVENT_SOURCE:
        raise DecodeError(
            f"not an OSS event: source is {source!r}, expected {OSS_CLOUDEVENT_SOURCE!r}",
            where=f"{where}.source",
        )
    event_id = req_str(ce, "id", where)
    event_type = req_str(ce, "type", where)
    return decode_oss_record(
        req_mapping(ce, "data", where),
        where=f"{where}.data",
        event_id=event_id,
        event_type=event_type,
        subject=opt_str(ce, "subject", where),
        account=opt_str(ce, "aliyunaccountid", where),
        region=opt_str(ce, "aliyunregionid", where),
        time=ce.get("time"),
    )


# --- MNS --------------------------------------------------------------------------------


def decode_mns(
    body: bytes | str,
    *,
    content_type: str | None = None,
    headers: Mapping[str, str] | None = None,
    max_bytes: int = MAX_BYTES,
) -> list[Event]:
    """Decode an MNS HTTP push body: XML or JSON notification, or SIMPLIFIED (message only).

    The format is told by the body's first character; a Content-Type (the argument, else
    the `headers`) naming XML forces the XML reading so a mislabelled body fails loudly.
    """
    text = text_of(body, max_bytes, where="body").strip()
    kind = (content_type or _header(headers, "content-type") or "").lower()
    if text.startswith("<") or "xml" in kind:
        return decode_mns_message(_xml_message(text))
    if text.startswith("{"):
        return decode_mns_document(parse_json(text, where="body"))
    return decode_mns_message(text)


def decode_mns_document(doc: Any) -> list[Event]:
    """Decode a parsed JSON body: a notification (with `Message`) or an OSS message (`events`)."""
    notification = as_mapping(doc, "body")
    if "Message" in notification:
        return decode_mns_message(req_str(notification, "Message", ""))
    if "events" in notification:
        return _events(notification)
    expected = "expected an MNS notification (Message) or an OSS message (events)"
    raise DecodeError(expected, where="body")


def decode_mns_message(message: str) -> list[Event]:
    """Decode the MNS message itself: `{"events": [...]}`, plain or base64."""
    text = message.strip()
    if not text:
        raise DecodeError("empty message", where=_MESSAGE_WHERE)
    if text.startswith("{"):
        return _events(parse_json(text, where=_MESSAGE_WHERE))
    raw = utf8(unbase64(text, where=_BASE64_WHERE), where=_BASE64_WHERE)
    return _events(parse_json(raw, where=_BASE64_WHERE))


def _events(doc: Any) -> list[Event]:
    entries = as_list(as_mapping(doc, _MESSAGE_WHERE).get("events"), "events")
    return [
        decode_oss_record(entry, where=f"events[{i}]", key_encoded=True)
        for i, entry in enumerate(entries)
    ]


def _xml_message(text: str) -> str:
    if _DECLARATION.search(text):
        raise DecodeError("DOCTYPE and ENTITY declarations are not allowed", where="body")
    try:
        root = ET.fromstring(text)  # noqa: S314 - declarations refused above; size bounded
    except ET.ParseError as exc:
        raise DecodeError(f"invalid XML: {exc}", where="body") from exc
    if _local(root.tag) != "Notification":
        raise DecodeError(f"expected <Notification>, got <{_local(root.tag)}>", where="body")
    for child in root:
        if _local(child.tag) == "Message":
            return child.text or ""
    raise DecodeError("missing", where="Notification.Message")


def _local(tag: str) -> str:
    """The tag without its namespace: MNS sends `{http://mns.aliyuncs.com/doc/v1/}` or none."""
    return tag.rpartition("}")[2]


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    return next((v for k, v in headers.items() if k.lower() == name), None)
