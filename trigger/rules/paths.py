"""A fast path for the most common templates: literal text around `{{ dotted.paths }}`.

`oss://{{ event.bucket }}/{{ event.key }}` or `{{ event.value.orderId }}` need none of
Jinja's machinery, yet a Jinja render costs tens of microseconds per parameter per event.
Such templates are rendered here by plain dictionary lookups with the same result as the
sandbox: strict about missing keys, the same text for every kind of value, the same
output limit. A segment that names an attribute of a dict, list or string (`items`,
`upper`, ...) means something else in Jinja, so templates using one are left to Jinja, as
is anything with filters, tests, whitespace control or statements.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

_IDENT: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_EXPRESSION: Final = re.compile(r"\{\{ *(" + _IDENT + r"(?:\." + _IDENT + r")*) *\}\}")
_SHADOWED: Final = frozenset(dir(dict) + dir(list) + dir(str) + dir(int) + dir(float))

Part = str | tuple[str, ...]
Finalize = Callable[[tuple[str, ...], Any], Any]  # (the path, its value) -> what is shown


class PathFailure(Exception):  # converted by the caller into its own error
    """A path that does not resolve; the message reads like Jinja's."""


_JINJA_NAMES: Final = frozenset(
    {"true", "false", "none", "True", "False", "None", "self", "loop", "super"}
    | {"varargs", "kwargs", "caller"}
)


def compile_paths(text: str, reserved: frozenset[str] = frozenset()) -> tuple[Part, ...] | None:
    """The parts of `text` (already newline-normalised) if it is literal text around plain
    `{{ a.b.c }}` expressions over context variables, else None (Jinja must render it).
    Names Jinja gives a meaning of its own (`true`, `self`, globals in `reserved`) are
    left to Jinja."""
    parts: list[Part] = []
    position = 0
    for match in _EXPRESSION.finditer(text):
        literal = text[position : match.start()]
        if any(marker in literal for marker in ("{{", "{%", "{#", "}}", "%}", "#}")):
            return None
        if literal:
            parts.append(literal)
        path = tuple(match.group(1).split("."))
        if path[0] in _JINJA_NAMES or path[0] in reserved:
            return None
        if any(segment in _SHADOWED for segment in path[1:]):
            return None
        parts.append(path)
        position = match.end()
    tail = text[position:]
    if any(marker in tail for marker in ("{{", "{%", "{#", "}}", "%}", "#}")):
        return None
    if tail:
        parts.append(tail)
    return tuple(parts) if any(isinstance(p, tuple) for p in parts) else None


def render_paths(
    parts: tuple[Part, ...], context: Mapping[str, Any], finalize: Finalize, limit: int
) -> str:
    """Render compiled parts; raises PathFailure for a missing name or key, or long output."""
    chunks: list[str] = []
    size = 0
    for part in parts:
        if isinstance(part, str):
            chunk = part
        else:
            value = _resolve(part, context)
            if type(value) is str:
                chunk = value
            else:
                shown = finalize(part, value)
                chunk = shown if isinstance(shown, str) else str(shown)
        size += len(chunk)
        if size > limit:
            raise PathFailure(f"output is over the limit of {limit} bytes")
        chunks.append(chunk)
    output = "".join(chunks)
    if size > limit // 4 and len(output.encode()) > limit:
        raise PathFailure(f"output is over the limit of {limit} bytes")
    return output


def _resolve(path: tuple[str, ...], context: Mapping[str, Any]) -> Any:
    head = path[0]
    if head not in context:
        raise PathFailure(f"undefined: '{head}' is undefined")
    value = context[head]
    for segment in path[1:]:
        if isinstance(value, Mapping) and segment in value:
            value = value[segment]
        elif isinstance(value, Mapping):
            raise PathFailure(f"undefined: 'dict object' has no attribute '{segment}'")
        else:
            kind = type(value).__name__ if value is not None else "None"
            raise PathFailure(f"undefined: '{kind} object' has no attribute '{segment}'")
    return value
