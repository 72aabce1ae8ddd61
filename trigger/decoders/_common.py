"""Shared parsing helpers for the decoders: size guard, UTF-8, JSON and typed field access.

Each helper turns malformed input into a `DecodeError` that names where the problem is, so
no decoder leaks KeyError, TypeError, UnicodeDecodeError or json errors. A `where` is a
path such as `$.data.oss.bucket`; `at(where, key)` extends it by one step.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

from trigger.errors import DecodeError

MAX_BYTES: Final = 10 * 1024 * 1024
# Objects and arrays nested deeper than this are refused: everything downstream — filters,
# templates, dead letters, logs — walks event data, and Python's recursion would fail
# between 450 and 1,000 levels, in places that cannot tell the event from a bug.
MAX_DEPTH: Final = 100
_UTF8_MAX_WIDTH: Final = 4  # bytes per character, the most UTF-8 ever needs


def at(where: str, key: str | int) -> str:
    """The path one step below `where`: `.key` for names, `[i]` for indexes."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def check_size(body: bytes | str, max_bytes: int, *, where: str) -> None:
    """Refuse a body larger than `max_bytes` (counted in UTF-8 bytes for text)."""
    size = len(body)
    # Encoding is only needed when the character count alone cannot decide.
    if isinstance(body, str) and size <= max_bytes < size * _UTF8_MAX_WIDTH:
        size = len(body.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        message = f"body of {size} bytes exceeds the limit of {max_bytes} bytes"
        raise DecodeError(message, where=where)


def utf8(data: bytes, *, where: str) -> str:
    """Decode UTF-8 strictly, dropping a leading byte-order mark."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 at byte {exc.start}", where=where) from exc


def text_of(body: bytes | str, max_bytes: int, *, where: str) -> str:
    """The body as text, after the size guard."""
    check_size(body, max_bytes, where=where)
    return body.removeprefix("\ufeff") if isinstance(body, str) else utf8(body, where=where)


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; letting them in breaks every JSON consumer downstream.
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    # `1e400` reads as infinity, which is not JSON either: it would come back out as
    # `Infinity` from every JSON writer downstream, and as "inf" in a parameter.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


# One decoder for every call: json.loads() with any keyword argument builds a new one.
_DECODER: Final = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)
# A `\uD800`-`\uDFFF` escape: JSON lets one stand alone, but a lone surrogate is not a
# character, and no UTF-8 writer (a manifest, the API server, a dead letter) can take it.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(text: str, *, where: str) -> Any:
    """Parse JSON; any failure (syntax, NaN, nesting deeper than MAX_DEPTH, huge ints) is a
    DecodeError."""
    try:
        if text.startswith("\ufeff"):  # what json.loads() refuses before decoding
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise DecodeError(message, where=where) from exc
    except (ValueError, RecursionError) as exc:
        raise DecodeError(f"invalid JSON: {exc}", where=where) from exc
    # Counting brackets is C-speed and settles nearly every document: fewer than
    # MAX_DEPTH of them cannot nest deeper. Only the rest are walked.
    if text.count("{") + text.count("[") > MAX_DEPTH and too_deep(value, MAX_DEPTH):
        raise DecodeError(f"JSON nested deeper than {MAX_DEPTH} levels", where=where)
    if _SURROGATE_ESCAPE.search(text) and _lone_surrogate(value):
        message = "invalid JSON: a \\u escape is a lone surrogate, not a character"
        raise DecodeError(message, where=where)
    return value


def _lone_surrogate(value: Any) -> bool:
    """Whether a string anywhere in `value` (keys included) holds a lone surrogate."""
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            stack.extend(node.keys())
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
        elif type(node) is str:
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def too_deep(value: Any, limit: int) -> bool:
    """Whether objects and arrays in `value` nest more than `limit` levels (no recursion)."""
    if type(value) is not dict and type(value) is not list:
        return False
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def unbase64(text: str, *, where: str) -> bytes:
    """Decode standard base64, tolerating line breaks but nothing else."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"invalid base64: {exc}", where=where) from exc


def b64text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def as_mapping(value: Any, where: str) -> Mapping[str, Any]:
    # `type is dict` first: parsed JSON is always a dict, and the ABC check is slow.
    if type(value) is not dict and not isinstance(value, Mapping):
        raise DecodeError(f"expected an object, got {_kind(value)}", where=where)
    return value


def as_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise DecodeError(f"expected an array, got {_kind(value)}", where=where)
    return value


def required(obj: Mapping[str, Any], key: str, where: str) -> Any:
    value = obj.get(key)
    if value is None:
        raise DecodeError("missing", where=at(where, key))
    return value


# The accessors below build the path to the member only when reporting a problem: they run
# a dozen times per event on the hot path.


def req_mapping(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if type(value) is dict:
        return value
    return as_mapping(required(obj, key, where), at(where, key))


def opt_mapping(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    value = obj.get(key)
    if value is None or type(value) is dict:
        return value
    return as_mapping(value, at(where, key))


def req_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = required(obj, key, where)
    if not isinstance(value, str):
        raise DecodeError(f"expected a string, got {_kind(value)}", where=at(where, key))
    return value


def opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    """A string member, or None when it is absent, null or empty."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DecodeError(f"expected a string, got {_kind(value)}", where=at(where, key))
    return value


def opt_int(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DecodeError(f"expected an integer, got {_kind(value)}", where=at(where, key))
    return value


def req_int(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = opt_int(obj, key, where)
    if value is None:
        raise DecodeError("missing", where=at(where, key))
    return value


def encode_utf8(text: str, *, where: str) -> bytes:
    """UTF-8 bytes of text that came from JSON, where `\\ud800` escapes allow lone surrogates."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DecodeError(f"text is not encodable as UTF-8 at {exc.start}", where=where) from exc


def compact_json(value: Any, *, where: str) -> bytes:
    """The canonical byte form of a JSON value given inline in an event file."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return encode_utf8(text, where=where)
