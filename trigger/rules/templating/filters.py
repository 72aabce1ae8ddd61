"""The filters templates can use on top of Jinja's, and Jinja's own with their caps.

trigger's own: path parts (`basename`, `dirname`, `splitext`), `strftime` in a time zone,
`regex_replace`, `b64encode`/`b64decode`, `sha256`, `urlencode`/`quote`, `dns1123` and a
compact `tojson`. Jinja's `center`, `indent`, `format`, `replace`, `join`, `batch`,
`slice`, `wordwrap` and `sum` are replaced by versions that check the size of what they
would build first. `table` gives them all by name, for one engine.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import tzinfo
from typing import Any, Final
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import regex
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
from jinja2.utils import pass_environment, pass_eval_context

from trigger.events import parse_time
from trigger.rules.templating.sandbox import (
    MAX_REGEX_SECONDS,
    MAX_VALUE_LEN,
    TemplateRenderFailure,
    as_text,
    check_count,
    check_len,
    check_number,
    check_printf,
    check_replace,
    defined,
    refuse,
    refuse_null,
)

MAX_STRFTIME_WIDTH: Final = 64
REGEX_CACHE_SIZE: Final = 256

_STRFTIME_WIDTH: Final = re.compile(r"%[-_0^#]*(\d+)")
_NOT_DNS1123: Final = re.compile(r"[^a-z0-9-]")


def table(regex_replace: RegexReplacer) -> dict[str, Callable[..., Any]]:
    """Every filter by name; `regex_replace` is the engine's own (it caches patterns)."""
    return dict(
        basename=lambda path: posixpath.basename(as_text(path)),
        dirname=lambda path: posixpath.dirname(as_text(path)),
        splitext=_splitext,
        strftime=_strftime,
        regex_replace=regex_replace,
        b64encode=_b64encode,
        b64decode=_b64decode,
        sha256=_sha256,
        urlencode=_urlencode,
        quote=_urlencode,
        dns1123=_dns1123,
        tojson=tojson,
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


def _json_default(value: Any) -> Any:
    defined(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def tojson(value: Any, indent: int | None = None) -> str:
    """Compact JSON (the `tojson` filter, and how containers render); undefined fails."""
    separators = (",", ":") if indent is None else None
    return json.dumps(
        value, ensure_ascii=False, separators=separators, indent=indent, default=_json_default
    )


def _splitext(path: Any) -> list[str]:
    return list(posixpath.splitext(as_text(path)))


def _zone(name: Any) -> tzinfo:
    try:
        return ZoneInfo(as_text(name))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise TemplateRenderFailure(f"strftime: unknown time zone {name!r}") from exc


def _strftime(value: Any, fmt: str, tz: str = "UTC") -> str:
    if len(fmt) > 256:
        refuse("strftime: format longer than 256 characters")
    for width in _STRFTIME_WIDTH.findall(fmt):
        check_number(width, MAX_STRFTIME_WIDTH, "strftime width")
    moment = parse_time(defined(value), where="strftime")
    return moment.astimezone(_zone(tz)).strftime(fmt)


def _b64encode(value: Any) -> str:
    data = value if isinstance(value, bytes) else as_text(value).encode()
    return base64.b64encode(data).decode("ascii")


def _b64decode(value: Any) -> str:
    data = value if isinstance(value, bytes) else as_text(value).encode()
    try:
        return base64.b64decode(data, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise TemplateRenderFailure(f"b64decode: {exc}") from exc


def _sha256(value: Any) -> str:
    data = value if isinstance(value, bytes) else as_text(value).encode()
    return hashlib.sha256(data).hexdigest()


def _urlencode(value: Any) -> str:
    if isinstance(value, Mapping):
        return urlencode(dict(value), safe="", quote_via=quote)
    return quote(as_text(value), safe="")


def _dns1123(value: Any) -> str:
    label = _NOT_DNS1123.sub("-", as_text(value).lower()).strip("-")
    return label[:63].rstrip("-")


def _center(value: Any, width: int = 80) -> str:
    check_len(width, "center width")
    return as_text(value).center(width)


def _indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = as_text(s)
    pad = len(width) if isinstance(width, str) else width
    check_len(len(text) + (text.count("\n") + 1) * pad, "indent result")
    return do_indent(text, width, first, blank)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    check_printf(as_text(value))
    refuse_null(args)
    refuse_null(kwargs)
    return do_format(value, *args, **kwargs)


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    check_replace(as_text(s), as_text(old), as_text(new), count)
    return do_replace(eval_ctx, s, old, new, count)


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    if attribute is None:
        size = sum(len(as_text(item)) for item in items) + len(d) * max(len(items) - 1, 0)
        check_len(size, "join result")
    joined = str(do_join(eval_ctx, items, d, attribute))
    check_len(len(joined), "join result")
    return joined


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    check_count(linecount, "batch size")
    return do_batch(value, linecount, fill_with)


def _slice(value: Iterable[Any], slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    check_count(slices, "slice count")
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
    text = as_text(s)
    lines = 2 * len(text) // max(width, 1) + 2
    check_len(len(text) + lines * len(wrapstring or "\n"), "wordwrap result")
    return do_wordwrap(environment, text, width, break_long_words, wrapstring, break_on_hyphens)


@pass_environment
def _sum(
    environment: jinja2.Environment, iterable: Iterable[Any], attribute: Any = None, start: Any = 0
) -> Any:
    if not isinstance(start, int | float):
        refuse("sum: start must be a number")
    return do_sum(environment, iterable, attribute, start)


class RegexReplacer:
    """`regex_replace` with a bounded per-engine cache of compiled patterns."""

    def __init__(self) -> None:
        self._cache: dict[str, regex.Pattern[str]] = {}

    def compiled(self, pattern: str) -> regex.Pattern[str]:
        compiled = self._cache.pop(pattern, None)
        if compiled is None:
            try:
                compiled = regex.compile(pattern)
            except regex.error as exc:
                message = f"regex_replace: bad pattern {pattern!r}: {exc}"
                raise TemplateRenderFailure(message) from exc
            if len(self._cache) >= REGEX_CACHE_SIZE:
                del self._cache[next(iter(self._cache))]
        self._cache[pattern] = compiled  # re-inserted last: the dict order is the LRU order
        return compiled

    def __call__(self, value: Any, pattern: str, repl: str, count: int = 0) -> str:
        subject = as_text(value)
        if len(subject) > MAX_VALUE_LEN:
            refuse(f"regex_replace: subject of {len(subject)} characters is over {MAX_VALUE_LEN}")
        compiled = self.compiled(as_text(pattern))
        replacement = as_text(repl)
        grown = 0

        def expand(match: regex.Match[str]) -> str:
            nonlocal grown
            text = match.expand(replacement)
            grown += len(text) - (match.end() - match.start())
            check_len(len(subject) + grown, "regex_replace result")
            return text

        try:
            return compiled.sub(expand, subject, count=count, timeout=MAX_REGEX_SECONDS)
        except (regex.error, IndexError) as exc:  # IndexError: a group the pattern lacks
            raise TemplateRenderFailure(f"regex_replace: bad replacement {repl!r}: {exc}") from exc
        except TimeoutError:
            # A backtracking pattern ('(a|aa)+$') can take exponential time on a short
            # subject; the regex module stops it where the standard library's cannot.
            refuse(
                f"regex_replace: matching took longer than {MAX_REGEX_SECONDS} s (pattern "
                f"{compiled.pattern!r} on {len(subject)} characters)"
            )
