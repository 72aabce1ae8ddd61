"""EventBridge content patterns, compiled once into closures that match event documents.

The language is Amazon EventBridge's (the reference implementation is aws/event-ruler), so
users who write patterns for EventBridge on AWS or Alibaba Cloud can reuse them unchanged:

- pattern keys are ANDed; a nested object descends into the event's nested object;
- a leaf is an array of conditions, ORed: exact strings, numbers (5 matches 5.0, never "5"),
  booleans and null (which is neither "" nor a missing key), or one-key operator objects:
  ``prefix``, ``suffix`` (each optionally ``{"equals-ignore-case": ...}``),
  ``equals-ignore-case``, ``wildcard``, ``anything-but``, ``numeric``, ``exists``, ``cidr``;
- ``"$or": [{...}, {...}]`` at any level: any one of two or more sub-patterns must match.

Event-side rules, as event-ruler applies them:

- only leaf values (strings, numbers, booleans, null) are matched; an array matches when any
  of its elements does, and arrays of objects are matched element by element, so the fields
  of one sub-pattern must all hold in the same element;
- a field whose event value is an object, or an empty array, has no leaf value: only
  ``exists: false`` matches it, just as for a missing field;
- ``anything-but`` needs a leaf value and matches every value that is not excluded, including
  values of another type (``anything-but: "a"`` matches 5 and null);
- ``prefix``, ``suffix``, ``equals-ignore-case``, ``wildcard`` and ``cidr`` only match strings;
  ``numeric`` only matches JSON numbers (never booleans, never numeric strings).
"""

from __future__ import annotations

import ipaddress
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, TypeVar, cast

from trigger.errors import PatternError, PatternErrors

Predicate = Callable[[Any], bool]
PathT = tuple[str | int, ...]
T = TypeVar("T")

_MISSING: Final = object()  # a key absent from the event, distinct from a JSON null
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_OR: Final = "$or"

_COMPARATORS: Final[Mapping[str, Callable[[Any, Any], bool]]] = MappingProxyType(
    {"=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
)
_LOWER_BOUNDS: Final = frozenset({">", ">="})
_UPPER_BOUNDS: Final = frozenset({"<", "<="})


class Pattern:
    """A compiled content pattern; `matches` is pure and never raises on a JSON-like document."""

    __slots__ = ("_match", "source")

    def __init__(self, source: Mapping[str, Any], match: Predicate) -> None:
        self.source = source
        self._match = match

    def matches(self, doc: Mapping[str, Any]) -> bool:
        """True when the document satisfies every condition of the pattern."""
        return self._match(doc)

    def explain(self, doc: Mapping[str, Any], root: str = "event") -> list[str]:
        """Why the document does not match, one line per failing field (the field, the
        value seen and what was expected); empty when it matches. Slow: for humans."""
        if self._match(doc):
            return []
        return _explain_object(self.source, doc, root) or ["the pattern does not match"]

    def __repr__(self) -> str:
        return f"Pattern({self.source!r})"


def compile_pattern(pattern: Mapping[str, Any]) -> Pattern:
    """Compile a content pattern; raise `PatternError` naming the path of the problem, or
    `PatternErrors` listing every problem when there are several."""
    if not isinstance(pattern, Mapping):
        raise PatternError("a pattern must be an object", path=())
    compiled = _compile_object(pattern, (), in_or=False)
    return Pattern(pattern, compiled.match)


def match_leaf(conditions: Sequence[Any]) -> Predicate:
    """Compile one leaf's condition array into a predicate over that field's value."""
    return _compile_leaf(conditions, ()).match


# --- event-side helpers ----------------------------------------------------------------


def _is_number(value: Any) -> bool:
    cls = value.__class__
    return cls is int or cls is float  # excludes bool, which is an int subclass


def _leaf_values(items: Sequence[Any]) -> list[Any]:
    """Every leaf value inside an event array, nested arrays flattened, objects skipped."""
    out: list[Any] = []
    stack = [iter(items)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list | tuple):
                stack.append(iter(item))
                break
            if not isinstance(item, Mapping):
                out.append(item)
        else:
            stack.pop()
    return out


def _object_elements(items: Sequence[Any]) -> list[Mapping[str, Any]]:
    """Every object inside an event array, nested arrays flattened."""
    out: list[Mapping[str, Any]] = []
    stack = [iter(items)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list | tuple):
                stack.append(iter(item))
                break
            if isinstance(item, Mapping):
                out.append(item)
        else:
            stack.pop()
    return out


# --- compiled nodes ----------------------------------------------------------------------


class _Compiled:
    """A compiled pattern node: its predicate over the field value and whether it only
    asserts absence (`exists: false`), which must then hold across every array element."""

    __slots__ = ("absence_only", "match")

    def __init__(self, match: Predicate, *, absence_only: bool) -> None:
        self.match = match
        self.absence_only = absence_only


def _compile_object(pattern: Mapping[Any, Any], path: PathT, *, in_or: bool) -> _Compiled:
    if not pattern:
        raise PatternError("empty objects are not allowed", path=path)
    positive: list[tuple[str, Predicate]] = []
    absent: list[tuple[str, Predicate]] = []
    alternatives: list[Predicate] = []
    problems = _Problems()
    for key, value in pattern.items():
        here = (*path, key)
        if key == _OR:
            branches = problems.attempt(_compile_or, value, here)
            if branches is not None:
                alternatives.append(_any_of(branches))
            continue
        node = problems.attempt(_compile_field, key, value, here, in_or)
        if node is not None:
            (absent if node.absence_only else positive).append((key, node.match))
    problems.raise_any()
    absence_only = not positive and not alternatives
    return _Compiled(
        _object_matcher(tuple(positive), tuple(absent), tuple(alternatives)),
        absence_only=absence_only,
    )


def _compile_field(key: Any, value: Any, here: PathT, in_or: bool) -> _Compiled:
    if not isinstance(key, str):
        raise PatternError(f"field name {key!r} is not a string", path=here)
    if in_or and key in _RESERVED_IN_OR:
        raise PatternError(f"{key!r} is an operator, not a field name, inside $or", path=here)
    if isinstance(value, Mapping):
        return _compile_object(value, here, in_or=in_or)
    if isinstance(value, list | tuple):
        return _compile_leaf(value, here)
    raise PatternError(f"{key!r} must be an object or an array", path=here)


class _Problems:
    """Every problem of a pattern is reported: compile each part, keep going past errors."""

    def __init__(self) -> None:
        self.found: list[PatternError] = []

    def attempt(self, compile_: Callable[..., T], *args: Any) -> T | None:
        try:
            return compile_(*args)
        except PatternError as exc:
            self.found.extend(exc.errors)
            return None

    def raise_any(self) -> None:
        if len(self.found) == 1:
            raise self.found[0]
        if self.found:
            raise PatternErrors(self.found)


def _compile_or(value: Any, path: PathT) -> list[Predicate]:
    if not isinstance(value, list | tuple) or len(value) < 2:
        raise PatternError("$or must be an array of at least 2 objects", path=path)
    branches = []
    problems = _Problems()
    for index, branch in enumerate(value):
        compiled = problems.attempt(_compile_branch, branch, (*path, index))
        if compiled is not None:
            branches.append(compiled.match)
    problems.raise_any()
    return branches


def _compile_branch(branch: Any, path: PathT) -> _Compiled:
    if not isinstance(branch, Mapping):
        raise PatternError("$or may only contain objects", path=path)
    return _compile_object(branch, path, in_or=True)


def _object_matcher(
    positive: tuple[tuple[str, Predicate], ...],
    absent: tuple[tuple[str, Predicate], ...],
    alternatives: tuple[Predicate, ...],
) -> Predicate:
    def holds(obj: Mapping[str, Any], fields: tuple[tuple[str, Predicate], ...]) -> bool:
        get = obj.get
        for key, match in fields:  # noqa: SIM110 - a plain loop: all() adds a generator per event
            if not match(get(key, _MISSING)):
                return False
        return True

    def positive_holds(obj: Mapping[str, Any]) -> bool:
        if not holds(obj, positive):
            return False
        for alternative in alternatives:  # noqa: SIM110 - as above, on the hot path
            if not alternative(obj):
                return False
        return True

    def general(obj: Mapping[str, Any]) -> bool:
        return holds(obj, absent) and positive_holds(obj)

    def only_positive(obj: Mapping[str, Any]) -> bool:
        get = obj.get
        for key, match in positive:  # noqa: SIM110 - as above, on the hot path
            if not match(get(key, _MISSING)):
                return False
        return True

    on_mapping = only_positive if not absent and not alternatives else general

    def match(node: Any) -> bool:
        if node.__class__ is dict or isinstance(node, Mapping):
            return on_mapping(node)
        if isinstance(node, list | tuple):
            elements = _object_elements(node)
            if elements:
                # Positive fields must agree within one element; a field is only absent when
                # no element has it, as in event-ruler's flattened view of the event.
                return all(holds(e, absent) for e in elements) and any(
                    positive_holds(e) for e in elements
                )
        return on_mapping(_EMPTY)

    return match


def _compile_leaf(conditions: Any, path: PathT) -> _Compiled:
    if not isinstance(conditions, list | tuple):
        raise PatternError("a leaf must be an array of conditions", path=path)
    if not conditions:
        raise PatternError("empty arrays are not allowed", path=path)
    exacts: list[Any] = []
    predicates: list[Predicate] = []
    exists: set[bool] = set()
    problems = _Problems()
    for index, condition in enumerate(conditions):
        here = (*path, index)
        if isinstance(condition, Mapping):
            operator_ = problems.attempt(_single_operator, condition, here)
            if operator_ is None:
                continue
            name, operand = operator_
            if name == "exists":
                flag = problems.attempt(_expect_bool, operand, (*here, name))
                if flag is not None:
                    exists.add(flag)
            else:
                predicate = problems.attempt(_OPERATORS[name], operand, (*here, name))
                if predicate is not None:
                    predicates.append(predicate)
        else:
            exact = problems.attempt(_check_exact, condition, here)
            if exact is not None or condition is None:
                exacts.append(exact)
    problems.raise_any()
    if exacts:
        predicates.insert(0, _exact_predicate(exacts))
    return _Compiled(
        _leaf_matcher(_any_of(predicates), present_ok=True in exists, absent_ok=False in exists),
        absence_only=not predicates and exists == {False},
    )


def _leaf_matcher(predicate: Predicate, *, present_ok: bool, absent_ok: bool) -> Predicate:
    def match(value: Any) -> bool:
        cls = value.__class__
        if cls is str or cls is int or cls is float or cls is bool or value is None:
            return present_ok or predicate(value)
        if value is _MISSING or isinstance(value, Mapping):
            return absent_ok
        if isinstance(value, list | tuple):
            leaves = _leaf_values(value)
            if not leaves:
                return absent_ok
            return present_ok or any(map(predicate, leaves))
        return present_ok or predicate(value)

    return match


def _any_of(predicates: list[Predicate]) -> Predicate:
    if not predicates:
        return _never
    if len(predicates) == 1:
        return predicates[0]
    chosen = tuple(predicates)

    def any_matches(value: Any) -> bool:
        for predicate in chosen:  # noqa: SIM110 - as above, on the hot path
            if predicate(value):
                return True
        return False

    return any_matches


def _never(_value: Any) -> bool:
    return False


# --- pattern-side validation ---------------------------------------------------------------


def _single_operator(condition: Mapping[Any, Any], path: PathT) -> tuple[str, Any]:
    if len(condition) != 1:
        raise PatternError("an operator object must have exactly one key", path=path)
    ((name, operand),) = condition.items()
    if name not in _OPERATORS and name != "exists":
        raise PatternError(f"unknown operator {name!r}", path=(*path, name))
    return name, operand


def _check_exact(value: Any, path: PathT) -> Any:
    if value is None or isinstance(value, str | bool):
        return value
    if _is_number(value):
        return _finite(value, path)
    raise PatternError("a value must be a string, number, boolean, null or operator", path=path)


def _finite(value: Any, path: PathT) -> int | float:
    if not _is_number(value):
        raise PatternError(f"{value!r} is not a number", path=path)
    if isinstance(value, float) and not math.isfinite(value):
        raise PatternError(f"{value!r} is not a finite number", path=path)
    return cast("int | float", value)


def _expect_bool(value: Any, path: PathT) -> bool:
    if not isinstance(value, bool):
        raise PatternError("exists takes true or false", path=path)
    return value


def _expect_str(value: Any, path: PathT, what: str) -> str:
    if not isinstance(value, str):
        raise PatternError(f"{what} takes a string", path=path)
    return value


def _string_list(value: Any, path: PathT, what: str) -> list[str]:
    """A string or a non-empty array of strings, as equals-ignore-case and wildcard accept."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple) or not value:
        raise PatternError(f"{what} takes a string or a non-empty array of strings", path=path)
    return [_expect_str(item, (*path, i), what) for i, item in enumerate(value)]


# --- positive operators --------------------------------------------------------------------


def _exact_predicate(values: list[Any]) -> Predicate:
    strings = frozenset(v for v in values if isinstance(v, str))
    numbers = frozenset(v for v in values if _is_number(v))
    booleans = frozenset(v for v in values if isinstance(v, bool))
    null = any(v is None for v in values)
    if len(strings) == len(values):
        return lambda value: isinstance(value, str) and value in strings

    def exact(value: Any) -> bool:
        if isinstance(value, str):
            return value in strings
        if _is_number(value):
            return value in numbers  # hash equality makes 5 match 5.0
        if isinstance(value, bool):
            return value in booleans
        return null and value is None

    return exact


def _prefix(operand: Any, path: PathT) -> Predicate:
    if isinstance(operand, Mapping):
        folded = _ignore_case_operand(operand, path, "prefix").casefold()
        return lambda value: isinstance(value, str) and value.casefold().startswith(folded)
    text = _expect_str(operand, path, "prefix")
    return lambda value: isinstance(value, str) and value.startswith(text)


def _suffix(operand: Any, path: PathT) -> Predicate:
    if isinstance(operand, Mapping):
        folded = _ignore_case_operand(operand, path, "suffix").casefold()
        return lambda value: isinstance(value, str) and value.casefold().endswith(folded)
    text = _expect_str(operand, path, "suffix")
    return lambda value: isinstance(value, str) and value.endswith(text)


def _ignore_case_operand(operand: Mapping[Any, Any], path: PathT, what: str) -> str:
    if len(operand) != 1 or "equals-ignore-case" not in operand:
        raise PatternError(f"{what} takes a string or {{equals-ignore-case: string}}", path=path)
    return _expect_str(operand["equals-ignore-case"], (*path, "equals-ignore-case"), what)


def _equals_ignore_case(operand: Any, path: PathT) -> Predicate:
    folded = _expect_str(operand, path, "equals-ignore-case").casefold()
    return lambda value: isinstance(value, str) and value.casefold() == folded


def _wildcard(operand: Any, path: PathT) -> Predicate:
    matches = _wildcard_matcher(_expect_str(operand, path, "wildcard"), path)
    return lambda value: isinstance(value, str) and matches(value)


def _wildcard_matcher(text: str, path: PathT) -> Callable[[str], bool]:
    """`*` is any run of characters, `\\*` a literal star, `\\\\` a literal backslash."""
    segments = _wildcard_segments(text, path)
    if len(segments) == 1:
        literal = segments[0]
        return lambda value: value == literal
    head, *middle, tail = segments
    minimum = sum(map(len, segments))

    def matches(value: str) -> bool:
        if len(value) < minimum or not value.startswith(head) or not value.endswith(tail):
            return False
        position, end = len(head), len(value) - len(tail)
        # Leftmost placement of each literal is always safe: stars absorb the gaps.
        for segment in middle:
            found = value.find(segment, position, end)
            if found < 0:
                return False
            position = found + len(segment)
        return True

    return matches


def _wildcard_segments(text: str, path: PathT) -> list[str]:
    """The literal runs between unescaped stars."""
    segments: list[str] = []
    current: list[str] = []
    index, previous_star = 0, False
    while index < len(text):
        char = text[index]
        if char == "\\":
            escaped = text[index + 1 : index + 2]
            if escaped not in ("*", "\\"):
                raise PatternError("wildcard: a backslash may only escape * or \\", path=path)
            current.append(escaped)
            index, previous_star = index + 2, False
            continue
        if char == "*":
            if previous_star:
                raise PatternError("wildcard: consecutive * are not allowed", path=path)
            segments.append("".join(current))
            current, previous_star = [], True
        else:
            current.append(char)
            previous_star = False
        index += 1
    segments.append("".join(current))
    return segments


def _numeric(operand: Any, path: PathT) -> Predicate:
    if not isinstance(operand, list | tuple) or len(operand) not in (2, 4):
        raise PatternError("numeric takes [op, n] or [>|>=, low, <|<=, high]", path=path)
    first, low = _comparison(operand, 0, path)
    if len(operand) == 2:
        return lambda value: _is_number(value) and first(value, low)
    if operand[0] not in _LOWER_BOUNDS:
        raise PatternError("a numeric range starts with > or >=", path=(*path, 0))
    second, high = _comparison(operand, 2, path)
    if operand[2] not in _UPPER_BOUNDS:
        raise PatternError("a numeric range ends with < or <=", path=(*path, 2))
    if low >= high:
        raise PatternError("numeric range: the lower bound must be below the upper", path=path)
    return lambda value: _is_number(value) and first(value, low) and second(value, high)


def _comparison(operand: Sequence[Any], index: int, path: PathT) -> tuple[Any, int | float]:
    name = operand[index]
    if not isinstance(name, str) or name not in _COMPARATORS:
        raise PatternError(f"unknown numeric comparator {name!r}", path=(*path, index))
    return _COMPARATORS[name], _finite(operand[index + 1], (*path, index + 1))


def _cidr(operand: Any, path: PathT) -> Predicate:
    text = _expect_str(operand, path, "cidr")
    try:
        if "/" not in text:
            raise ValueError(text)
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise PatternError(f"cidr: {text!r} is not an IPv4 or IPv6 CIDR block", path=path) from None
    low, high = int(network.network_address), int(network.broadcast_address)
    parse = ipaddress.IPv4Address if network.version == 4 else ipaddress.IPv6Address

    def in_block(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            address = int(parse(value))
        except ValueError:
            return False
        return low <= address <= high

    return in_block


# --- anything-but --------------------------------------------------------------------------


def _anything_but(operand: Any, path: PathT) -> Predicate:
    if isinstance(operand, Mapping):
        return _anything_but_operator(operand, path)
    excluded = _excluded_values(operand, path)
    if all(isinstance(v, str) for v in excluded):
        strings = frozenset(excluded)
        return lambda value: not (isinstance(value, str) and value in strings)
    numbers = frozenset(excluded)
    return lambda value: not (_is_number(value) and value in numbers)


def _excluded_values(operand: Any, path: PathT) -> list[Any]:
    items = list(operand) if isinstance(operand, list | tuple) else [operand]
    if not items:
        raise PatternError("anything-but takes a non-empty array", path=path)
    for index, item in enumerate(items):
        here = (*path, index) if isinstance(operand, list | tuple) else path
        if not isinstance(item, str):
            _finite(item, here)  # only strings and numbers may be excluded
    if len({isinstance(item, str) for item in items}) > 1:
        raise PatternError("anything-but: mix of strings and numbers", path=path)
    return items


def _anything_but_operator(operand: Mapping[Any, Any], path: PathT) -> Predicate:
    if len(operand) != 1:
        raise PatternError("an operator object must have exactly one key", path=path)
    ((name, inner),) = operand.items()
    here = (*path, name)
    if name in ("prefix", "suffix"):
        text = _expect_str(inner, here, f"anything-but {name}")
        if not text:
            raise PatternError(f"anything-but {name} must not be empty", path=here)
        if name == "prefix":
            return lambda value: not (isinstance(value, str) and value.startswith(text))
        return lambda value: not (isinstance(value, str) and value.endswith(text))
    if name == "equals-ignore-case":
        folded = frozenset(s.casefold() for s in _string_list(inner, here, name))
        return lambda value: not (isinstance(value, str) and value.casefold() in folded)
    if name == "wildcard":
        matchers = [
            _wildcard_matcher(s, here if isinstance(inner, str) else (*here, i))
            for i, s in enumerate(_string_list(inner, here, name))
        ]
        return lambda value: not (isinstance(value, str) and any(m(value) for m in matchers))
    raise PatternError(f"anything-but does not support {name!r}", path=here)


_OPERATORS: Final[Mapping[str, Callable[[Any, PathT], Predicate]]] = MappingProxyType(
    {
        "prefix": _prefix,
        "suffix": _suffix,
        "equals-ignore-case": _equals_ignore_case,
        "wildcard": _wildcard,
        "numeric": _numeric,
        "cidr": _cidr,
        "anything-but": _anything_but,
    }
)
# Operator names cannot be field names inside "$or" (event-ruler rejects them there, since a
# misplaced operator object would otherwise silently become a field that never matches).
_RESERVED_IN_OR: Final = frozenset({*_OPERATORS, *_COMPARATORS, "exists", "exactly"})


# --- explaining a miss ---------------------------------------------------------------------


def _explain_object(pattern: Mapping[str, Any], node: Any, where: str) -> list[str]:
    misses: list[str] = []
    fields = node if isinstance(node, Mapping) else _EMPTY
    for key, value in pattern.items():
        if key == _OR:
            branches = [_explain_object(branch, node, where) for branch in value]
            if all(branches):
                tried = " | ".join("; ".join(lines) for lines in branches)
                misses.append(f"no $or branch matches: {tried}")
            continue
        here = f"{where}.{key}"
        seen = fields.get(key, _MISSING)
        if isinstance(value, Mapping):
            if isinstance(seen, Mapping):
                misses.extend(_explain_object(value, seen, here))
            elif not _compile_object(value, (), in_or=False).match(seen):
                misses.append(f"{here} is {_shown(seen)}, expected an object matching "
                              f"{_json(value)}")  # fmt: skip
        elif not match_leaf(value)(seen):
            misses.append(f"{here} is {_shown(seen)}, expected {_expected(value)}")
    return misses


def _expected(conditions: Sequence[Any]) -> str:
    return " or ".join(_condition(c) for c in conditions)


def _condition(condition: Any) -> str:
    if not isinstance(condition, Mapping):
        return _json(condition)
    ((name, operand),) = condition.items()
    if name == "exists":
        return "the field to exist" if operand else "no such field"
    if name == "numeric":
        pairs = zip(operand[::2], operand[1::2], strict=True)
        return "numeric " + " and ".join(f"{op} {_json(n)}" for op, n in pairs)
    if name == "anything-but":
        if isinstance(operand, Mapping):
            ((inner, text),) = operand.items()
            return f"anything but {inner} {_json(text)}"
        return f"anything but {_json(operand)}"
    return f"{name} {_json(operand)}"


def _shown(value: Any) -> str:
    if value is _MISSING:
        return "missing"
    text = _json(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
