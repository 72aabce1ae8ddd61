"""Templates compiled once, rendered many times: `TemplateEngine` and `Template`.

The engine compiles each distinct source once, at load time, in one sandbox with strict
undefined, and memoizes it by source text. A source without markers is a literal and
never touches Jinja; a plain `{{ a.b }}` template renders through the fast path of
`paths.py`. Renders are pure and deterministic, never return a partial result, and are
capped at `MAX_OUTPUT_BYTES`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import jinja2
from jinja2 import meta
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError

from trigger.errors import TemplateError, TriggerError
from trigger.rules.paths import PathFailure, compile_paths, render_paths
from trigger.rules.templating.filters import RegexReplacer, table, tojson
from trigger.rules.templating.names import PathT, field_paths
from trigger.rules.templating.sandbox import (
    Sandbox,
    TemplateRenderFailure,
    capped_range,
    check_structure,
    null_input,
    null_output,
    refuse,
)

MAX_OUTPUT_BYTES: Final = 64 * 1024

_MARKERS: Final = ("{{", "{%", "{#")
_REMOVED_GLOBALS: Final = ("cycler", "joiner", "lipsum", "namespace", "dict")
_REMOVED_FILTERS: Final = ("random",)  # templates must be deterministic
_NULL_TAKERS: Final = frozenset({"default", "d", "tojson"})  # the filters that accept null
_NEWLINES: Final = re.compile(r"\r\n|\r|\n")


def _finalize(value: Any) -> Any:
    if type(value) is str:  # the common case, kept off the slower ABC check below
        return value
    if value is None:
        null_output(None)  # reached for constants only: outputs go through finalize_named
    if isinstance(value, Mapping | list | tuple | bool):
        return tojson(value)
    return value


def _finalize_path(path: tuple[str, ...], value: Any) -> Any:
    """The fast path's finalize: as Jinja's, naming a null path the same way."""
    if value is None:
        null_output(".".join(path))
    return _finalize(value)


def _null_refused(name: str, filter_: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, failing when its input is null (Jinja's own would print 'None')."""
    position = 1 if getattr(filter_, "jinja_pass_arg", None) else 0  # after its context

    @functools.wraps(filter_)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if len(args) > position and args[position] is None:
            null_input(f"{name}: its input is null")
        return filter_(*args, **kwargs)

    return guarded


def _make_environment(regex_replace: RegexReplacer) -> Sandbox:
    env = Sandbox(
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        finalize=_finalize,
    )
    for name in _REMOVED_GLOBALS:
        env.globals.pop(name, None)
    env.globals["range"] = capped_range
    for name in _REMOVED_FILTERS:
        env.filters.pop(name, None)
    env.filters.update(table(regex_replace))
    for name, filter_ in env.filters.items():
        if name not in _NULL_TAKERS:
            env.filters[name] = _null_refused(name, filter_)
    return env


def _literal_text(source: str) -> str:
    # What Jinja itself would output: newlines normalised, one trailing newline dropped.
    lines = _NEWLINES.split(source)
    if lines[-1] == "":
        del lines[-1]
    return "\n".join(lines)


def _bounded_join(chunks: Iterator[str]) -> str:
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT_BYTES:
            refuse(f"output is over the limit of {MAX_OUTPUT_BYTES} bytes")
        parts.append(chunk)
    output = "".join(parts)
    if size > MAX_OUTPUT_BYTES // 4 and len(output.encode()) > MAX_OUTPUT_BYTES:
        refuse(f"output is over the limit of {MAX_OUTPUT_BYTES} bytes")
    return output


class Template:
    """One compiled template; `render` is pure and safe to call from any task."""

    __slots__ = (
        "_fast",
        "_globals",
        "_jinja",
        "_text",
        "is_literal",
        "paths",
        "source",
        "variables",
    )

    def __init__(
        self,
        source: str,
        jinja: jinja2.Template | None,
        variables: frozenset[str],
        reserved: frozenset[str] = frozenset(),
        paths: frozenset[PathT] = frozenset(),
    ) -> None:
        self.source = source
        self.is_literal = jinja is None
        self.variables = variables
        self.paths = paths  # the event and rule fields it reads (see names.py)
        self._jinja = jinja
        self._text = _literal_text(source) if jinja is None else ""
        # Flattened once: Jinja's own new_context re-flattens a ChainMap on every render.
        self._globals: dict[str, Any] = {} if jinja is None else dict(jinja.globals)
        # Plain `{{ a.b }}` templates skip Jinja at render time (same output, see paths.py).
        self._fast = None if jinja is None else compile_paths(_literal_text(source), reserved)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    def render(self, context: Mapping[str, Any]) -> str:
        """The rendered string; raises TemplateRenderFailure, never returns a partial result."""
        if self._jinja is None:
            return self._text
        if self._fast is not None:
            try:
                return render_paths(self._fast, context, _finalize_path, MAX_OUTPUT_BYTES)
            except PathFailure as exc:
                raise TemplateRenderFailure(str(exc)) from exc
        try:
            env = self._jinja.environment
            scope = env.context_class(env, {**self._globals, **context}, None, {})
            return _bounded_join(self._jinja.root_render_func(scope))
        except TemplateRenderFailure:
            raise
        except UndefinedError as exc:
            raise TemplateRenderFailure(f"undefined: {exc.message}") from exc
        except SecurityError as exc:
            raise TemplateRenderFailure(f"not allowed: {exc.message}") from exc
        except TriggerError as exc:  # e.g. DecodeError from parse_time: already worded
            raise TemplateRenderFailure(str(exc)) from exc
        # Template code can raise anything a builtin or filter raises (TypeError,
        # ZeroDivisionError, RecursionError...): all of it is poison for this one event.
        except Exception as exc:
            raise TemplateRenderFailure(f"{type(exc).__name__}: {exc}") from exc


class TemplateEngine:
    """Compiles rule templates once, in one sandbox, memoized by source text."""

    def __init__(self) -> None:
        self._env = _make_environment(RegexReplacer())
        self._globals = frozenset(self._env.globals)
        self._compiled: dict[str, Template] = {}

    def compile(self, source: str) -> Template:
        """The Template for `source`; raises TemplateError when it does not compile."""
        template = self._compiled.get(source)
        if template is None:
            template = self._compile(source)
            self._compiled[source] = template
        return template

    def _compile(self, source: str) -> Template:
        if not any(marker in source for marker in _MARKERS):
            return Template(source, None, frozenset())
        try:
            ast = self._env.parse(source)
            check_structure(ast)
            code = self._env.compile(ast)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"line {exc.lineno}: {exc.message}") from exc
        jinja = self._env.template_class.from_code(self._env, code, self._env.make_globals(None))
        names = frozenset(meta.find_undeclared_variables(ast)) - self._globals
        return Template(source, jinja, names, self._globals, field_paths(ast))
