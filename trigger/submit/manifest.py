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

import functools
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


@functools.lru_cache(maxsize=4096)
def _key(key: str) -> str:
    """Keys repeat from one manifest to the next (apiVersion, metadata, name...)."""
    return _scalar(key)


def _emit(value: Any, indent: str, lines: list[str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            head = f"{indent}{_key(str(key))}:"
            if isinstance(item, Mapping | list) and item:
                lines.append(head)
                _emit(item, indent + "  " if isinstance(item, Mapping) else indent, lines)
            else:
                lines.append(f"{head} {_inline(item)}")
    else:
        for item in value:
            if isinstance(item, Mapping) and item:
                inner: list[str] = []
                _emit(item, indent + "  ", inner)
                lines.append(f"{indent}- {inner[0].lstrip()}")
                lines.extend(inner[1:])
            elif isinstance(item, list) and item:
                inner = []
                _emit(item, indent + "  ", inner)
                lines.append(f"{indent}- {inner[0].lstrip()}")
                lines.extend(inner[1:])
            else:
                lines.append(f"{indent}- {_inline(item)}")


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(value)


def to_yaml(document: Mapping[str, Any]) -> str:
    """One YAML document for `document` (a mapping of plain data), keys in their order."""
    lines: list[str] = []
    _emit(document, "", lines)
    return "\n".join(lines) + "\n"
