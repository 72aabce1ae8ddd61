"""Recognise an event file by its shape and decode it (the input of `trigger match`).

Accepted shapes: an EventBridge CloudEvent or a JSON array of them, an MNS notification
(XML or JSON push body, SIMPLIFIED base64 message, or the plain `{"events": [...]}`
message), and the file-only forms `{"kafka": ...}`, `{"cron": ...}`, `{"webhook": ...}`,
`{"workflow": WORKFLOW}` (a finished Argo Workflow as the API returns it).
Each document is parsed once; errors name the file, then the place inside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from trigger.decoders._common import MAX_BYTES, parse_json, text_of, unbase64, utf8
from trigger.decoders.cron import decode_cron_file
from trigger.decoders.kafka import decode_kafka_file
from trigger.decoders.oss import decode_eventbridge, decode_mns, decode_mns_document
from trigger.decoders.webhook import decode_webhook_file
from trigger.decoders.workflow import decode_workflow_file
from trigger.errors import DecodeError
from trigger.events import Event

ACCEPTED_SHAPES: Final = (
    "an EventBridge CloudEvent or a JSON array of them (with specversion)",
    "an MNS notification (XML, or JSON with Message/TopicName)",
    'an MNS message ({"events": [...]}, plain or base64)',
    '{"kafka": {...}}',
    '{"cron": {...}}',
    '{"webhook": {...}}',
    '{"workflow": {...}} (a finished Argo Workflow)',
)
# The file-only shapes, told apart by their single top-level key.
_WRAPPED: Final[Mapping[str, Callable[[Mapping[str, Any]], Event]]] = {
    "kafka": decode_kafka_file,
    "cron": decode_cron_file,
    "webhook": decode_webhook_file,
    "workflow": decode_workflow_file,
}
_MNS_KEYS: Final = ("Message", "TopicName", "events")


def decode_file(path: Path, *, max_bytes: int = MAX_BYTES) -> list[Event]:
    """Read and decode one event file; an unreadable file is a DecodeError too."""
    where = str(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise DecodeError(f"{size} bytes exceeds the limit of {max_bytes} bytes", where=where)
        data = path.read_bytes()
    except OSError as exc:
        raise DecodeError(f"cannot read: {exc.strerror or exc}", where=where) from exc
    return decode_document(utf8(data, where=where), where=where, max_bytes=max_bytes)


def decode_document(text: str, *, where: str, max_bytes: int = MAX_BYTES) -> list[Event]:
    """Decode the text of one event file; `where` (the file name) prefixes every error."""
    try:
        return _decode(text_of(text, max_bytes, where="").strip())
    except DecodeError as exc:
        raise _relocated(exc, where) from exc


def _decode(text: str) -> list[Event]:
    if text.startswith("<"):
        return decode_mns(text)
    if text.startswith(("{", "[")):
        return _decode_json(parse_json(text, where=""))
    if text:
        return _decode_base64(text)
    raise _unrecognised("the file is empty")


def _decode_json(doc: Any) -> list[Event]:
    if isinstance(doc, list):
        return decode_eventbridge(doc)
    if not isinstance(doc, Mapping):
        raise _unrecognised(f"a JSON {type(doc).__name__}")
    if "specversion" in doc:
        return decode_eventbridge(doc)
    for key, decoder in _WRAPPED.items():
        if key in doc:
            return [decoder(doc)]
    if any(key in doc for key in _MNS_KEYS):
        return decode_mns_document(doc)
    raise _unrecognised(f"an object with keys {sorted(doc)[:8]}")


def _decode_base64(text: str) -> list[Event]:
    try:
        doc = parse_json(utf8(unbase64(text, where=""), where=""), where="")
    except DecodeError:
        raise _unrecognised("text that is neither XML, JSON nor base64 JSON") from None
    if not (isinstance(doc, Mapping) and "events" in doc):
        raise _unrecognised('base64 JSON without "events"')
    return decode_mns_document(doc)


def _unrecognised(found: str) -> DecodeError:
    expected = "; or ".join(ACCEPTED_SHAPES)
    return DecodeError(f"unrecognised event file: found {found}; expected {expected}")


def _relocated(exc: DecodeError, file: str) -> DecodeError:
    """The same error, its place prefixed with the file name."""
    message = str(exc).removeprefix(f"{exc.where}: ") if exc.where else str(exc)
    return DecodeError(message, where=f"{file}: {exc.where}" if exc.where else file)
