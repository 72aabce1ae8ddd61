"""CEL expressions for `filter.expr`, compiled once at load.

Evaluated with only `event` (the event document) and `rule` (name, namespace, labels) in
scope. A failed evaluation is not an exception for the caller to handle: it is "no match",
reported back with its message so the router's caller can log and count it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import cel

from trigger.errors import ExpressionError

ALLOWED_VARIABLES: Final = frozenset({"event", "rule"})
MAX_SOURCE: Final = 4096


@dataclass(frozen=True)
class Expression:
    """A compiled CEL program that must yield a boolean."""

    source: str
    program: Any

    def evaluate(self, activation: Mapping[str, Any]) -> bool:
        """True or False; raises ExpressionError when CEL fails or yields a non-boolean."""
        try:
            result = self.program.execute(activation)
        except Exception as exc:  # the CEL binding raises plain built-in exceptions
            raise ExpressionError(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(result, bool):
            raise ExpressionError(f"expression yielded {type(result).__name__}, not a boolean")
        return result


def compile_expression(source: str) -> Expression:
    """Compile `source`; raises ExpressionError for syntax errors or unknown variables."""
    if len(source) > MAX_SOURCE:
        raise ExpressionError(f"expression is longer than {MAX_SOURCE} characters")
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        # The binding appends a caret diagram on further lines; a problem is one line.
        raise ExpressionError(str(exc).strip().splitlines()[0]) from exc
    unknown = set(program.variables()) - ALLOWED_VARIABLES
    if unknown:
        raise ExpressionError(
            f"unknown variable(s) {', '.join(sorted(unknown))}: only event and rule are in scope"
        )
    return Expression(source=source, program=program)
