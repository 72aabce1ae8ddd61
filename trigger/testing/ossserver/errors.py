"""OSS error replies: the exception a handler raises, and the XML body OSS answers with."""

from __future__ import annotations

from xml.sax.saxutils import escape


class Fault(Exception):
    """An OSS error reply; `extra` adds elements after HostId (as OSS does)."""

    def __init__(self, status: int, code: str, message: str, **extra: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.extra = status, code, message, extra


def error_xml(code: str, message: str, request_id: str, host_id: str, **extra: str) -> bytes:
    """OSS's error body: Code, Message, RequestId, HostId, then any extra elements."""
    elements = {"Code": code, "Message": message, "RequestId": request_id, "HostId": host_id}
    body = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in {**elements, **extra}.items())
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{body}</Error>\n'.encode()
