"""Argo Events payloads → trigger's event document: paths, filters and parameter values.

An Argo Events dependency sees its event's `data` (a webhook's `{header, body}`, a Kafka
message's `{topic, key, partition, body, ...}`, MinIO's `{notification: [...]}`) and names
parts of it with gjson paths (`body.message`, `notification.0.s3.object.key`). trigger
sees one document per event with the source's fields at the top (README "What filters and
templates see"). A `DataMap` translates one into the other for one kind of event source;
the functions here build patterns, CEL and Jinja from the translated paths.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from trigger.rules.convert.result import literal

Segment = str | int
FieldPath = tuple[Segment, ...]
_IDENTIFIER: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_GJSON_SPECIAL: Final = re.compile(r"[*?#|@!=<>%\[\]{}]")
# CEL reserved words cannot follow a dot.
_CEL_RESERVED: Final = frozenset(
    {
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "in",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
        "true",
        "false",
        "null",
    }
)


@dataclass(frozen=True)
class Constant:
    """A value fixed in the EventSource (a calendar's `metadata`), the same for every event."""

    value: Any


@dataclass(frozen=True)
class Mapped:
    """Where a gjson path of the original event lands in trigger's event, and what differs."""

    path: FieldPath
    caveat: str | None = None


Translation = Mapped | Constant | None
Translator = Callable[[FieldPath], Translation]


@dataclass
class DataMap:
    """One event source kind's translation of payload paths (`None`: no equivalent)."""

    translate: Translator
    shape: str  # what the original event's data holds, for the report
    whole: str = "event.data"  # what "the whole event" is when no key is given

    def whole_at(self, root: str) -> str:
        """`whole` for the event at `root` (a gate member's instead of `event`)."""
        return root + self.whole.removeprefix("event")


def gjson_path(path: str) -> FieldPath | None:
    """`body.items.0.name` → ("body", "items", 0, "name"); None for gjson's query syntax
    (wildcards, `#`, modifiers), which has no equivalent."""
    if not path or _GJSON_SPECIAL.search(path.replace("\\.", "")):
        return None
    parts = re.split(r"(?<!\\)\.", path)
    out: list[Segment] = []
    for raw in parts:
        part = raw.replace("\\.", ".")
        if not part:
            return None
        out.append(int(part) if part.isdigit() else part)
    return tuple(out)


def jinja_path(path: FieldPath, root: str = "event") -> str:
    text = root
    for seg in path:
        if isinstance(seg, int):
            text += f"[{seg}]"
        elif _IDENTIFIER.match(seg):
            text += f".{seg}"
        else:
            text += f"[{json.dumps(seg)}]"
    return text


def cel_path(path: FieldPath) -> str:
    text = "event"
    for seg in path:
        if isinstance(seg, int):
            text += f"[{seg}]"
        elif _IDENTIFIER.match(seg) and seg not in _CEL_RESERVED:
            text += f".{seg}"
        else:
            text += f"[{cel_string(seg)}]"
    return text


def cel_string(text: str) -> str:
    """A CEL string literal for `text` (JSON escapes are valid CEL escapes)."""
    return json.dumps(text, ensure_ascii=False)


# -- data filters -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One converted filter: always as CEL; also as a pattern leaf when it maps exactly."""

    cel: str
    path: FieldPath | None = None
    alternatives: list[Any] | None = None


_NUMERIC_OPS: Final = {"=": "==", "": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_REGEX_META: Final = re.compile(r"[.^$*+?()\[\]{}|\\]")


def data_condition(spec: dict[str, Any], path: FieldPath) -> tuple[Condition | None, str | None]:
    """An Argo Events data filter on `path` → a Condition, or None and why not."""
    kind = spec.get("type")
    values = [str(v) for v in spec.get("value") or []]
    comparator = str(spec.get("comparator") or "")
    if not values:
        return None, "a data filter with no values never passes in Argo Events"
    if spec.get("template"):
        return None, "data filter templates (Go templates over the value) have no equivalent"
    if kind == "bool":
        flags = [v.lower() in ("1", "t", "true") for v in values]
        cel = " || ".join(f"{cel_path(path)} == {str(f).lower()}" for f in flags)
        return Condition(f"({cel})", path, sorted(set(flags))), None
    if kind == "number":
        return _number(path, values, comparator)
    if kind == "string":
        return _string(path, values, comparator)
    return None, f"unknown data filter type {kind!r}"


def _number(
    path: FieldPath, values: list[str], comparator: str
) -> tuple[Condition | None, str | None]:
    if comparator not in _NUMERIC_OPS:
        return None, f"unknown comparator {comparator!r}"
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        return None, f"values {values} are not all numbers"
    op = _NUMERIC_OPS[comparator]
    cel = " || ".join(f"{cel_path(path)} {op} {n!r}" for n in numbers)
    if op == "!=":
        return Condition(f"({cel})"), None
    bound = "=" if op == "==" else op
    return Condition(f"({cel})", path, [{"numeric": [bound, n]} for n in numbers]), None


def _string(
    path: FieldPath, values: list[str], comparator: str
) -> tuple[Condition | None, str | None]:
    if comparator not in ("", "=", "!="):
        return None, f"comparator {comparator!r} does not apply to strings"
    for value in values:
        try:
            re.compile(value)
        except re.error as exc:
            return None, f"{value!r} is not a regular expression: {exc}"
    matches = [f"string({cel_path(path)}).matches({cel_string(v)})" for v in values]
    if comparator == "!=":
        return Condition("(" + " || ".join(f"!{m}" for m in matches) + ")"), None
    alternatives = [_regex_as_pattern(v) for v in values]
    if any(a is None for a in alternatives):
        return Condition("(" + " || ".join(matches) + ")"), None
    return Condition("(" + " || ".join(matches) + ")", path, alternatives), None


def _regex_as_pattern(regex: str) -> Any:
    """An unanchored regex search as an EventBridge operator, when the regex is a literal
    with at most a leading `^` and a trailing `$`; else None."""
    start = regex.startswith("^")
    end = regex.endswith("$") and not regex.endswith("\\$")
    body = regex[1 if start else 0 : len(regex) - 1 if end else len(regex)]
    if not body or _REGEX_META.search(body):
        return None
    if start and end:
        return body
    if start:
        return {"prefix": body}
    if end:
        return {"suffix": body}
    return {"wildcard": f"*{body}*"}


# -- govaluate expressions --------------------------------------------------------------------

_TOKEN: Final = re.compile(
    r"""\s*(?:(?P<number>\d+(?:\.\d+)?)|(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
    r"""|(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)|(?P<op>&&|\|\||==|!=|<=|>=|[<>!()+\-*/%]))"""
)


def govaluate_to_cel(expr: str, fields: dict[str, str]) -> tuple[str | None, str | None]:
    """A govaluate expression over named fields → CEL over `event`; None and why when it
    uses what has no CEL twin here (regex operators, ternaries, `in`, functions).

    govaluate computes in float64; CEL does not mix int and double in arithmetic, so
    number literals become doubles and a field that is an operand of arithmetic is read
    with `double()`."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = expr.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            return None, f"{text[pos:]!r}: only comparisons, arithmetic, && || ! are converted"
        pos = match.end()
        kind = next(k for k in ("number", "string", "name", "op") if match[k] is not None)
        tokens.append((kind, match[kind]))
    out: list[str] = []
    for index, (kind, token) in enumerate(tokens):
        if kind == "number":
            out.append(token if "." in token else f"{token}.0")
        elif kind == "string":
            out.append(cel_string(token[1:-1]))
        elif kind == "op" or token in ("true", "false"):
            out.append(token)
        elif token in fields:
            numeric = _arithmetic_operand(tokens, index)
            out.append(f"double({fields[token]})" if numeric else fields[token])
        else:
            return None, f"{token!r} is neither a field nor a literal"
    return " ".join(out).replace("( ", "(").replace(" )", ")").replace("! ", "!"), None


def _arithmetic_operand(tokens: list[tuple[str, str]], index: int) -> bool:
    """Whether the token at `index` is an operand of - * / %, or of + with a number."""
    for step in (-1, 1):
        near = index + step
        if not 0 <= near < len(tokens) or tokens[near] not in _ARITHMETIC:
            continue
        if tokens[near][1] != "+":
            return True
        other = near + step
        if 0 <= other < len(tokens) and tokens[other][0] == "number":
            return True
    return False


_ARITHMETIC: Final = {("op", o) for o in "+-*/%"}


# -- parameter values -------------------------------------------------------------------------

_GO_ACTION: Final = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")


def go_template_to_jinja(
    template: str, data: DataMap, root: str = "event"
) -> tuple[str | None, str | None]:
    """A `dataTemplate` made of text and `{{ .Input.PATH }}` actions → Jinja (over the event
    at `root`) and caveats, or None and why not."""
    out: list[str] = []
    caveats: list[str] = []
    last = 0
    for match in _GO_ACTION.finditer(template):
        out.append(literal(template[last : match.start()]))
        last = match.end()
        action = match[1]
        if not action.startswith(".Input."):
            return None, f"{{{{ {action} }}}}: only {{{{ .Input.PATH }}}} actions are converted"
        rendered, why = value_of(action[len(".Input.") :], data, root)
        if rendered is None:
            return None, why
        caveats.extend([why] if why else [])
        out.append(rendered)
    out.append(literal(template[last:]))
    return "".join(out), "; ".join(caveats) or None


def value_of(key: str, data: DataMap, root: str = "event") -> tuple[str | None, str | None]:
    """The Jinja that renders the gjson path `key` of the original event (trigger's event
    at `root`: `event`, or a gate member's), and what differs (a caveat); or None and why
    not."""
    path = gjson_path(key)
    if path is None:
        return None, f"{key!r} uses gjson query syntax, which has no equivalent"
    mapped = data.translate(path)
    if mapped is None:
        return None, f"{key!r} has no equivalent in trigger's event ({data.shape})"
    if isinstance(mapped, Constant):
        return literal(mapped.value), None
    return "{{ " + jinja_path(mapped.path, root) + " }}", mapped.caveat
