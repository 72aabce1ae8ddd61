"""What a template may not do: the sandbox and the limits it holds every render to.

Beyond Jinja's immutable sandbox, it refuses, before computing them, the ways a short
template can eat memory or CPU: string and list repetition, big powers and products,
wide format specs, str methods that widen or multiply text, huge ranges; at compile time
it refuses the tags that buffer or recurse (macros, blocks, includes, nested loops).
Refusals raise `TemplateRenderFailure`, a poison event for the one render.
"""

from __future__ import annotations

import re
import string
from typing import Any, Final, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from trigger.errors import TemplateError, TriggerError
from trigger.rules.templating.names import describe

MAX_VALUE_LEN: Final = 1024 * 1024  # any intermediate string or list, and regex subjects
MAX_REGEX_SECONDS: Final = 0.25  # one regex_replace; a backtracking pattern is stopped then
MAX_RANGE: Final = 10_000
MAX_INT_BITS: Final = 4096

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
_PRINTF_SPEC: Final = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")
_WIDTH_METHODS: Final = frozenset({"center", "ljust", "rjust", "zfill"})


class TemplateRenderFailure(TriggerError):
    """A template failed for one event (undefined name, refused operation, filter error)."""


# Null is never text: a field that is present but null fails the render, like a missing
# one, instead of becoming "null" or "None". `default(..., true)`, `or`, the `none` test and
# `tojson` (JSON keeps its nulls) are how a template allows it.
ALLOW_NULL: Final = "to render null as empty text"


def null_output(label: str | None) -> NoReturn:
    """Fail a render whose output expression (named by `label`) is null."""
    if label is None:
        refuse(f"a value is null; {ALLOW_NULL}, end the expression with | default('', true)")
    if "|" in label or "(" in label:
        refuse(f"{label} is null; {ALLOW_NULL}, end it with | default('', true)")
    refuse(f"{label} is null; {ALLOW_NULL}, write {{{{ {label} | default('', true) }}}}")


def null_input(what: str) -> NoReturn:
    """Fail a render that would use null as text (`what`: the filter or operation)."""
    refuse(f"{what}; {ALLOW_NULL}, apply | default('', true) to it first")


def refuse_null(values: Any) -> None:
    """Refuse null among the values a format (`%`, str.format) would turn into text."""
    items = values.values() if isinstance(values, dict) else values
    if values is None or (isinstance(values, tuple | list | dict) and None in list(items)):
        null_input("a null value cannot be used as text")


def refuse(message: str) -> NoReturn:
    """Fail this render: a TemplateRenderFailure saying why."""
    raise TemplateRenderFailure(message)


def check_len(size: int, what: str) -> None:
    """Refuse a string or list of `size` over MAX_VALUE_LEN, before it is built."""
    if size > MAX_VALUE_LEN:
        refuse(f"{what} would be {size} long, over the limit of {MAX_VALUE_LEN}")


def check_number(text: str | None, limit: int, what: str) -> None:
    """Refuse a width or count written as `text` (digits or `*`) over `limit`."""
    # Digit strings longer than 7 are over every limit here; skipping int() avoids
    # Python's own int-parsing limit on absurd inputs.
    if text is not None and (text == "*" or len(text) > 7 or int(text) > limit):
        refuse(f"{what} {text!r} is not allowed (limit {limit})")


def check_printf(fmt: str) -> None:
    """Refuse a %-format whose widths or precisions are over MAX_VALUE_LEN."""
    for match in _PRINTF_SPEC.finditer(fmt):
        for number in match.groups():
            check_number(number, MAX_VALUE_LEN, "%-format width")


def _check_format_method(fmt: str) -> None:
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the real call reports the malformed format string
    for _, _, spec, _ in fields:
        if spec and "{" in spec:
            refuse("nested replacement fields in format specs are not allowed")
        for number in re.findall(r"\d+", spec or ""):
            check_number(number, MAX_VALUE_LEN, "format width")


def check_replace(subject: str, old: str, new: str, count: int | None) -> None:
    """Refuse a replace whose result would be over MAX_VALUE_LEN."""
    hits = len(subject) + 1 if old == "" else subject.count(old)
    if count is not None and count >= 0:
        hits = min(hits, count)
    check_len(len(subject) + hits * (len(new) - len(old)), "replace result")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse operations whose result would be huge, before computing it."""
    ints = isinstance(left, int) and isinstance(right, int)
    if operator == "*":
        if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            refuse(f"integer product over {MAX_INT_BITS} bits")
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, _SIZED) and isinstance(times, int):
                check_len(len(seq) * times, "repetition")
    elif operator == "**":
        if ints and right > 0 and max(abs(left).bit_length(), 1) * right > MAX_INT_BITS:
            refuse(f"power over {MAX_INT_BITS} bits")
    elif operator == "+":
        if isinstance(left, _SIZED) and isinstance(right, _SIZED):
            check_len(len(left) + len(right), "concatenation")
    elif operator == "%" and isinstance(left, str):
        check_printf(left)
        refuse_null(right)


def _check_str_method(owner: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if name in _WIDTH_METHODS:
        width = args[0] if args else kwargs.get("width", 0)
        if isinstance(width, int):
            check_len(width, f"str.{name} width")
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int):
            check_len(len(owner) + owner.count("\t") * tabsize, "expandtabs result")
    elif name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        check_replace(owner, str(args[0]), str(args[1]), count)
    elif name in {"format", "format_map"}:
        _check_format_method(owner)
        refuse_null(args)
        refuse_null(kwargs)
        if name == "format_map" and args:
            refuse_null(args[0])
    elif name in {"translate", "maketrans"}:
        refuse(f"str.{name} is not allowed in templates")


def check_count(count: Any, what: str) -> None:
    """Refuse a batch size or slice count over MAX_RANGE."""
    if isinstance(count, int) and count > MAX_RANGE:
        refuse(f"{what} {count} is over the limit of {MAX_RANGE}")


def capped_range(*args: int) -> range:
    """`range` for templates: at most MAX_RANGE items."""
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        refuse(f"range of {len(numbers)} items, over the limit of {MAX_RANGE}")
    return numbers


def defined(value: Any) -> Any:
    """The value, or the undefined-name failure when it is Undefined."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return value


def as_text(value: Any) -> str:
    """The value as a string; an Undefined or null value fails."""
    if isinstance(value, str):
        return value
    if value is None:
        null_input("a null value cannot be used as text")
    return str(defined(value))


class _GuardedCodeGenerator(CodeGenerator):
    """Routes `~` through the environment so concatenation is size-checked like `+`, and
    each output expression through `finalize_named`, which knows what to call it."""

    def _output_child_pre(
        self, node: nodes.Expr, frame: Frame, finalize: CodeGenerator._FinalizeInfo
    ) -> None:
        named = f"environment.finalize_named({describe(node)!r}, "
        super()._output_child_pre(node, frame, self._FinalizeInfo(finalize.const, named))

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.guarded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class Sandbox(ImmutableSandboxedEnvironment):
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
                size = sum(len(as_text(item)) for item in items) + len(owner) * len(items)
                check_len(size, "join result")
                args = (items, *args[1:])
            _check_str_method(owner, getattr(method, "__name__", ""), args, kwargs)
        result = super().call(context, obj, *args, **kwargs)
        if isinstance(result, _SIZED):
            check_len(len(result), "call result")
        return result

    def finalize_named(self, label: str | None, value: Any) -> Any:
        """What an output expression shows; null fails, naming the expression."""
        if value is None:
            null_output(label)
        assert self.finalize is not None
        return self.finalize(value)

    def guarded_concat(self, parts: tuple[Any, ...]) -> str:
        texts = [as_text(part) for part in parts]
        check_len(sum(map(len, texts)), "concatenation")
        return "".join(texts)


def check_structure(ast: nodes.Template) -> None:
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
    _check_private(ast)


def _check_private(ast: nodes.Template) -> None:
    """Reject `x.__class__`, `x['_y']` and the like when the template is compiled: the
    sandbox refuses them at every render anyway, so such a template could never work, and
    saying so at load beats a dead letter per event."""
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        name: Any = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        if isinstance(name, str) and name.startswith("_"):
            raise TemplateError(
                f"line {node.lineno}: {name} is not accessible (names starting with _ are private)"
            )
