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

The modules, from the bottom up: `objects` (stored objects, buckets, CRC-64, dates),
`errors` (OSS's error replies), `operations` (what a request names), `signatures`
(V1/V4 signing, STS tokens), `listing` (ListObjectsV2), `events` (payloads OSS sends
elsewhere), `push` (EventBridge delivery), `faults` (injected failures, holds, skewed
dates), `server` (`OssServer`), `__main__`.
"""

from trigger.testing.ossserver.errors import error_xml
from trigger.testing.ossserver.events import (
    build_eventbridge_event,
    build_mns_message,
    build_oss_record,
)
from trigger.testing.ossserver.faults import Hold
from trigger.testing.ossserver.objects import StoredObject, crc64ecma, http_date, iso_millis
from trigger.testing.ossserver.push import LOG
from trigger.testing.ossserver.server import DEFAULT_ACCOUNT, Clock, OssServer, RecordedRequest
from trigger.testing.ossserver.signatures import (
    Credentials,
    v1_signature,
    v1_string_to_sign,
    v4_canonical_request,
    v4_signature,
)

__all__ = [
    "DEFAULT_ACCOUNT",
    "LOG",
    "Clock",
    "Credentials",
    "Hold",
    "OssServer",
    "RecordedRequest",
    "StoredObject",
    "build_eventbridge_event",
    "build_mns_message",
    "build_oss_record",
    "crc64ecma",
    "error_xml",
    "http_date",
    "iso_millis",
    "v1_signature",
    "v1_string_to_sign",
    "v4_canonical_request",
    "v4_signature",
]
