"""Field names a rule may use: checked at load against its source's event document.

A pattern key or a template path (`event.value.orderId`, `rule.name`) that names a field
the rule's source never has can never match or render, so it is a load error, worded with
the nearest real field (difflib) or, when nothing is near, the fields there are. Payloads
are free-form (`OPEN` in `trigger.decoders.fields`): any name below them is allowed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from trigger.decoders.fields import OPEN, RULE_CONTEXT, Shape, event_fields
from trigger.events import SourceKind

PathT = tuple[str | int, ...]
_OR: Final = "$or"


class Scope:
    """What a rule's filters and templates see: `event` (the source's document) and `rule`."""

    def __init__(
        self, source: SourceKind, *, polled: bool = False, kafka_format: str = "json"
    ) -> None:
        self.source = source
        event = event_fields(source, polled=polled, kafka_format=kafka_format)
        # Each root's fields, and how a message names their owner.
        self.roots: Mapping[str, tuple[Shape, str]] = {
            "event": (event, f"{source} events have"),
            "rule": (RULE_CONTEXT, "rules have"),
        }

    def check(self, path: Sequence[str | int]) -> str | None:
        """Why `path` (its first part `event` or `rule`) names no field, or None when it
        may name one."""
        root = str(path[0])
        if root not in self.roots:
            return None
        shape, owner = self.roots[root]
        where = root
        for part in path[1:]:
            if shape == OPEN:
                return None
            if isinstance(shape, str):  # LEAF
                return f"{where} is a single value; it has no field {part!r}"
            if isinstance(part, int):
                return None
            if part not in shape:
                return f"{owner} no field {part!r}{_nearest(str(part), shape)}"
            shape, where = shape[part], f"{where}.{part}"
            owner = f"{where} has"
        return None

    def pattern_problems(self, pattern: Mapping[str, Any]) -> Iterator[tuple[PathT, str]]:
        """(path inside the pattern, why) for each pattern key that names no field."""
        yield from self._pattern(pattern, ("event",), ())

    def _pattern(
        self, pattern: Mapping[str, Any], field: PathT, at: PathT
    ) -> Iterator[tuple[PathT, str]]:
        for key, value in pattern.items():
            if key == _OR:
                if isinstance(value, list):
                    for index, branch in enumerate(value):
                        if isinstance(branch, Mapping):
                            yield from self._pattern(branch, field, (*at, _OR, index))
                continue
            problem = self.check((*field, key))
            if problem is not None:
                yield (*at, key), problem
            elif isinstance(value, Mapping):
                yield from self._pattern(value, (*field, key), (*at, key))


def _nearest(name: str, fields: Mapping[str, Shape]) -> str:
    close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
    if not close:  # case slips (`scheduledtime`) score low on length; catch them too
        close = [f for f in fields if f.lower() == name.lower()]
    if close:
        return f"; did you mean {close[0]!r}?"
    return f" (they have: {', '.join(fields)})"
