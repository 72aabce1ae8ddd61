"""Dead letters: the record of an event that can never succeed, and where it is written.

A poison event (undecodable payload, render error, Workflow rejected, retries exhausted
where the caller chose to give up) is written here and then acknowledged, so it never
blocks its partition. `DeadLetterSink` is the seam: `FileDeadLetterSink` writes JSON lines;
a Kafka sink produces `encode(record)` with the event id as key through the same protocol.

The file sink appends one line per record with a single `write` on an `O_APPEND` descriptor
and fsyncs it before `write()` returns, because an acknowledged poison event exists only
here. Writes are serialized by a lock and run in a worker thread, off the loop. The file
is never rotated by trigger: dead letters are rare and precious; rotate it with logrotate
(`copytruncate`) or ship it, as for any log.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from trigger.events import Event, format_time, parse_time


@dataclass(frozen=True)
class DeadLetter:
    """One event (or manual firing) that was given up on, with why."""

    rule: str | None
    error: str  # "RenderError", "PermanentSubmitError", "DecodeError", "RetriesExhausted"
    message: str
    time: datetime
    attempts: int = 0  # create calls made; 0 when it failed before reaching the sink
    workflow: str | None = None
    event_id: str | None = None
    event_source: str | None = None
    event_type: str | None = None
    event_subject: str | None = None
    event: dict[str, Any] | None = field(default=None, compare=False)
    payload: str | None = None  # the undecoded payload (text or base64) when no event exists

    @classmethod
    def of(
        cls,
        event: Event | None,
        *,
        rule: str | None,
        error: str,
        message: str,
        time: datetime,
        attempts: int = 0,
        workflow: str | None = None,
        payload: str | None = None,
    ) -> DeadLetter:
        """The record for `event` (None for a manual firing or an undecodable payload)."""
        return cls(
            rule=rule,
            error=error,
            message=message,
            time=time,
            attempts=attempts,
            workflow=workflow,
            event_id=event.id if event else None,
            event_source=event.source if event else None,
            event_type=event.type if event else None,
            event_subject=event.subject if event else None,
            event=event.doc if event else None,
            payload=payload,
        )

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["time"] = format_time(self.time)
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> DeadLetter:
        return cls(**{**document, "time": parse_time(document["time"])})


def encode(record: DeadLetter) -> bytes:
    """One compact JSON document, newline-free (any sink's wire form)."""
    # default=str: an event document may carry values JSON has no type for.
    return json.dumps(record.to_json(), ensure_ascii=False, default=str).encode()


class DeadLetterSink(Protocol):
    """Where dead letters go. `write` returns only once the record is durable."""

    async def write(self, record: DeadLetter) -> None: ...

    async def close(self) -> None: ...


class FileDeadLetterSink:
    """Dead letters as JSON lines appended to a file, fsynced one by one."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = asyncio.Lock()
        self._fd: int | None = None
        self._closed = False

    async def write(self, record: DeadLetter) -> None:
        line = encode(record) + b"\n"
        async with self._lock:
            if self._closed:
                raise RuntimeError(f"dead-letter file {self.path} is closed")
            task = asyncio.ensure_future(asyncio.to_thread(self._append, line))
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                # The thread cannot be stopped: keep the lock until it is done, so the
                # next line cannot land in the middle of this one.
                await task
                raise

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            fd, self._fd = self._fd, None
            if fd is not None:
                await asyncio.to_thread(os.close, fd)

    def _append(self, line: bytes) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
