"""Safe YAML reading that remembers where every value came from.

Rule files are parsed with libyaml's safe composer (when available) into plain Python values,
and every path inside a document (`("spec", "workflow", "parameters", "day")`) is mapped to
its line and column, so that each problem found later can be reported as `file:line:column`.
Documents are bounded in size and in expanded node count, which defeats alias bombs.
"""

from __future__ import annotations

from collections.abc import Iterator
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
_COLLECTION_TAGS: Final = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


@dataclass
class Document:
    """One YAML document: its value and where each path in it starts (1-based)."""

    value: Any
    line: int
    column: int
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """The position of `path` (its key when `key`), or of its nearest known parent."""
        table = self.keys if key else self.values
        probe = path
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return (self.line, self.column)


class YamlProblem(Exception):  # carried to the loader, which reports it
    """A YAML-level problem with its position."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


def read_documents(text: str) -> Iterator[Document]:
    """Parse every document of `text`; raises YamlProblem for the first unreadable one."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise YamlProblem(f"file is larger than {MAX_FILE_BYTES} bytes", 1, 1)
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlProblem(f"invalid YAML: {exc.problem or exc}", line, column) from exc
    except yaml.YAMLError as exc:
        raise YamlProblem(f"invalid YAML: {exc}", 1, 1) from exc
    for node in nodes:
        doc = _Builder().document(node)
        if doc.value is not None:  # an empty document (a trailing `---`) holds no rule
            yield doc


class _Builder:
    def __init__(self) -> None:
        self._scalars = SafeConstructor()
        self._count = 0

    def document(self, node: Node) -> Document:
        doc = Document(value=None, line=node.start_mark.line + 1, column=node.start_mark.column + 1)
        doc.value = self._build(node, (), doc, 0)
        return doc

    def _build(self, node: Node, path: Path, doc: Document, depth: int) -> Any:
        self._count += 1
        here = (node.start_mark.line + 1, node.start_mark.column + 1)
        if self._count > MAX_NODES or depth > MAX_DEPTH:
            raise YamlProblem(
                f"document expands to more than {MAX_NODES} nodes or {MAX_DEPTH} levels "
                "(an alias bomb?)",
                *here,
            )
        doc.values[path] = here
        if not isinstance(node, ScalarNode) and node.tag not in _COLLECTION_TAGS:
            raise YamlProblem(f"unsupported YAML tag {node.tag!r}", *here)
        if isinstance(node, MappingNode):
            return self._mapping(node, path, doc, depth)
        if isinstance(node, SequenceNode):
            return [
                self._build(item, (*path, i), doc, depth + 1) for i, item in enumerate(node.value)
            ]
        if isinstance(node, ScalarNode):
            if node.tag == _STR:  # the common case, without the constructor's dispatch
                return node.value
            try:
                return self._scalars.construct_object(node, deep=True)
            except ConstructorError as exc:
                raise YamlProblem(f"invalid value: {exc.problem}", *here) from exc
        raise YamlProblem("unsupported YAML node", *here)  # pragma: no cover

    def _mapping(self, node: MappingNode, path: Path, doc: Document, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            at = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlProblem("merge keys (<<) are not supported in rule files", *at)
            if not isinstance(key_node, ScalarNode):
                raise YamlProblem("mapping keys must be strings", *at)
            key = str(self._scalars.construct_object(key_node))
            if key in result:
                raise YamlProblem(f"duplicate key {key!r}", *at)
            doc.keys[(*path, key)] = at
            result[key] = self._build(value_node, (*path, key), doc, depth + 1)
        return result
