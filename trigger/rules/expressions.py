"""CEL expressions for `filter.expr`, compiled once at load.

Evaluated with only `event` (the event document) and `rule` (name, namespace, labels) in
scope. A failed evaluation is not an exception for the caller to handle: it is "no match",
reported back with its message so the router's caller can log and count it.

The binding evaluates on the calling thread and holds the GIL until it is done, with no
step limit: a comprehension nested in another (`l.all(x, l.all(y, ...))`) over a list of
10,000 elements is 10^8 steps, a minute of a stopped event loop. So an expression with
nested comprehensions is evaluated only when the event is small enough: its elements
(every list item and object member, counted) raised to the nesting depth must stay
within MAX_STEPS; otherwise the evaluation fails, saying so, like any other CEL error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import cel

from trigger.errors import ExpressionError
from trigger.rules.celscan import scan

ALLOWED_VARIABLES: Final = frozenset({"event", "rule"})
MAX_SOURCE: Final = 4096
# About 0.7 s of CEL at its measured 0.7 µs per comprehension step (2 cores, cel 0.10).
MAX_STEPS: Final = 1_000_000


@dataclass(frozen=True)
class Expression:
    """A compiled CEL program that must yield a boolean."""

    source: str
    program: Any
    depth: int = 0  # how deeply its comprehensions nest

    def evaluate(self, activation: Mapping[str, Any]) -> bool:
        """True or False; raises ExpressionError when CEL fails or yields a non-boolean,
        or would take more than MAX_STEPS (see the module docstring)."""
        if self.depth > 1:
            self._check_cost(activation)
        try:
            result = self.program.execute(activation)
        except Exception as exc:  # the CEL binding raises plain built-in exceptions
            raise ExpressionError(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(result, bool):
            raise ExpressionError(f"expression yielded {type(result).__name__}, not a boolean")
        return result

    def _check_cost(self, activation: Mapping[str, Any]) -> None:
        limit = int(MAX_STEPS ** (1 / self.depth))
        if _elements(list(activation.values()), limit) > limit:
            raise ExpressionError(
                f"not evaluated: comprehensions nested {self.depth} deep over an event of "
                f"more than {limit} elements could take more than {MAX_STEPS} steps"
            )


def compile_expression(source: str) -> Expression:
    """Compile `source`; raises ExpressionError for syntax errors or unknown variables."""
    if len(source) > MAX_SOURCE:
        raise ExpressionError(f"expression is longer than {MAX_SOURCE} characters")
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        # The binding appends a caret diagram on further lines; a problem is one line.
        raise ExpressionError(str(exc).strip().splitlines()[0]) from exc
    comprehensions = scan(source)
    # variables() lists the names comprehensions bind among those the expression reads.
    unknown = set(program.variables()) - ALLOWED_VARIABLES - comprehensions.bound
    if unknown:
        raise ExpressionError(
            f"unknown variable(s) {', '.join(sorted(unknown))}: only event and rule are in scope"
        )
    return Expression(source=source, program=program, depth=comprehensions.depth)


def _elements(value: Any, limit: int) -> int:
    """List items and object members in `value`, counted until more than `limit`."""
    count = 0
    stack = [value]
    while stack and count <= limit:
        node = stack.pop()
        if isinstance(node, dict):
            count += len(node)
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            count += len(node)
            stack.extend(node)
    return count
