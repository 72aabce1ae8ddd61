"""The fields a template names, read from its syntax tree at compile time, and how
messages name an output expression (`describe`).

`{{ event.value.orderId | upper }}` names `("event", "value", "orderId")`; the loader checks
such paths against the rule's source (`trigger.rules.fields`). A path stops where the tree
stops saying which field is meant: a computed subscript (`event.value[event.key]`), or an
attribute that is a method of what it is read from (`event.key.upper()`, `event.items()`,
which Jinja resolves to the method, not to a field). A template that assigns `event` or
`rule` itself (`{% set %}`, a loop variable) is not checked for that name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from jinja2 import nodes

PathT = tuple[str | int, ...]
ROOTS: Final = frozenset({"event", "rule", "gate"})
_METHODS: Final = frozenset(dir(dict) + dir(list) + dir(str) + dir(int) + dir(float))


def field_paths(ast: nodes.Template) -> frozenset[PathT]:
    """Every `event…`, `rule…` and `gate…` path the template reads, as far as it is known."""
    shadowed = {
        node.name
        for node in ast.find_all(nodes.Name)
        if node.ctx in ("store", "param") and node.name in ROOTS
    }
    return frozenset(p for p in _paths(ast) if p[0] not in shadowed)


def _paths(node: nodes.Node) -> Iterator[PathT]:
    if isinstance(node, nodes.Getattr | nodes.Getitem):
        path, rest = _chain(node)
        if path is not None:
            yield path
        for child in rest:
            yield from _paths(child)
        return
    if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in ROOTS:
        yield (node.name,)
        return
    for child in node.iter_child_nodes():
        yield from _paths(child)


def _chain(node: nodes.Expr) -> tuple[PathT | None, list[nodes.Node]]:
    """The path of a chain of attribute reads and constant subscripts on `event` or `rule`
    (None when it starts elsewhere), and the nodes inside it still to be searched."""
    parts: list[str | int] = []
    rest: list[nodes.Node] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            if node.attr in _METHODS:
                parts.clear()  # a method: the path ends before it
            else:
                parts.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str | int):
            parts.append(node.arg.value)
        else:
            parts.clear()  # a computed subscript: only what comes before it is known
            rest.append(node.arg)
        node = node.node
    if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in ROOTS:
        return (node.name, *reversed(parts)), rest
    rest.append(node)
    return None, rest


def describe(node: nodes.Node) -> str | None:
    """How a message names an output expression: `event.value.orderId` for a path,
    `event.key | default` for a path through filters; None for anything else."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Filter):
        inner = None if node.node is None else describe(node.node)
        return None if inner is None else f"{inner} | {node.name}"
    if isinstance(node, nodes.Getattr):
        inner = describe(node.node)
        return None if inner is None else f"{inner}.{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        inner, key = describe(node.node), node.arg.value
        if inner is None or not isinstance(key, str | int):
            return None
        return f"{inner}[{key}]" if isinstance(key, int) else f"{inner}.{key}"
    return None
