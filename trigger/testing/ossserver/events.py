"""The payloads OSS sends elsewhere when an object changes.

An OSS event record, the EventBridge CloudEvent that wraps one, and the MNS message body
of event notifications; tests post them by hand, and the server pushes the CloudEvent.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from trigger.testing.ossserver.objects import iso_millis


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
