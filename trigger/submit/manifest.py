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
    kind = type(value)
    if kind is str:
        return _string(value)
    if kind is dict or isinstance(value, Mapping):
        return "{}"
    if kind is list:
        return "[]"
    return _scalar(value)


def _is_block(value: Any) -> bool:
    """A non-empty mapping or list: written on the lines below its key or dash."""
    kind = type(value)
    if kind is dict or kind is list:
        return bool(value)
    return isinstance(value, Mapping) and bool(value)


def _emit(value: Any, indent: str, lines: list[str]) -> None:
    # Exact type checks first: manifests are plain dicts and lists, and an ABC
    # isinstance() per node was most of the cost.
    if type(value) is dict or isinstance(value, Mapping):
        inner = indent + "  "
        for key, item in value.items():
            head = f"{indent}{_string(key if type(key) is str else str(key))}:"
            if _is_block(item):
                lines.append(head)
                _emit(item, inner if type(item) is not list else indent, lines)
            else:
                lines.append(f"{head} {_inline(item)}")
        return
    inner = indent + "  "
    for item in value:
        if _is_block(item):
            block: list[str] = []
            _emit(item, inner, block)
            lines.append(f"{indent}- {block[0].lstrip()}")
            lines.extend(block[1:])
        else:
            lines.append(f"{indent}- {_inline(item)}")


def to_yaml(document: Mapping[str, Any]) -> str:
    """One YAML document for `document` (a mapping of plain data), keys in their order."""
    lines: list[str] = []
    _emit(document, "", lines)
    return "\n".join(lines) + "\n"
