"""Patches: RFC 7386 JSON merge patches, RFC 6902 JSON patches, and which one a request sends."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Final

from trigger.testing.kubeapi.errors import ApiStatusError
from trigger.testing.kubeapi.resources import JSON, Resource

_MERGE_PATCH: Final = "application/merge-patch+json"
_JSON_PATCH: Final = "application/json-patch+json"
_STRATEGIC_PATCH: Final = "application/strategic-merge-patch+json"


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch; unchanged subtrees are shared, not copied."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _patch_error(message: str) -> ApiStatusError:
    return ApiStatusError(
        422, f"the server rejected our request due to an error in our request: {message}"
    )


def _pointer(text: Any) -> list[str]:
    if not isinstance(text, str) or (text and not text.startswith("/")):
        raise _patch_error(f"invalid JSON pointer {text!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in text.split("/")[1:]]


def _index(items: list[Any], token: str, *, allow_end: bool) -> int:
    if allow_end and token == "-":  # noqa: S105 (a JSON pointer token, not a secret)
        return len(items)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise _patch_error(f"invalid array index {token!r}")
    if int(token) > len(items) - (0 if allow_end else 1):
        raise _patch_error(f"array index {token} out of bounds")
    return int(token)


def _resolve(doc: Any, tokens: Sequence[str]) -> Any:
    for token in tokens:
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token, allow_end=False)]
        else:
            raise _patch_error(f"missing path /{'/'.join(tokens)}")
    return doc


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1])
    if isinstance(parent, list):
        parent.insert(_index(parent, tokens[-1], allow_end=True), value)
    elif isinstance(parent, dict):
        parent[tokens[-1]] = value
    else:
        raise _patch_error(f"cannot add to /{'/'.join(tokens)}")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    parent = _resolve(doc, tokens[:-1]) if tokens else None
    if isinstance(parent, list):
        del parent[_index(parent, tokens[-1], allow_end=False)]
    elif isinstance(parent, dict) and tokens[-1] in parent:
        del parent[tokens[-1]]
    else:
        raise _patch_error(f"missing path /{'/'.join(tokens)}")
    return doc


def _apply_operation(doc: Any, op: Any) -> Any:
    if not isinstance(op, dict):
        raise _patch_error(f"invalid operation {op!r}")
    kind, path = op.get("op"), _pointer(op.get("path"))
    if kind in ("move", "copy"):
        source = _pointer(op.get("from"))
        value = copy.deepcopy(_resolve(doc, source))
        return _add(_remove(doc, source) if kind == "move" else doc, path, value)
    if kind == "remove":
        return _remove(doc, path)
    if "value" not in op:
        raise _patch_error(f"operation {kind!r} needs a value")
    if kind == "test":
        if _resolve(doc, path) != op["value"]:
            raise _patch_error(f"testing value {op.get('path')} failed")
        return doc
    if kind == "replace":
        _resolve(doc, path)  # replace needs an existing target, add does not
        return _add(_remove(doc, path), path, copy.deepcopy(op["value"])) if path else op["value"]
    if kind == "add":
        return _add(doc, path, copy.deepcopy(op["value"]))
    raise _patch_error(f"unexpected operation {kind!r}")


def json_patch(doc: JSON, operations: list[Any]) -> JSON:
    """Apply an RFC 6902 JSON patch (add, remove, replace, move, copy, test) to a copy."""
    result: Any = copy.deepcopy(doc)
    for op in operations:
        result = _apply_operation(result, op)
    if not isinstance(result, dict):
        raise _patch_error("the patched document is not an object")
    return result


def apply_patch(rtype: Resource, content_type: str, current: JSON, body: Any) -> JSON:
    if content_type == _JSON_PATCH:
        if not isinstance(body, list):
            raise ApiStatusError(
                400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
            )
        return json_patch(current, body)
    if content_type == _MERGE_PATCH or (content_type == _STRATEGIC_PATCH and not rtype.custom):
        if not isinstance(body, dict):
            raise ApiStatusError(
                400, "json: cannot unmarshal array into Go value of type map[string]interface {}"
            )
        patched: JSON = merge_patch(current, body)
        return patched
    raise ApiStatusError(
        415,
        "the body of the request was in an unknown format - accepted media "
        f"types include: {_JSON_PATCH}, {_MERGE_PATCH}",
    )
