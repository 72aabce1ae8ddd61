"""Sandboxed Jinja2 templates for rule parameters and idempotency keys (DESIGN §3).

Rule authors write `"oss://{{ event.bucket }}/{{ event.key }}"`; the engine compiles each
distinct source once, at load time, in an immutable sandbox with strict undefined. Renders
are pure and deterministic (no `now`, no `random`) because the idempotency key is rendered
from the same templates. Beyond Jinja's own sandbox, this module refuses the ways a short
template can eat memory or CPU: string/list repetition, big powers, wide format specs,
amplifying filters, huge ranges, nested loops, macros; and it caps every rendered value.

Values always render to `str` (Argo parameters are strings). Containers, booleans and
`None` render as compact JSON so `{{ event.value }}` hands a workflow usable JSON.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
import re
import string
from collections.abc import Iterable, Iterator, Mapping
from datetime import tzinfo
from typing import Any, Final, NoReturn
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from jinja2 import meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.filters import (
    do_batch,
    do_format,
    do_indent,
    do_join,
    do_replace,
    do_slice,
    do_sum,
    do_wordwrap,
)
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_environment, pass_eval_context

from trigger.errors import TemplateError, TriggerError
from trigger.events import parse_time
from trigger.rules.paths import PathFailure, compile_paths, render_paths

MAX_OUTPUT_BYTES: Final = 64 * 1024
MAX_VALUE_LEN: Final = 1024 * 1024  # any intermediate string or list, and regex subjects
MAX_RANGE: Final = 10_000
MAX_INT_BITS: Final = 4096
MAX_STRFTIME_WIDTH: Final = 64
REGEX_CACHE_SIZE: Final = 256

_MARKERS: Final = ("{{", "{%", "{#")
_REMOVED_GLOBALS: Final = ("cycler", "joiner", "lipsum", "namespace", "dict")
_REMOVED_FILTERS: Final = ("random",)  # templates must be deterministic
_FORBIDDEN_TAGS: Final[dict[type[nodes.Node], str]] = {
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from-import",
    nodes.Extends: "extends",
    nodes.Block: "block",
    nodes.AssignBlock: "set-block",
    nodes.FilterBlock: "filter-block",
}
_SIZED: Final = (str, bytes, list, tuple)
_NEWLINES: Final = re.compile(r"\r\n|\r|\n")
_PRINTF_SPEC: Final = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")
_STRFTIME_WIDTH: Final = re.compile(r"%[-_0^#]*(\d+)")
_NOT_DNS1123: Final = re.compile(r"[^a-z0-9-]")
_WIDTH_METHODS: Final = frozenset({"center", "ljust", "rjust", "zfill"})


class TemplateRenderFailure(TriggerError):
    """A template failed for one event (undefined name, refused operation, filter error)."""


def _refuse(message: str) -> NoReturn:
    raise TemplateRenderFailure(message)


def _check_len(size: int, what: str) -> None:
    if size > MAX_VALUE_LEN:
        _refuse(f"{what} would be {size} long, over the limit of {MAX_VALUE_LEN}")


def _check_number(text: str | None, limit: int, what: str) -> None:
    # Digit strings longer than 7 are over every limit here; skipping int() avoids
    # Python's own int-parsing limit on absurd inputs.
    if text is not None and (text == "*" or len(text) > 7 or int(text) > limit):
        _refuse(f"{what} {text!r} is not allowed (limit {limit})")


def _check_printf(fmt: str) -> None:
    for match in _PRINTF_SPEC.finditer(fmt):
        for number in match.groups():
            _check_number(number, MAX_VALUE_LEN, "%-format width")


def _check_format_method(fmt: str) -> None:
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the real call reports the malformed format string
    for _, _, spec, _ in fields:
        if spec and "{" in spec:
            _refuse("nested replacement fields in format specs are not allowed")
        for number in re.findall(r"\d+", spec or ""):
            _check_number(number, MAX_VALUE_LEN, "format width")


def _check_replace(subject: str, old: str, new: str, count: int | None) -> None:
    hits = len(subject) + 1 if old == "" else subject.count(old)
    if count is not None and count >= 0:
        hits = min(hits, count)
    _check_len(len(subject) + hits * (len(new) - len(old)), "replace result")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse operations whose result would be huge, before computing it."""
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "*":
        if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            _refuse(f"integer product over {MAX_INT_BITS} bits")
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, _SIZED) and isinstance(times, int):
                _check_len(len(seq) * times, "repetition")
    elif operator == "**":
        if ints and right > 0 and max(abs(left).bit_length(), 1) * right > MAX_INT_BITS:
            _refuse(f"power over {MAX_INT_BITS} bits")
    elif operator == "+":
        if isinstance(left, _SIZED) and isinstance(right, _SIZED):
            _check_len(len(left) + len(right), "concatenation")
    elif operator == "%" and isinstance(left, str):
        _check_printf(left)


def _check_str_method(owner: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if name in _WIDTH_METHODS:
        width = args[0] if args else kwargs.get("width", 0)
        if isinstance(width, int):
            _check_len(width, f"str.{name} width")
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int):
            _check_len(len(owner) + owner.count("\t") * tabsize, "expandtabs result")
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        _check_replace(owner, str(args[0]), str(args[1]), count)
    elif name in {"format", "format_map"}:
        _check_format_method(owner)
    elif name in {"translate", "maketrans"}:
        _refuse(f"str.{name} is not allowed in templates")


def _check_count(count: Any, what: str) -> None:
    if isinstance(count, int) and count > MAX_RANGE:
        _refuse(f"{what} {count} is over the limit of {MAX_RANGE}")


def _capped_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        _refuse(f"range of {len(numbers)} items, over the limit of {MAX_RANGE}")
    return numbers


def _defined(value: Any) -> Any:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(_defined(value))


def _json_default(value: Any) -> Any:
    _defined(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _tojson(value: Any, indent: int | None = None) -> str:
    separators = (",", ":") if indent is None else None
    return json.dumps(
        value, ensure_ascii=False, separators=separators, indent=indent, default=_json_default
    )


def _finalize(value: Any) -> Any:
    if type(value) is str:  # the common case, kept off the slower ABC check below
        return value
    if isinstance(value, Mapping | list | tuple | bool) or value is None:
        return _tojson(value)
    return value


# --- filters -------------------------------------------------------------------------------


def _splitext(path: Any) -> list[str]:
    return list(posixpath.splitext(_text(path)))


def _zone(name: Any) -> tzinfo:
    try:
        return ZoneInfo(_text(name))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TemplateRenderFailure(f"strftime: unknown time zone {name!r}") from exc


def _strftime(value: Any, fmt: str, tz: str = "UTC") -> str:
    if len(fmt) > 256:
        _refuse("strftime: format longer than 256 characters")
    for width in _STRFTIME_WIDTH.findall(fmt):
        _check_number(width, MAX_STRFTIME_WIDTH, "strftime width")
    moment = parse_time(_defined(value), where="strftime")
    return moment.astimezone(_zone(tz)).strftime(fmt)


def _b64encode(value: Any) -> str:
    data = value if isinstance(value, bytes) else _text(value).encode()
    return base64.b64encode(data).decode("ascii")


def _b64decode(value: Any) -> str:
    data = value if isinstance(value, bytes) else _text(value).encode()
    try:
        return base64.b64decode(data, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise TemplateRenderFailure(f"b64decode: {exc}") from exc


def _sha256(value: Any) -> str:
    data = value if isinstance(value, bytes) else _text(value).encode()
    return hashlib.sha256(data).hexdigest()


def _urlencode(value: Any) -> str:
    if isinstance(value, Mapping):
        return urlencode(dict(value), safe="", quote_via=quote)
    return quote(_text(value), safe="")


def _dns1123(value: Any) -> str:
    label = _NOT_DNS1123.sub("-", _text(value).lower()).strip("-")
    return label[:63].rstrip("-")


def _center(value: Any, width: int = 80) -> str:
    _check_len(width, "center width")
    return _text(value).center(width)


def _indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = _text(s)
    pad = len(width) if isinstance(width, str) else width
    _check_len(len(text) + (text.count("\n") + 1) * pad, "indent result")
    return do_indent(text, width, first, blank)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    _check_printf(_text(value))
    return do_format(value, *args, **kwargs)


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    _check_replace(_text(s), _text(old), _text(new), count)
    return do_replace(eval_ctx, s, old, new, count)


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    if attribute is None:
        size = sum(len(_text(item)) for item in items) + len(d) * max(len(items) - 1, 0)
        _check_len(size, "join result")
    joined = str(do_join(eval_ctx, items, d, attribute))
    _check_len(len(joined), "join result")
    return joined


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _check_count(linecount, "batch size")
    return do_batch(value, linecount, fill_with)


def _slice(value: Iterable[Any], slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _check_count(slices, "slice count")
    slices_: Iterator[list[Any]] = do_slice(value, slices, fill_with)
    return slices_


@pass_environment
def _wordwrap(  # noqa: PLR0917 - mirrors Jinja's positional signature
    environment: jinja2.Environment,
    s: Any,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    text = _text(s)
    lines = 2 * len(text) // max(width, 1) + 2
    _check_len(len(text) + lines * len(wrapstring or "\n"), "wordwrap result")
    return do_wordwrap(environment, text, width, break_long_words, wrapstring, break_on_hyphens)


@pass_environment
def _sum(
    environment: jinja2.Environment, iterable: Iterable[Any], attribute: Any = None, start: Any = 0
) -> Any:
    if not isinstance(start, int | float):
        _refuse("sum: start must be a number")
    return do_sum(environment, iterable, attribute, start)


class _RegexReplacer:
    """`regex_replace` with a bounded per-engine cache of compiled patterns."""

    def __init__(self) -> None:
        self._cache: dict[str, re.Pattern[str]] = {}

    def compiled(self, pattern: str) -> re.Pattern[str]:
        regex = self._cache.pop(pattern, None)
        if regex is None:
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                message = f"regex_replace: bad pattern {pattern!r}: {exc}"
                raise TemplateRenderFailure(message) from exc
            if len(self._cache) >= REGEX_CACHE_SIZE:
                del self._cache[next(iter(self._cache))]
        self._cache[pattern] = regex  # re-inserted last: the dict order is the LRU order
        return regex

    def __call__(self, value: Any, pattern: str, repl: str, count: int = 0) -> str:
        subject = _text(value)
        if len(subject) > MAX_VALUE_LEN:
            _refuse(f"regex_replace: subject of {len(subject)} characters is over {MAX_VALUE_LEN}")
        regex = self.compiled(_text(pattern))
        replacement = _text(repl)
        grown = 0

        def expand(match: re.Match[str]) -> str:
            nonlocal grown
            text = match.expand(replacement)
            grown += len(text) - (match.end() - match.start())
            _check_len(len(subject) + grown, "regex_replace result")
            return text

        try:
            return regex.sub(expand, subject, count=count)
        except re.error as exc:
            raise TemplateRenderFailure(f"regex_replace: bad replacement {repl!r}: {exc}") from exc


# --- the sandbox -----------------------------------------------------------------------------


class _GuardedCodeGenerator(CodeGenerator):
    """Routes `~` through the environment so concatenation is size-checked like `+`."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.guarded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus size checks on operators, calls and concatenation."""

    code_generator_class = _GuardedCodeGenerator
    # Intercepted operators are also never constant-folded, so `'x' * 10**9` fails at
    # render time instead of hanging the loader.
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        method = getattr(obj, "__wrapped__", obj)  # str.format arrives wrapped by the sandbox
        owner = getattr(method, "__self__", None)
        if isinstance(owner, str):
            if getattr(method, "__name__", "") == "join" and args:
                items = list(args[0])  # may be a one-shot iterator: measured, then passed on
                size = sum(len(_text(item)) for item in items) + len(owner) * len(items)
                _check_len(size, "join result")
                args = (items, *args[1:])
            _check_str_method(owner, getattr(method, "__name__", ""), args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(result, _SIZED):
            _check_len(len(result), "call result")
        return result

    def guarded_concat(self, parts: tuple[Any, ...]) -> str:
        texts = [_text(part) for part in parts]
        _check_len(sum(map(len, texts)), "concatenation")
        return "".join(texts)


def _make_environment(regex_replace: _RegexReplacer) -> _Sandbox:
    env = _Sandbox(
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        finalize=_finalize,
    )
    for name in _REMOVED_GLOBALS:
        env.globals.pop(name, None)
    env.globals["range"] = _capped_range
    for name in _REMOVED_FILTERS:
        env.filters.pop(name, None)
    env.filters.update(
        basename=lambda path: posixpath.basename(_text(path)),
        dirname=lambda path: posixpath.dirname(_text(path)),
        splitext=_splitext,
        strftime=_strftime,
        regex_replace=regex_replace,
        b64encode=_b64encode,
        b64decode=_b64decode,
        sha256=_sha256,
        urlencode=_urlencode,
        quote=_urlencode,
        dns1123=_dns1123,
        tojson=_tojson,
        center=_center,
        indent=_indent,
        format=_format,
        replace=_replace,
        join=_join,
        batch=_batch,
        slice=_slice,
        wordwrap=_wordwrap,
        sum=_sum,
    )
    return env


def _check_structure(ast: nodes.Template) -> None:
    """Reject tags that buffer or recurse: parameter templates never need them."""
    for node in ast.find_all(tuple(_FORBIDDEN_TAGS)):
        tag = _FORBIDDEN_TAGS[type(node)]
        raise TemplateError(f"line {node.lineno}: {{% {tag} %}} is not allowed")
    for loop in ast.find_all(nodes.For):
        if loop.recursive:
            raise TemplateError(f"line {loop.lineno}: recursive loops are not allowed")
        inner = loop.find(nodes.For)
        if inner is not None:
            raise TemplateError(f"line {inner.lineno}: nested loops are not allowed")


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
            _refuse(f"output is over the limit of {MAX_OUTPUT_BYTES} bytes")
        parts.append(chunk)
    output = "".join(parts)
    if size > MAX_OUTPUT_BYTES // 4 and len(output.encode()) > MAX_OUTPUT_BYTES:
        _refuse(f"output is over the limit of {MAX_OUTPUT_BYTES} bytes")
    return output


class Template:
    """One compiled template; `render` is pure and safe to call from any task."""

    __slots__ = ("_fast", "_globals", "_jinja", "_text", "is_literal", "source", "variables")

    def __init__(
        self,
        source: str,
        jinja: jinja2.Template | None,
        variables: frozenset[str],
        reserved: frozenset[str] = frozenset(),
    ) -> None:
        self.source = source
        self.is_literal = jinja is None
        self.variables = variables
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
                return render_paths(self._fast, context, _finalize, MAX_OUTPUT_BYTES)
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
        self._env = _make_environment(_RegexReplacer())
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
            _check_structure(ast)
            code = self._env.compile(ast)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"line {exc.lineno}: {exc.message}") from exc
        jinja = self._env.template_class.from_code(self._env, code, self._env.make_globals(None))
        names = frozenset(meta.find_undeclared_variables(ast)) - self._globals
        return Template(source, jinja, names, self._globals)
