"""What a request names: its bucket, key and query, and which OSS operation it is."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote

from aiohttp import web

# oss2's V1 whitelist (auth.ProviderAuth._subresource_key_set): only these enter the signature,
# and a request on an object that carries one calls a subresource, not the object.
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
SUBRESOURCES: Final = frozenset(_SUBRESOURCE_NAMES.split())


@dataclass(frozen=True)
class Target:
    """A request as the server reads it; `operation` names the OSS call it makes."""

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
        if set(self.query) & SUBRESOURCES:
            return f"{self.method}ObjectSubresource"
        names = {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject"}
        return names.get(self.method, "DeleteObject" if self.method == "DELETE" else "Unknown")


def target_of(request: web.Request) -> Target:
    """The bucket and key of a path-style request (percent-decoded), its query and headers."""
    bucket, _, key = request.rel_url.raw_path.lstrip("/").partition("/")
    query = dict(parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True))
    return Target(request.method, unquote(bucket), unquote(key), query, request.headers)
