"""A Sensor trigger's `conditions` (`a && b`, `(a && b) || c`) → the sets of dependencies
that each fire it.

Argo Events evaluates `conditions` as a boolean expression over the dependencies' names
(true once a dependency has an event). Written as an OR of ANDs (disjunctive normal
form), each AND is one way to fire the trigger: one dependency becomes a plain rule,
several become a gate. Only names, `&&`, `||` and parentheses are read: a negation or
anything else has no rule to become.
"""

from __future__ import annotations

import re
from typing import Final

Alternative = tuple[str, ...]  # dependency names, in the order they were written
# `(a || b) && (c || d) && …` multiplies out; past this many rules it is not worth writing.
MAX_ALTERNATIVES: Final = 16
_TOKEN: Final = re.compile(r"\s*(&&|\|\||\(|\)|[A-Za-z0-9_][A-Za-z0-9_.\-]*)")


class ConditionError(ValueError):
    """`conditions` that cannot be written as rules; the message says why."""


def alternatives(conditions: str) -> list[Alternative]:
    """The dependency sets of `conditions` as an OR of ANDs, each set needed no more than
    once: `a || (a && b)` is just `a` (Argo Events fires on `a` and resets every slot)."""
    tokens = _tokens(conditions)
    parser = _Parser(tokens)
    result = parser.expression()
    if parser.position != len(tokens):
        raise ConditionError(f"unexpected {tokens[parser.position]!r}")
    unique: list[Alternative] = []
    for alternative in result:
        if all(set(alternative) != set(u) for u in unique):
            unique.append(alternative)
    return [
        a
        for a in unique
        if not any(set(o) < set(a) for o in unique)  # absorbed by a smaller
    ]


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ConditionError(
                f"{text[position:].strip()!r}: only dependency names, &&, || and "
                "parentheses are converted"
            )
        tokens.append(match[1])
        position = match.end()
    if not tokens:
        raise ConditionError("empty conditions")
    return tokens


class _Parser:
    """Recursive descent: expression = term (|| term)*, term = factor (&& factor)*,
    factor = NAME | ( expression ); each returns its OR of ANDs."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.position = 0

    def expression(self) -> list[Alternative]:
        result = self.term()
        while self._take("||"):
            result = result + self.term()
            _bounded(result)
        return result

    def term(self) -> list[Alternative]:
        result = self.factor()
        while self._take("&&"):
            right = self.factor()
            result = [_join(a, b) for a in result for b in right]
            _bounded(result)
        return result

    def factor(self) -> list[Alternative]:
        if self._take("("):
            inner = self.expression()
            if not self._take(")"):
                raise ConditionError("a parenthesis is not closed")
            return inner
        if self.position >= len(self.tokens):
            raise ConditionError("ends where a dependency name was expected")
        token = self.tokens[self.position]
        if token in ("&&", "||", ")"):
            raise ConditionError(f"{token!r} where a dependency name was expected")
        self.position += 1
        return [(token,)]

    def _take(self, token: str) -> bool:
        if self.position < len(self.tokens) and self.tokens[self.position] == token:
            self.position += 1
            return True
        return False


def _join(left: Alternative, right: Alternative) -> Alternative:
    return left + tuple(name for name in right if name not in left)


def _bounded(result: list[Alternative]) -> None:
    if len(result) > MAX_ALTERNATIVES:
        raise ConditionError(
            f"it multiplies out to more than {MAX_ALTERNATIVES} alternatives (an OR of ANDs)"
        )
