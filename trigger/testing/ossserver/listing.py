"""ListObjectsV2: one page of a bucket's keys, as OSS's XML.

It honours prefix, delimiter (common prefixes), start-after, max-keys (capped at 1000),
fetch-owner and `encoding-type=url`; a continuation token encodes the key or common
prefix the page ended on, so the next page resumes right after it.
"""

from __future__ import annotations

import base64
import binascii
import xml.etree.ElementTree as ET
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote

from trigger.testing.ossserver.errors import Fault
from trigger.testing.ossserver.objects import Bucket, StoredObject, iso_millis

_DEFAULT_MAX_KEYS: Final = 100
_MAX_KEYS_LIMIT: Final = 1000


def list_objects(bucket: Bucket, query: Mapping[str, str], account: str) -> bytes:
    """The ListObjectsV2 answer for a request's query: one page, as OSS's XML."""
    q = _ListQuery.parse(query)
    resume = _decode_token(q.token) if q.token else None
    index = _start_index(bucket, q.prefix, q.start_after, resume)
    page = _page(bucket, q.prefix, q.delimiter, index, q.max_keys)
    return _list_xml(bucket.name, q, page, account)


@dataclass
class _Page:
    """One page of a listing: objects and common prefixes, and what it ended on."""

    contents: list[StoredObject] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    last: tuple[str, str] | None = None  # ("K", key) or ("P", common prefix)
    truncated: bool = False


def _successor(prefix: str) -> str:
    """The smallest string greater than every string that starts with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _start_index(
    bucket: Bucket, prefix: str, start_after: str, resume: tuple[str, str] | None
) -> int:
    """Where a page starts: after `start-after`, or after what the last page ended on."""
    if resume is not None:
        kind, name = resume
        after = bisect_right(bucket.keys, name) if kind == "K" else _skip(bucket, name)
    else:
        after = bisect_right(bucket.keys, start_after) if start_after else 0
    return max(after, bisect_left(bucket.keys, prefix))


def _skip(bucket: Bucket, common_prefix: str) -> int:
    return bisect_left(bucket.keys, _successor(common_prefix))


def _page(bucket: Bucket, prefix: str, delimiter: str, index: int, max_keys: int) -> _Page:
    """Up to `max_keys` keys and common prefixes from `index` on."""
    page, keys = _Page(), bucket.keys
    while len(page.contents) + len(page.prefixes) < max_keys and index < len(keys):
        key = keys[index]
        if not key.startswith(prefix):
            break
        cut = key.find(delimiter, len(prefix)) if delimiter else -1
        if cut >= 0:
            common = key[: cut + len(delimiter)]
            page.prefixes.append(common)
            page.last, index = ("P", common), _skip(bucket, common)
        else:
            page.contents.append(bucket.objects[key])
            page.last, index = ("K", key), index + 1
    page.truncated = index < len(keys) and keys[index].startswith(prefix)
    return page


def _encode_token(last: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode((last[0] + last[1]).encode()).decode()


def _decode_token(token: str) -> tuple[str, str]:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise Fault(400, "InvalidArgument", "The continuation token is invalid.") from exc
    if text[:1] not in ("K", "P") or len(text) < 2:
        raise Fault(400, "InvalidArgument", "The continuation token is invalid.")
    return text[0], text[1:]


def _xml_document(root: ET.Element) -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode").encode()
    )


def _text(parent: ET.Element, tag: str, text: str) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = text
    return child


@dataclass(frozen=True)
class _ListQuery:
    """The parameters of a ListObjectsV2 request."""

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
            raise Fault(400, "InvalidArgument", f"max-keys {raw_max!r} is not a positive number.")
        encoding = query.get("encoding-type", "")
        if encoding not in ("", "url"):
            raise Fault(400, "InvalidArgument", f"Unsupported encoding-type {encoding!r}.")
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
