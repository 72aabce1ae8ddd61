"""The Status bodies the emulator refuses requests with, worded as the real server's."""

from __future__ import annotations

import json
from typing import Any, Final

from trigger.testing.kubeapi.resources import JSON, Resource

_REASONS: Final = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
    405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
    504: "Timeout",
}  # fmt: skip


class ApiStatusError(Exception):
    """A request the emulated server refuses; `status` is the Status body it answers with."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: JSON | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.headers = dict(headers or {})
        self.status: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason or _REASONS.get(code, "Unknown"),
            "code": code,
        }
        if details:
            self.status["details"] = details


def invalid(rtype: Resource, name: str, path: str, value: Any, why: str) -> ApiStatusError:
    cause = f"Invalid value: {json.dumps(value)}: {why}"
    kind = f"{rtype.kind}.{rtype.group}" if rtype.group else rtype.kind
    details = {
        "name": name,
        "group": rtype.group,
        "kind": rtype.kind,
        "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": path}],
    }
    return ApiStatusError(422, f'{kind} "{name}" is invalid: {path}: {cause}', details=details)


def not_found(rtype: Resource, name: str) -> ApiStatusError:
    return ApiStatusError(404, f'{rtype.qualified} "{name}" not found', details=rtype.details(name))


def conflict(rtype: Resource, name: str, why: str | None = None) -> ApiStatusError:
    why = why or (
        "the object has been modified; please apply your changes to the latest "
        "version and try again"
    )
    return ApiStatusError(
        409,
        f'Operation cannot be fulfilled on {rtype.qualified} "{name}": {why}',
        details=rtype.details(name),
    )
