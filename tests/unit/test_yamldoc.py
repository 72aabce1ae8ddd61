"""Rule-file YAML reading: the fast construction gives what PyYAML's own gives."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from trigger.rules.yamldoc import YamlProblem, _FastLoader, read_documents

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["yes", "No", "0o17", "0x1F", "1_000", "2025-01-01", "~", "1e3", ".inf"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4),
    ),
    max_leaves=20,
)


def pyyaml(text: str) -> list[Any]:
    return [v for v in yaml.load_all(text, Loader=_FastLoader) if v is not None]


@settings(max_examples=300, deadline=None)
@given(st.lists(values, min_size=1, max_size=3), st.sampled_from(["block", "flow"]))
def test_documents_read_as_pyyaml_reads_them(docs: list[Any], style: str) -> None:
    """Every document, dumped in block or flow style, reads back as PyYAML constructs it."""
    text = yaml.safe_dump_all(docs, default_flow_style=style == "flow", allow_unicode=True)
    assert [d.value for d in read_documents(text)] == pyyaml(text)


@pytest.mark.parametrize(
    "text",
    [
        "base: &b {x: 1}\nuse: *b\n",  # an alias
        "base: &b {x: 1}\nuse: {<<: *b, y: 2}\n",  # a merge key
        "a: !!set {x, y}\n",  # a collection tag
        "a: !!omap [{x: 1}]\n",
        "? [a, b]\n: 1\n",  # a key that is not a scalar
        "a: 1\n---\nb: 2\n---\n",  # a trailing empty document
        "a: " + "[" * 70 + "]" * 70 + "\n",  # deeper than the fast path goes
    ],
)
def test_documents_left_to_pyyaml_read_as_before(text: str) -> None:
    """Aliases, merge keys, tags and deep nesting read exactly as PyYAML reads them."""
    try:
        expected: Any = pyyaml(text)
    except yaml.YAMLError:
        with pytest.raises(YamlProblem):
            list(read_documents(text))
        return
    assert [d.value for d in read_documents(text)] == expected


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("a: 1\na: 2\n", "duplicate key 'a'", 2),
        ("a: 1\n---\nb: [1\n", "invalid YAML", 4),
        ("a: !unknown x\n---\nb: [1\n", "could not determine a constructor", 1),
    ],
)
def test_first_problem_is_reported_where_it_is(text: str, message: str, line: int) -> None:
    """A duplicate key, a parse error and an unknown tag are reported at their place, the
    first in document order first."""
    with pytest.raises(YamlProblem) as caught:
        list(read_documents(text))
    assert message in str(caught.value)
    assert caught.value.line == line
