"""Decoder for generic webhook requests, and for `{"webhook": {...}}` event files.

The body is decoded by its Content-Type: JSON (`application/json`, `*/*+json`) is parsed,
a form is a dict (a repeated name becomes a list), text is a str, and anything that is not
text becomes base64. An empty body is None whatever its type, as senders often label an
empty POST `application/json`. The id is the sender's delivery id when it sends one, so
its retries deduplicate; otherwise a hash of the request's content.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final
from urllib.parse import parse_qs

from trigger.decoders._common import (
    MAX_BYTES,
    as_mapping,
    at,
    b64text,
    check_size,
    compact_json,
    encode_utf8,
    opt_mapping,
    opt_str,
    parse_json,
    req_mapping,
    req_str,
)
from trigger.errors import DecodeError
from trigger.events import EPOCH, Event, content_id, parse_time

# Delivery ids, most specific first: GitHub, common proxies/gateways, CloudEvents binary mode.
DELIVERY_ID_HEADERS: Final = (
    "x-github-delivery",
    "x-request-id",
    "x-delivery-id",
    "ce-id",
    "idempotency-key",
)
_FORM: Final = "application/x-www-form-urlencoded"


def decode_webhook(
    path: str,
    method: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    body: bytes,
    *,
    received: datetime,
    max_bytes: int = MAX_BYTES,
) -> Event:
    """Decode one HTTP request; header names are lower-cased (the last repeat wins), and
    bytes of a header value that are not UTF-8 become U+FFFD."""
    check_size(body, max_bytes, where="body")
    lowered = {name.lower(): _text(value) for name, value in headers.items()}
    decoded = decode_body(body, lowered.get("content-type", ""))
    method = method.upper()
    delivery = next((lowered[name] for name in DELIVERY_ID_HEADERS if lowered.get(name)), None)
    fields = {
        "path": path,
        "method": method,
        "headers": lowered,
        "query": dict(query),
        "body": decoded,
    }
    return Event(
        id=delivery or content_id(method, path, body),
        source="webhook",
        type="webhook.request",
        subject=path,
        time=parse_time(received, where="received"),
        data=decoded,
        fields=fields,
        raw=body,
    )


def _text(value: str) -> str:
    """A header value as text. aiohttp hands over bytes that are not UTF-8 as lone
    surrogates (`surrogateescape`), which are no characters: no manifest, API server or
    dead letter could carry them. They become U+FFFD, as yarl does in the query."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def decode_body(body: bytes, content_type: str) -> Any:
    """The body decoded per its Content-Type (see the module docstring)."""
    if not body:
        return None
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    charset = _charset(params)
    if media == "application/json" or media.endswith("+json"):
        return parse_json(_strict_text(body, charset), where="body")
    if media == _FORM:
        return _form(_strict_text(body, charset))
    try:
        return body.decode(charset)
    except UnicodeDecodeError:
        return b64text(body)


def _charset(params: str) -> str:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            try:
                return codecs.lookup(charset).name
            except LookupError as exc:
                raise DecodeError(f"unknown charset {charset!r}", where="content-type") from exc
    return "utf-8"


def _strict_text(body: bytes, charset: str) -> str:
    try:
        return body.decode(charset).removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid {charset} at byte {exc.start}", where="body") from exc


def _form(text: str) -> dict[str, str | list[str]]:
    try:
        parsed = parse_qs(text, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"invalid form body: {exc}", where="body") from exc
    return {name: values[0] if len(values) == 1 else values for name, values in parsed.items()}


# --- event files: {"webhook": {...}} ----------------------------------------------------


def decode_webhook_file(obj: Mapping[str, Any]) -> Event:
    """Decode `{"webhook": {path, method?, headers?, query?, body?, time?}}`.

    A string body is sent as its UTF-8 bytes; any other JSON body as compact JSON, labelled
    `application/json` unless the headers say otherwise. `method` defaults to POST and the
    receive time to the Unix epoch (a dry run has no clock worth reading).
    """
    where = "webhook"
    spec = req_mapping(as_mapping(obj, "$"), where, "")
    headers = _strings(spec, "headers", where)
    body_value = spec.get("body")
    body_where = at(where, "body")
    if body_value is None:
        body = b""
    elif isinstance(body_value, str):
        body = encode_utf8(body_value, where=body_where)
    else:
        body = compact_json(body_value, where=body_where)
        if not any(name.lower() == "content-type" for name in headers):
            headers["content-type"] = "application/json"
    moment = spec.get("time")
    return decode_webhook(
        path=req_str(spec, "path", where),
        method=opt_str(spec, "method", where) or "POST",
        headers=headers,
        query=_strings(spec, "query", where),
        body=body,
        received=EPOCH if moment is None else parse_time(moment, where=at(where, "time")),
    )


def _strings(spec: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    values = opt_mapping(spec, key, where) or {}
    for name, value in values.items():
        if not isinstance(value, str):
            raise DecodeError(
                f"expected a string, got {type(value).__name__}", where=at(at(where, key), name)
            )
    return dict(values)
