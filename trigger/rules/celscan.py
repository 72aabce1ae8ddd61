"""What a CEL source's comprehension macros bind and how deeply they nest, read from its text.

The CEL binding compiles an expression but exposes no syntax tree: `Program.variables()`
lists the names a comprehension binds (`x` in `l.exists(x, x > 0)`) among the variables
it reads, and nothing says how comprehensions nest. Both matter before the first event:
a bound name is not a variable the activation must supply, and each level of nesting
multiplies the steps one evaluation may take by the size of the event. This scanner
reads the source once, skipping string and bytes literals, and finds every call of a
comprehension macro (`all`, `exists`, `exists_one`, `map`, `filter`), its bound names and
its depth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

MACROS: Final = frozenset({"all", "exists", "exists_one", "map", "filter"})
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING_START: Final = re.compile(r"(?:[rR][bB]?|[bB][rR]?)?('''|\"\"\"|'|\")")
_SPACE: Final = re.compile(r"\s+")


@dataclass(frozen=True)
class Comprehensions:
    """The names comprehension macros bind, and the deepest nesting of them (0: none)."""

    bound: frozenset[str]
    depth: int


def scan(source: str) -> Comprehensions:
    """Find the comprehensions of a CEL source (which must already compile)."""
    bound: set[str] = set()
    parens: list[bool] = []  # per open parenthesis: is it a macro call's
    depth = 0
    pos = 0
    after_dot = False
    while pos < len(source):
        string = _STRING_START.match(source, pos) if source[pos] in "'\"rRbB" else None
        if string is not None:
            pos = _skip_string(source, string)
            after_dot = False
            continue
        ident = _IDENT.match(source, pos)
        if ident is not None:
            pos = ident.end()
            call = _skip_space(source, pos)
            if after_dot and ident.group() in MACROS and source.startswith("(", call):
                parens.append(True)
                depth = max(depth, parens.count(True))
                pos = call + 1
                variable = _IDENT.match(source, _skip_space(source, pos))
                if variable is not None:
                    bound.add(variable.group())
            after_dot = False
            continue
        char = source[pos]
        if char == "(":
            parens.append(False)
        elif char == ")" and parens:
            parens.pop()
        after_dot = char == "." or (after_dot and char.isspace())
        pos += 1
    return Comprehensions(frozenset(bound), depth)


def _skip_space(source: str, pos: int) -> int:
    space = _SPACE.match(source, pos)
    return pos if space is None else space.end()


def _skip_string(source: str, start: re.Match[str]) -> int:
    """The position after the literal that `start` opens."""
    quote = start.group(1)
    raw = "r" in start.group(0)[: start.start(1) - start.start()].lower()
    pos = start.end()
    while pos < len(source):
        if not raw and source[pos] == "\\":
            pos += 2
            continue
        if source.startswith(quote, pos):
            return pos + len(quote)
        pos += 1
    return pos
