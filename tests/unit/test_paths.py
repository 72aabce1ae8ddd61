"""The plain-path fast path renders exactly what the Jinja sandbox renders."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from trigger.rules.paths import compile_paths
from trigger.rules.templating import TemplateEngine, TemplateRenderFailure

CONTEXT: dict[str, Any] = {
    "event": {
        "bucket": "raw",
        "key": "in/a b.csv",
        "size": 59537,
        "ratio": 0.5,
        "flag": True,
        "nothing": None,
        "value": {"orderId": "A-1", "amount": 249.5, "items": [{"sku": "X"}], "meta": {"k": "ü"}},
        "headers": {"x-id": "7"},
    },
    "rule": {"name": "r"},
}


@pytest.mark.parametrize(
    "source",
    [
        "oss://{{ event.bucket }}/{{ event.key }}",
        "{{ event.value.orderId }}",
        "{{event.size}}",
        "{{ event.ratio }}-{{ event.flag }}",
        "{{ event.nothing }}",
        "a{{ event.value.meta.k }}{{ event.nothing }}",
        "{{ event.value.meta }}",
        "{{ event.value.amount }}",
        "{{ rule.name }}\n",
        "a\r\nb {{ event.bucket }}\r\n",
        "{{ event.value.missing }}",
        "{{ event.bucket.missing }}",
        "{{ nope.x }}",
    ],
)
def test_fast_path_matches_jinja(source: str) -> None:
    """Output, or failure, is the same with and without the fast path."""
    engine = TemplateEngine()
    fast = engine.compile(source)
    assert fast._fast is not None  # the case under test takes the fast path
    slow = copy.copy(fast)
    slow._fast = None

    def outcome(template: Any) -> tuple[str, str]:
        try:
            return ("ok", template.render(CONTEXT))
        except TemplateRenderFailure as exc:
            return ("error", str(exc))

    fast_result, slow_result = outcome(fast), outcome(slow)
    assert fast_result[0] == slow_result[0]
    if fast_result[0] == "ok" or "null" in fast_result[1]:
        assert fast_result == slow_result
    else:
        assert "undefined" in fast_result[1] and "undefined" in slow_result[1]


@pytest.mark.parametrize(
    "source",
    [
        "{{ event.value.items }}",  # a dict method name: Jinja's attribute lookup wins
        "{{ event.key | basename }}",
        "{{- event.key }}",
        "{% if true %}x{% endif %}",
        "{{ true }}",
        "{{ self }}",
        "{{ range }}",
        "{{ event['key'] }}",
        "{{ event.value.items.0 }}",
        "plain text",
    ],
)
def test_other_templates_are_left_to_jinja(source: str) -> None:
    """Filters, statements, Jinja's own names and subscripts do not take the fast path."""
    assert compile_paths(source, frozenset({"range"})) is None


def test_fast_path_keeps_the_output_limit() -> None:
    """A huge value is refused on the fast path as in Jinja."""
    template = TemplateEngine().compile("{{ event.big }}")
    with pytest.raises(TemplateRenderFailure, match="over the limit"):
        template.render({"event": {"big": "x" * 70_000}})
