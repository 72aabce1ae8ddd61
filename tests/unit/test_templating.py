"""Sandboxed rule templates: filters, strict undefined, the literal fast path, memoization,
the names a template uses, every sandbox escape we know of, and the size limits."""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime
from typing import Any

import jinja2
import pytest

from trigger.errors import TemplateError, TriggerError
from trigger.rules.templating import (
    MAX_OUTPUT_BYTES,
    MAX_RANGE,
    MAX_VALUE_LEN,
    REGEX_CACHE_SIZE,
    Template,
    TemplateEngine,
    TemplateRenderFailure,
)
from trigger.rules.templating.filters import RegexReplacer

EVENT: dict[str, Any] = {
    "id": "evt-1",
    "source": "oss",
    "bucket": "raw-data",
    "key": "incoming/2024/orders.tar.gz",
    "size": 1024,
    "etag": "abc123",
    "time": "2024-03-10T07:30:00Z",
    "value": {"orderId": 42, "customer": "Zoë", "tags": ["a", "b"], "paid": True},
    "note": None,
    "path": "incoming/",
}
CONTEXT: dict[str, Any] = {"event": EVENT, "rule": {"name": "ingest-csv"}}


@pytest.fixture(scope="module")
def engine() -> TemplateEngine:
    return TemplateEngine()


def render(engine: TemplateEngine, source: str, context: dict[str, Any] | None = None) -> str:
    return engine.compile(source).render(CONTEXT if context is None else context)


# --- rendering and filters ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("oss://{{ event.bucket }}/{{ event.key }}", "oss://raw-data/incoming/2024/orders.tar.gz"),
        ("{{ event.value.orderId }}", "42"),
        ("{{ event['value']['customer'] }}", "Zoë"),
        ("{{ rule.name }}-{{ event.size }}", "ingest-csv-1024"),
        ("{{ event.value }}", '{"orderId":42,"customer":"Zoë","tags":["a","b"],"paid":true}'),
        ("{{ event.value.tags }}", '["a","b"]'),
        ("{{ event.value.paid }}", "true"),
        ("{{ event.size / 4 }}", "256.0"),
        ("{{ event.size * 2 + 1 }}", "2049"),
        ("{{ 'a' ~ event.size }}", "a1024"),
        ("{% if event.size > 10 %}big{% else %}small{% endif %}", "big"),
        (
            "{% for t in event.value.tags %}{{ t }}{% if not loop.last %},{% endif %}{% endfor %}",
            "a,b",
        ),
        ("{{ '%s-%05d' % (event.bucket, event.size) }}", "raw-data-01024"),
        ("{{ '{}:{:>6}'.format(event.bucket, event.size) }}", "raw-data:  1024"),
        ("{{ event.bucket.upper() }}", "RAW-DATA"),
        ("{{ event.key.split('/') | last }}", "orders.tar.gz"),
    ],
)
def test_renders_event_fields_as_strings(
    engine: TemplateEngine, source: str, expected: str
) -> None:
    """Templates see the event document and always render to a string."""
    assert render(engine, source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ event.key | basename }}", "orders.tar.gz"),
        ("{{ event.key | dirname }}", "incoming/2024"),
        ("{{ event.path | basename }}", ""),
        ("{{ event.path | dirname }}", "incoming"),
        ("{{ event.key | splitext }}", '["incoming/2024/orders.tar",".gz"]'),
        ("{{ (event.key | splitext)[0] }}", "incoming/2024/orders.tar"),
        ("{{ ('noext' | splitext)[1] }}", ""),
        ("{{ event.key | regex_replace('^incoming/', 'done/') }}", "done/2024/orders.tar.gz"),
        ("{{ 'a-b-c' | regex_replace('-', '_', 1) }}", "a_b-c"),
        ("{{ 'a-b-c' | regex_replace('-', '_', count=1) }}", "a_b-c"),
        (
            "{{ '2024-03-10' | regex_replace('(\\\\d+)-(\\\\d+)-(\\\\d+)', '\\\\3.\\\\2.\\\\1') }}",
            "10.03.2024",
        ),
        ("{{ 'héllo wörld' | b64encode }}", "aMOpbGxvIHfDtnJsZA=="),
        ("{{ 'aMOpbGxvIHfDtnJsZA==' | b64decode }}", "héllo wörld"),
        ("{{ event.bucket | b64encode | b64decode }}", "raw-data"),
        ("{{ 'abc' | sha256 }}", hashlib.sha256(b"abc").hexdigest()),
        ("{{ 'Zoë' | sha256 }}", hashlib.sha256("Zoë".encode()).hexdigest()),
        ("{{ 'a b/c?d=é' | urlencode }}", "a%20b%2Fc%3Fd%3D%C3%A9"),
        ("{{ 'a b/c' | quote }}", "a%20b%2Fc"),
        ("{{ {'k y': 'v/w'} | urlencode }}", "k%20y=v%2Fw"),
        ("{{ 'Ingest_CSV.Daily' | dns1123 }}", "ingest-csv-daily"),
        ("{{ '--Hello World--' | dns1123 }}", "hello-world"),
        ("{{ 'Zoë' | dns1123 }}", "zo"),
        ("{{ ('a' * 62 ~ '.b') | dns1123 }}", "a" * 62),
        ("{{ ('x' * 100) | dns1123 | length }}", "63"),
        (
            "{{ event.value | tojson }}",
            '{"orderId":42,"customer":"Zoë","tags":["a","b"],"paid":true}',
        ),
        ("{{ 'Zoë <&>' | tojson }}", '"Zoë <&>"'),
        ("{{ [1, none] | tojson(indent=1) }}", "[\n 1,\n null\n]"),
        ("{{ event.missing | default('fallback') }}", "fallback"),
        ("{{ event.bucket | upper }}", "RAW-DATA"),
        ("{{ 'ABC' | lower }}", "abc"),
        ("{{ event.value.tags | join('+') }}", "a+b"),
        ("{{ 'a b' | replace(' ', '_') }}", "a_b"),
        ("{{ 'x' | center(5) }}", "  x  "),
        ("{{ [1, 2, 3] | sum }}", "6"),
        ("{{ range(5) | batch(2) | list }}", "[[0,1],[2,3],[4]]"),
    ],
)
def test_filters(engine: TemplateEngine, source: str, expected: str) -> None:
    """Each filter produces the documented value."""
    assert render(engine, source) == expected


@pytest.mark.parametrize(
    ("moment", "args", "expected"),
    [
        ("2024-03-10T07:30:00Z", "'%Y-%m-%d %H:%M'", "2024-03-10 07:30"),
        ("2024-03-10T07:30:00Z", "'%Y-%m-%d %H:%M %Z', 'Asia/Shanghai'", "2024-03-10 15:30 CST"),
        ("2024-03-10T17:30:00Z", "'%Y-%m-%d', 'Asia/Shanghai'", "2024-03-11"),
        # America/New_York springs forward at 2024-03-10 07:00Z (02:00 EST -> 03:00 EDT).
        ("2024-03-10T06:59:00Z", "'%H:%M %Z', 'America/New_York'", "01:59 EST"),
        ("2024-03-10T07:00:00Z", "'%H:%M %Z', 'America/New_York'", "03:00 EDT"),
        # ... and falls back at 2024-11-03 06:00Z: 01:30 happens twice.
        ("2024-11-03T05:30:00Z", "'%H:%M %z', 'America/New_York'", "01:30 -0400"),
        ("2024-11-03T06:30:00Z", "'%H:%M %z', 'America/New_York'", "01:30 -0500"),
        ("2024-03-10T15:30:00+08:00", "'%Y-%m-%dT%H:%M'", "2024-03-10T07:30"),
        ("2021-05-06T08:00:00.149Asia/Shanghai", "'%H:%M'", "00:00"),
    ],
)
def test_strftime_converts_to_the_zone(
    engine: TemplateEngine, moment: str, args: str, expected: str
) -> None:
    """strftime parses RFC 3339 strings and formats in the given IANA zone (UTC by default)."""
    context = {"event": {"time": moment}}
    assert render(engine, f"{{{{ event.time | strftime({args}) }}}}", context) == expected


def test_strftime_accepts_datetimes(engine: TemplateEngine) -> None:
    """strftime takes a datetime as well as a string; naive datetimes are UTC."""
    context = {"event": {"aware": datetime(2024, 1, 1, tzinfo=UTC), "naive": datetime(2024, 1, 1)}}
    source = (
        "{{ event.aware | strftime('%d %H', 'Asia/Tokyo') }}/{{ event.naive | strftime('%H') }}"
    )
    assert render(engine, source, context) == "01 09/00"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ event.time | strftime('%Y', 'Mars/Olympus') }}", "unknown time zone"),
        ("{{ event.time | strftime('%Y', '../../etc/passwd') }}", "unknown time zone"),
        ("{{ 'yesterday' | strftime('%Y') }}", "cannot parse time"),
        ("{{ event.time | strftime('%99999Y') }}", "strftime width"),
        ("{{ 'not base64!' | b64decode }}", "b64decode"),
        ("{{ '/w==' | b64decode }}", "b64decode"),
        ("{{ 'abc' | regex_replace('(', 'x') }}", "bad pattern"),
        ("{{ 'abc' | regex_replace('b', '\\\\9') }}", "bad replacement"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ event.bucket | int + [] }}", "TypeError"),
    ],
)
def test_filter_errors_are_render_failures(
    engine: TemplateEngine, source: str, message: str
) -> None:
    """A filter that fails raises TemplateRenderFailure with a message saying why."""
    with pytest.raises(TemplateRenderFailure, match=message):
        render(engine, source)


def test_tojson_refuses_non_json_values(engine: TemplateEngine) -> None:
    """tojson of a value JSON cannot express is a render failure, not a repr."""
    with pytest.raises(TemplateRenderFailure, match="not JSON serializable"):
        render(engine, "{{ event.when | tojson }}", {"event": {"when": datetime(2024, 1, 1)}})


def test_render_failure_is_a_trigger_error() -> None:
    """Callers can catch TemplateRenderFailure as a TriggerError."""
    assert issubclass(TemplateRenderFailure, TriggerError)


def test_regex_replace_refuses_subjects_over_the_limit(engine: TemplateEngine) -> None:
    """regex_replace refuses subjects over 1 MiB rather than risk catastrophic matching."""
    context = {"event": {"body": "a" * (MAX_VALUE_LEN + 1)}}
    with pytest.raises(TemplateRenderFailure, match="subject"):
        render(engine, "{{ event.body | regex_replace('a', 'b') | length }}", context)


def test_regex_replace_refuses_growing_past_the_limit(engine: TemplateEngine) -> None:
    """A replacement that would blow a string up past the value limit is refused."""
    with pytest.raises(TemplateRenderFailure, match="regex_replace result"):
        render(engine, "{{ ('x' * 100000) | regex_replace('', 'yyyyyyyyyyyy') | length }}")


def test_regex_cache_is_bounded() -> None:
    """The compiled-pattern cache never holds more than REGEX_CACHE_SIZE patterns."""
    replacer = RegexReplacer()
    for number in range(REGEX_CACHE_SIZE + 50):
        assert replacer(f"a{number}", f"{number}$", "") == "a"
    assert len(replacer._cache) == REGEX_CACHE_SIZE


def test_random_filter_is_removed(engine: TemplateEngine) -> None:
    """The nondeterministic `random` filter does not exist (templates feed idempotency keys)."""
    with pytest.raises(TemplateError, match="random"):
        engine.compile("{{ [1, 2] | random }}")


def test_now_is_not_provided(engine: TemplateEngine) -> None:
    """There is no `now`: a template using it fails instead of rendering the clock."""
    template = engine.compile("{{ now() }}")
    assert "now" in template.variables
    with pytest.raises(TemplateRenderFailure, match="now"):
        template.render(CONTEXT)


# --- strict undefined ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ event.missing }}",
        "{{ event.value.missing }}",
        "{{ missing }}",
        "x{{ event.missing }}y",
        "{{ 'a' ~ event.missing }}",
        "{{ event.missing | upper }}",
        "{{ event.missing | basename }}",
        "{{ event.missing | sha256 }}",
        "{{ event.missing | tojson }}",
        "{{ event.missing | strftime('%Y') }}",
        "{{ event.missing.deeper }}",
        "{{ event.value.tags[5] }}",
    ],
)
def test_missing_values_are_errors_never_empty(engine: TemplateEngine, source: str) -> None:
    """A missing key or attribute is a render failure, never an empty string."""
    with pytest.raises(TemplateRenderFailure, match="undefined"):
        render(engine, source)


# --- the literal fast path, memoization, variables -------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["ingest", "", "a } b { c", "single { brace }", "trailing\n", "a\r\nb", "x\n\n", "%Y-%m"],
)
def test_literals_render_as_jinja_would(engine: TemplateEngine, source: str) -> None:
    """A literal skips Jinja but renders exactly what Jinja would have rendered."""
    template = engine.compile(source)
    expected = jinja2.Environment(keep_trailing_newline=False).from_string(source).render()
    assert (template.is_literal, template.variables, template.render({})) == (
        True,
        frozenset(),
        expected,
    )


@pytest.mark.parametrize("source", ["{{ 'x' }}", "{% if true %}x{% endif %}", "a{# note #}b"])
def test_sources_with_markers_are_not_literals(engine: TemplateEngine, source: str) -> None:
    """Any of `{{`, `{%`, `{#` makes a source a template."""
    assert not engine.compile(source).is_literal


def test_literal_never_touches_jinja(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiling a literal does not call Jinja's parser at all."""
    engine = TemplateEngine()

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("parse called for a literal")

    monkeypatch.setattr(engine._env, "parse", refuse)
    assert engine.compile("plain-value").render({}) == "plain-value"


@pytest.mark.parametrize("source", ["oss://{{ event.bucket }}/{{ event.key }}", "literal"])
def test_compile_is_memoized(engine: TemplateEngine, source: str) -> None:
    """Compiling the same source twice returns the very same Template object."""
    assert engine.compile(source) is engine.compile(source)


def test_memo_belongs_to_the_engine() -> None:
    """Two engines do not share compiled templates."""
    source = "{{ event.bucket }}"
    assert TemplateEngine().compile(source) is not TemplateEngine().compile(source)


def test_compiled_template_is_reusable(engine: TemplateEngine) -> None:
    """One compiled template renders different events without recompiling."""
    template = engine.compile("{{ event.key }}")
    outputs = [template.render({"event": {"key": key}}) for key in ("a", "b", "c")]
    assert (outputs, template.source, repr(template)) == (
        ["a", "b", "c"],
        "{{ event.key }}",
        "Template('{{ event.key }}')",
    )


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("oss://{{ event.bucket }}/{{ event.key }}", {"event"}),
        ("{{ rule.name }}-{{ event.id }}", {"event", "rule"}),
        ("{{ other }}{{ event.x }}", {"event", "other"}),
        ("{% set day = event.time[:10] %}{{ day }}", {"event"}),
        ("{% for i in range(3) %}{{ i }}{% endfor %}", set()),
        ("{% raw %}{{ workflow.name }}{% endraw %}", set()),
        ("plain", set()),
    ],
)
def test_variables_are_the_top_level_names_used(
    engine: TemplateEngine, source: str, names: set[str]
) -> None:
    """`variables` lists the free names a template reads, excluding locals and globals."""
    assert engine.compile(source).variables == frozenset(names)


def test_template_type_is_exported(engine: TemplateEngine) -> None:
    """compile returns a Template."""
    assert isinstance(engine.compile("{{ event.id }}"), Template)


# --- compile errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ event.bucket", "line 1: unexpected end of template"),
        ("first\nsecond\n{% if x %}never closed", "line 3"),
        ("{{ x | no_such_filter }}", "No filter named 'no_such_filter'"),
        ("{% macro f() %}{% endmacro %}", r"\{% macro %\} is not allowed"),
        ("{% set x %}buffered{% endset %}", r"\{% set-block %\} is not allowed"),
        ("{% filter upper %}x{% endfilter %}", r"\{% filter-block %\} is not allowed"),
        ("{% include 'other' %}", r"\{% include %\} is not allowed"),
        ("{% import 'm' as m %}", r"\{% import %\} is not allowed"),
        ("{% extends 'base' %}", r"\{% extends %\} is not allowed"),
        ("{% block b %}{% endblock %}", r"\{% block %\} is not allowed"),
        ("{% for a in x %}\n{% for b in y %}{% endfor %}{% endfor %}", "line 2: nested loops"),
        ("{% for a in x recursive %}{{ loop(a) }}{% endfor %}", "recursive loops"),
        ("{% do x.append(1) %}", "line 1"),
    ],
)
def test_compile_errors_name_the_line(engine: TemplateEngine, source: str, message: str) -> None:
    """A template that does not compile raises TemplateError naming the line."""
    with pytest.raises(TemplateError, match=message):
        engine.compile(source)


# --- the sandbox --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ event.__class__ }}",
        "{{ event.bucket.__class__.__base__ }}",
        "{{ ''|attr('__class__') }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ namespace(a=1) }}",
        "{{ dict(a=1) }}",
        "{{ config }}",
        "{{ config.items() }}",
        "{{ self.__dict__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ range.__globals__ }}",
        "{{ event.bucket.format.__globals__ }}",
        "{{ '{0.__class__}'.format(event) }}",
        "{{ (1).__class__.__subclasses__() }}",
        "{{ event.keys.__self__ }}",
        "{{ request }}",
    ],
)
def test_escapes_fail_without_leaking(engine: TemplateEngine, source: str) -> None:
    """Reaching Python internals fails — when compiled if a private name is written out,
    else at render — and reveals no object."""
    with pytest.raises((TemplateError, TemplateRenderFailure)) as failure:
        render(engine, source)
    message = str(failure.value)
    assert "<" not in message and "0x" not in message, message


@pytest.mark.parametrize(
    "source",
    [
        "{{ event.update({'bucket': 'evil'}) }}",
        "{{ event.setdefault('x', 1) }}",
        "{{ event.pop('bucket') }}",
        "{{ event.clear() }}",
        "{{ event.value.tags.append('c') }}",
        "{{ event.value.tags.extend(['c']) }}",
        "{{ event.value.tags.sort() }}",
        "{% set x = [] %}{{ x.append(1) }}",
        "{% set d = {} %}{{ d.update(a=1) }}",
        "{% set s = [1] | unique | list %}{{ s.insert(0, 2) }}",
    ],
)
def test_mutation_is_refused(engine: TemplateEngine, source: str) -> None:
    """Templates cannot mutate dicts or lists, least of all the event they are given."""
    context = copy.deepcopy(CONTEXT)
    with pytest.raises(TemplateRenderFailure, match="not allowed"):
        render(engine, source, context)
    assert context == CONTEXT


def test_self_reveals_nothing(engine: TemplateEngine) -> None:
    """`{{ self }}` renders an opaque reference, not the context or environment."""
    output = render(engine, "{{ self }}")
    assert "0x" not in output and "environment" not in output.lower() and "event" not in output


@pytest.mark.parametrize("name", ["cycler", "joiner", "lipsum", "namespace", "dict"])
def test_risky_globals_are_removed(engine: TemplateEngine, name: str) -> None:
    """The cycler, joiner, lipsum, namespace and dict globals do not exist."""
    with pytest.raises(TemplateRenderFailure, match=f"'{name}' is undefined"):
        render(engine, f"{{{{ {name} }}}}")


def test_argo_placeholders_pass_through_raw(engine: TemplateEngine) -> None:
    """`{% raw %}` passes Argo's own placeholders through unchanged."""
    source = "{% raw %}{{workflow.name}}{% endraw %}-{{ event.bucket }}-{% raw %}{{ inputs.parameters.x }}{% endraw %}"
    assert render(engine, source) == "{{workflow.name}}-raw-data-{{ inputs.parameters.x }}"


# --- resource limits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ range(10**9) | list }}", "range of 1000000000 items"),
        (f"{{{{ range({MAX_RANGE + 1}) | list | length }}}}", "over the limit of 10000"),
        ("{% for i in range(10**6) %}{% endfor %}", "range of"),
        ("{{ range(0, 10**9, 2) | length }}", "range of"),
        ("{{ 'x' * 10**9 }}", "repetition"),
        ("{{ 10**9 * 'x' }}", "repetition"),
        ("{{ [0] * 10**9 }}", "repetition"),
        ("{{ 2 ** 100000 }}", "power"),
        ("{{ 9 ** (9 ** 9) }}", "power"),
        ("{{ (2 ** 2000) * (2 ** 2000) * (2 ** 2000) }}", "product"),
        ("{{ 'x' * 1000000 ~ 'x' * 1000000 }}", "concatenation"),
        ("{{ 'x' * 1000000 + 'x' * 1000000 }}", "concatenation"),
        ("{{ '%99999999s' % 'x' }}", "%-format width"),
        ("{{ '%*s' % (10**9, 'x') }}", "%-format width"),
        ("{{ '%.99999999f' % 1 }}", "%-format width"),
        ("{{ '%99999999s' | format('x') }}", "%-format width"),
        ("{{ '{:>99999999}'.format('x') }}", "format width"),
        ("{{ '{:{}}'.format('x', 10**9) }}", "nested replacement fields"),
        ("{{ 'x'.center(10**8) }}", "width"),
        ("{{ 'x'.ljust(10**8) }}", "width"),
        ("{{ 'x'.zfill(10**8) }}", "width"),
        ("{{ ('\\t' * 1000).expandtabs(10**6) }}", "expandtabs"),
        ("{{ 'x' | center(100000000) }}", "center width"),
        ("{{ ('x\\n' * 1000) | indent(10**4) }}", "indent"),
        ("{{ ('x\\n' * 1000) | indent('y' * 10000) }}", "indent"),
        ("{{ ('x' * 1000) | replace('x', 'y' * 10000) }}", "replace result"),
        ("{{ ('x' * 1000).replace('x', 'y' * 10000) }}", "replace result"),
        ("{{ ('x' * 1000).replace('', 'y' * 10000) }}", "replace result"),
        ("{{ (['x' * 100000] * 100) | join }}", "join result"),
        ("{{ ''.join(['x' * 100000] * 100) }}", "join result"),
        ("{{ ('y' * 10000).join(['x'] * 1000) }}", "join result"),
        ("{{ [1] | batch(100000000, 0) | list }}", "batch size"),
        ("{{ [1] | slice(100000000) | list }}", "slice count"),
        ("{{ ('x ' * 100000) | wordwrap(1, wrapstring='y' * 1000) }}", "wordwrap result"),
        ("{{ ([[1] * 1000] * 1000) | sum(start=[]) }}", "sum"),
        ("{{ 'ab'.translate({97: 'x' * 100000}) }}", "translate"),
    ],
)
def test_resource_bombs_are_refused(engine: TemplateEngine, source: str, message: str) -> None:
    """Operations that would build huge values fail before building them."""
    with pytest.raises(TemplateRenderFailure, match=message):
        render(engine, source)


def test_range_up_to_the_cap_is_allowed(engine: TemplateEngine) -> None:
    """range keeps working up to MAX_RANGE (10,000) items."""
    assert render(engine, f"{{{{ range({MAX_RANGE}) | list | length }}}}") == str(MAX_RANGE)


@pytest.mark.parametrize(
    ("source", "fits"),
    [
        (f"{{{{ 'x' * {MAX_OUTPUT_BYTES} }}}}", True),
        (f"{{{{ 'x' * {MAX_OUTPUT_BYTES + 1} }}}}", False),
        (f"a{{{{ 'x' * {MAX_OUTPUT_BYTES} }}}}", False),
        (f"{{{{ 'é' * {MAX_OUTPUT_BYTES // 2} }}}}", True),
        (f"{{{{ 'é' * {MAX_OUTPUT_BYTES // 2 + 1} }}}}", False),
        ("{% for i in range(10000) %}{{ 'x' * 100 }}{% endfor %}", False),
        ("{% for i in range(600) %}{{ 'x' * 100 }}{% endfor %}", True),
    ],
)
def test_output_is_capped_at_64_kib(engine: TemplateEngine, source: str, fits: bool) -> None:
    """Rendered output over 64 KiB of UTF-8 is refused; up to the cap it renders."""
    if fits:
        assert len(render(engine, source).encode()) <= MAX_OUTPUT_BYTES
    else:
        with pytest.raises(TemplateRenderFailure, match="output is over the limit"):
            render(engine, source)


def test_bomb_in_constant_expression_does_not_hang_compile(engine: TemplateEngine) -> None:
    """Constant bombs are not folded at compile time: compile succeeds, render refuses."""
    template = engine.compile("{{ 'x' | center(100000000) }}{{ 'y' * 10**9 }}")
    with pytest.raises(TemplateRenderFailure):
        template.render({})


# --- null is not text (issue 13, item 7) ------------------------------------------------------

NULL_HINT = "to render null as empty text, write {{ event.note | default('', true) }}"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ event.note }}", f"event.note is null; {NULL_HINT}"),
        ("x-{{ event.note }}-y", f"event.note is null; {NULL_HINT}"),
        ("{{ event['note'] }}", f"event.note is null; {NULL_HINT}"),
        ("{% if true %}{{ event.note }}{% endif %}", f"event.note is null; {NULL_HINT}"),
        ("{{ event.note | default('x') }}", "event.note | default is null; to render null"),
        ("{{ 'a' ~ event.note }}", "a null value cannot be used as text; to render null"),
        ("{{ event.note | basename }}", "basename: its input is null; to render null"),
        ("{{ event.note | upper }}", "upper: its input is null; to render null"),
        ("{{ event.note | string }}", "string: its input is null; to render null"),
        ("{{ event.note | int }}", "int: its input is null; to render null"),
        ("{{ '%s' % event.note }}", "a null value cannot be used as text; to render null"),
        ("{{ '{}'.format(event.note) }}", "a null value cannot be used as text; to render null"),
        ("{{ [event.note, 'x'] | join('-') }}", "a null value cannot be used as text"),
    ],
)
def test_null_is_an_error_never_the_string_null(
    engine: TemplateEngine, source: str, message: str
) -> None:
    """A field that is present but null fails the render naming it, with how to allow it."""
    with pytest.raises(TemplateRenderFailure) as caught:
        render(engine, source)
    assert str(caught.value).startswith(message), str(caught.value)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ event.note | default('', true) }}", ""),
        ("{{ event.note | default('anon', true) }}", "anon"),
        ("{{ event.note or 'anon' }}", "anon"),
        ("{{ 'none' if event.note is none else 'some' }}", "none"),
        ("{% if event.note %}x{% else %}y{% endif %}", "y"),
        ("{{ event.note | tojson }}", "null"),
        ("{{ {'a': event.note} }}", '{"a":null}'),
        ("{{ [event.note] | tojson }}", "[null]"),
        ("{{ event.value }}", '{"orderId":42,"customer":"Zoë","tags":["a","b"],"paid":true}'),
    ],
)
def test_null_can_be_allowed_and_structures_keep_json_null(
    engine: TemplateEngine, source: str, expected: str
) -> None:
    """default(..., true), tests and `or` handle null; tojson and containers keep JSON null."""
    assert render(engine, source) == expected


def test_regex_replace_stops_a_backtracking_pattern(engine: TemplateEngine) -> None:
    """A pattern that backtracks exponentially on the subject fails the render once the
    match runs past MAX_REGEX_SECONDS, instead of stopping the daemon."""
    context = {**CONTEXT, "event": {"s": "a" * 64 + "!"}}
    with pytest.raises(TemplateRenderFailure, match="matching took longer than"):
        render(engine, "{{ event.s | regex_replace('(a|aa)+$', '-') }}", context)
