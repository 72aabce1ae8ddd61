"""CEL filters: the names comprehensions bind, and the step bound on nested ones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trigger.errors import ExpressionError
from trigger.rules.celscan import scan
from trigger.rules.expressions import MAX_STEPS, compile_expression


@pytest.mark.parametrize(
    ("source", "bound", "depth"),
    [
        ("size(event.key) > 0", set(), 0),
        ("event.l.exists(x, x == 'a')", {"x"}, 1),
        ("event.l.all(x, event.l.all(y, x + y >= 0))", {"x", "y"}, 2),
        ("event.l . exists( x , x > 0)", {"x"}, 1),
        ("event.a.map(x, x).filter(y, y > 1).exists_one(z, z == 2)", {"x", "y", "z"}, 1),
        ("event.i.exists(i, i.tags.exists(t, t == 'x'))", {"i", "t"}, 2),
        ("event.key == '.exists(q, ' && event.l.all(x, x == \".map(w,\")", {"x"}, 1),
        ("event.key == r'\\' && event.l.all(x, x == b'''.all(v,''')", {"x"}, 1),
        ("exists(event)", set(), 0),
    ],
)
def test_scan_finds_bound_names_and_depth(source: str, bound: set[str], depth: int) -> None:
    """The scanner finds what comprehensions bind and how deep they nest, skipping strings."""
    found = scan(source)
    assert (set(found.bound), found.depth) == (bound, depth)


def test_comprehension_variables_are_not_unknown() -> None:
    """A name a comprehension binds is in scope; any other name still is not."""
    assert compile_expression("event.l.exists(x, x == 'a')").evaluate({"event": {"l": ["a"]}})
    with pytest.raises(ExpressionError, match=r"unknown variable\(s\) z"):
        compile_expression("event.l.exists(x, x == z)")


def test_nested_comprehension_over_a_large_event_is_refused() -> None:
    """Nested comprehensions over more elements than MAX_STEPS allows fail, saying why."""
    expression = compile_expression("event.l.all(x, event.l.all(y, x + y >= 0))")
    assert expression.evaluate({"event": {"l": list(range(900))}})
    with pytest.raises(ExpressionError, match="not evaluated: comprehensions nested 2 deep"):
        expression.evaluate({"event": {"l": list(range(int(MAX_STEPS**0.5) + 1))}})


@given(st.lists(st.integers(0, 100), max_size=50))
def test_one_comprehension_is_never_refused(values: list[int]) -> None:
    """A single comprehension is linear in the event: it is evaluated whatever its size."""
    expression = compile_expression("event.l.all(x, x >= 0)")
    assert expression.evaluate({"event": {"l": values * 1000}})
