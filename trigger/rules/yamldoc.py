"""Safe YAML reading that remembers where every value came from.

Rule files are parsed with libyaml's safe composer (when available) into plain Python values,
and every path inside a document (`("spec", "workflow", "parameters", "day")`) is mapped to
its line and column, so that each problem found later can be reported as `file:line:column`.
Documents are bounded in size and in expanded node count, which defeats alias bombs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - libyaml is present in every wheel we install
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Path = tuple[str | int, ...]
MAX_FILE_BYTES: Final = 1 << 20
MAX_NODES: Final = 100_000
MAX_DEPTH: Final = 64
_STR: Final = "tag:yaml.org,2002:str"
_MAP: Final = "tag:yaml.org,2002:map"
_SEQ: Final = "tag:yaml.org,2002:seq"


class Document:
    """One YAML document: its value, and where each path in it starts (1-based).

    Positions are only needed to report problems, so they are computed on first use by
    composing the file again with node marks; loading a valid rule set never pays for them.
    """

    def __init__(self, value: Any, index: int, source: _Source) -> None:
        self.value = value
        self.index = index
        self._source = source

    def where(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """The position of `path` (its key when `key`), or of its nearest known parent."""
        positions = self._source.positions(self.index)
        table = positions.keys if key else positions.values
        probe = path
        while probe:
            if probe in table:
                return table[probe]
            if probe in positions.values:
                return positions.values[probe]
            probe = probe[:-1]
        return positions.values.get((), (1, 1))

    @property
    def paths(self) -> Mapping[Path, tuple[int, int]]:
        """Every path of the document that holds a value, with its position."""
        return self._source.positions(self.index).values


@dataclass
class _Positions:
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)


class _Source:
    """The text of one file, composed with marks only when a position is asked for."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._positions: list[_Positions] | None = None

    def positions(self, index: int) -> _Positions:
        if self._positions is None:
            self._positions = []
            for node in yaml.compose_all(self.text, Loader=_FastLoader):
                builder = _Builder()
                builder.build(node, (), 0)
                self._positions.append(builder.positions)
        return self._positions[index] if index < len(self._positions) else _Positions()


class YamlProblem(Exception):  # carried to the loader, which reports it
    """A YAML-level problem with its position."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


class _FastLoader(_Loader):
    """libyaml's safe loader with two changes that matter for rule files.

    Plain scalars whose first character cannot start a non-string implicit type skip the
    resolver's regex scan (the exact test the resolver itself starts with), and duplicate
    mapping keys are an error instead of silently keeping the last one.
    """

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode:
            if not implicit[0] or (value and value[0] not in _IMPLICIT_FIRST):
                return _STR  # quoted, or cannot be a number, boolean, null or timestamp
            return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        if self.yaml_path_resolvers:  # none unless someone called `add_path_resolver`
            return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        return _MAP if kind is MappingNode else _SEQ  # what the resolver's walk would answer

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE:
                    if key_node.value in seen:
                        raise ConstructorError(
                            None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                        )
                    seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


_IMPLICIT_FIRST: Final = frozenset(yaml.SafeLoader.yaml_implicit_resolvers)
_MERGE: Final = "tag:yaml.org,2002:merge"


def read_documents(text: str) -> Iterator[Document]:
    """Parse every document of `text`; raises YamlProblem for the first unreadable one."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise YamlProblem(f"file is larger than {MAX_FILE_BYTES} bytes", 1, 1)
    plain = True
    try:
        nodes = list(yaml.compose_all(text, Loader=_FastLoader))
        values = [_PlainBuilder().value(node) for node in nodes]
    except (_NotPlain, yaml.YAMLError):
        # PyYAML's construction decides, and reports the first problem as it always has.
        values, plain = _load_all(text), False
    source = _Source(text)
    for index, loaded in enumerate(values):
        # Aliases share containers: rebuild with the bounded builder, which expands them
        # with a node budget (an alias bomb stops there).
        value = loaded if plain or _plain_tree(loaded) else _Builder().build_value(source, index)
        if value is not None:  # an empty document (a trailing `---`) holds no rule
            yield Document(value, index, source)


def _plain_tree(value: Any) -> bool:
    """True when no container appears twice (no aliases) and the tree is within budget."""
    seen: set[int] = set()
    stack = [value]
    count = 0
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list):
            if id(item) in seen:
                return False
            seen.add(id(item))
            count += 1
            stack.extend(item.values() if isinstance(item, dict) else item)
    return count <= MAX_NODES


def _load_all(text: str) -> list[Any]:
    """PyYAML's own construction, for what `_PlainBuilder` leaves to it."""
    try:
        return list(yaml.load_all(text, Loader=_FastLoader))
    except yaml.YAMLError as exc:
        raise _problem(exc) from exc


def _problem(exc: yaml.YAMLError) -> YamlProblem:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return YamlProblem(f"invalid YAML: {exc.problem or exc}", line, column)
    return YamlProblem(f"invalid YAML: {exc}", 1, 1)


class _NotPlain(Exception):
    """A document `_PlainBuilder` leaves to PyYAML's constructor."""


class _PlainBuilder:
    """Values from composed nodes, for the documents rule files are made of: plain maps,
    lists and scalars, no aliases, merge keys or collection tags, within the node budget.

    It gives what `_FastLoader` gives (strings as they are, other scalars through PyYAML's
    safe constructor, duplicate keys an error) at a fraction of the cost of PyYAML's
    generic construction; anything else raises _NotPlain and goes to that construction.
    """

    def __init__(self) -> None:
        self._scalars = SafeConstructor()
        self._seen: set[int] = set()

    def value(self, node: Node, depth: int = 0) -> Any:
        if isinstance(node, ScalarNode):
            return node.value if node.tag == _STR else self._scalars.construct_object(node)
        if id(node) in self._seen or len(self._seen) >= MAX_NODES or depth >= MAX_DEPTH:
            raise _NotPlain  # an alias, or a document for the bounded builder to judge
        self._seen.add(id(node))
        if isinstance(node, SequenceNode) and node.tag == _SEQ:
            return [self.value(item, depth + 1) for item in node.value]
        if isinstance(node, MappingNode) and node.tag == _MAP:
            return self._mapping(node, depth)
        raise _NotPlain

    def _mapping(self, node: MappingNode, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        keys: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE:
                raise _NotPlain
            if key_node.value in keys:
                raise ConstructorError(
                    None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                )
            keys.add(key_node.value)
            key = key_node.value if key_node.tag == _STR else self.value(key_node, depth + 1)
            result[key] = self.value(value_node, depth + 1)
        return result


class _Builder:
    """Builds values from nodes with a node budget, recording every path's position."""

    def __init__(self) -> None:
        self._scalars = SafeConstructor()
        self._count = 0
        self.positions = _Positions()

    def build_value(self, source: _Source, index: int) -> Any:
        nodes = list(yaml.compose_all(source.text, Loader=_FastLoader))
        return self.build(nodes[index], (), 0)

    def build(self, node: Node, path: Path, depth: int) -> Any:
        self._count += 1
        here = (node.start_mark.line + 1, node.start_mark.column + 1)
        if self._count > MAX_NODES or depth > MAX_DEPTH:
            raise YamlProblem(
                f"document expands to more than {MAX_NODES} nodes or {MAX_DEPTH} levels "
                "(an alias bomb?)",
                *here,
            )
        self.positions.values[path] = here
        if isinstance(node, MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if node.tag == _STR:
            return node.value
        try:
            return self._scalars.construct_object(node, deep=True)
        except ConstructorError as exc:
            raise YamlProblem(f"invalid value: {exc.problem}", *here) from exc

    def _mapping(self, node: MappingNode, path: Path, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE or not isinstance(key_node, ScalarNode):
                continue  # merge keys were applied by the loader; positions stay approximate
            key = str(self._scalars.construct_object(key_node))
            self.positions.keys[(*path, key)] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            result[key] = self.build(value_node, (*path, key), depth + 1)
        return result
