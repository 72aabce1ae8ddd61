"""Workflow manifests as YAML, fast.

PyYAML's representer walks objects in Python and costs ~270 µs for one small Workflow on
this class of machine — most of the local sink's time. Manifests are plain data (dicts,
lists, strings, numbers, booleans, None), so they are written here in block style with
every string either plain, when it cannot be read as anything but that string by a YAML
1.1 or 1.2 reader, or double-quoted with JSON escapes (JSON's escapes are a subset of
YAML's). The result reads back with any YAML parser (PyYAML, kubectl) to the same data;
tests check the round trip on a table of ambiguous strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

_PLAIN: Final = re.compile(r"[A-Za-z_/][A-Za-z0-9_./@+-]*(?::[A-Za-z0-9_./@+-]+)*\Z")
_SPECIAL: Final = frozenset(
    {"y", "yes", "n", "no", "true", "false", "on", "off", "null", "nan", "inf"}
)


# JSON leaves DEL, C1 controls, U+2028/2029 and the BOM raw; YAML readers refuse or fold
# them, so they are written as YAML \u / \U escapes instead.
_UNPRINTABLE: Final = re.compile(r"[^\x20-\x7e]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _SPECIAL and not value.endswith(":"):
            return value
        quoted = json.dumps(value, ensure_ascii=False)
        return quoted if quoted.isprintable() else _UNPRINTABLE.sub(_escape, quoted)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    raise TypeError(f"cannot write {type(value).__name__} in a manifest")


# Strings repeat from one manifest to the next (keys, namespaces, label values, template
# names); their written form is kept, up to a bound, so most scalars cost one dict lookup.
_SEEN_LIMIT: Final = 8192
_seen: dict[str, str] = {}


def _string(value: str) -> str:
    written = _seen.get(value)
    if written is None:
        written = _scalar(value)
        if len(_seen) >= _SEEN_LIMIT:
            _seen.clear()
        _seen[value] = written
    return written


def _inline(value: Any) -> str:
    """A scalar or an empty collection, written on its key's or dash's line."""
    kind = type(value)
    if kind is str:
        return _seen.get(value) or _string(value)
    if kind is dict or isinstance(value, Mapping):
        return "{}"
    if kind is list:
        return "[]"
    return _scalar(value)


def _emit(value: Any, indent: str, lines: list[str]) -> None:
    # Exact type checks first and the common case (a string) inline: manifests are plain
    # dicts, lists and strings, and a function call or ABC isinstance() per node was most
    # of the cost.
    seen = _seen
    append = lines.append
    if type(value) is dict or isinstance(value, Mapping):
        inner = indent + "  "
        for name, item in value.items():
            key = name if type(name) is str else str(name)
            head = indent + (seen.get(key) or _string(key)) + ":"
            kind = type(item)
            if kind is str:
                append(head + " " + (seen.get(item) or _string(item)))
            elif item and (kind is dict or kind is list or isinstance(item, Mapping)):
                append(head)
                _emit(item, indent if kind is list else inner, lines)
            else:
                append(head + " " + _inline(item))
        return
    inner = indent + "  "
    for item in value:
        kind = type(item)
        if kind is str:
            append(indent + "- " + (seen.get(item) or _string(item)))
        elif item and (kind is dict or kind is list or isinstance(item, Mapping)):
            block: list[str] = []
            _emit(item, inner, block)
            append(indent + "- " + block[0].lstrip())
            lines.extend(block[1:])
        else:
            append(indent + "- " + _inline(item))


def to_yaml(document: Mapping[str, Any]) -> str:
    """One YAML document for `document` (a mapping of plain data), keys in their order."""
    lines: list[str] = []
    _emit(document, "", lines)
    return "\n".join(lines) + "\n"
