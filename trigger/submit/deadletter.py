"""Dead letters: the record of an event that can never succeed, and where it is written.

A poison event (undecodable payload, render error, Workflow rejected, retries exhausted
where the caller chose to give up) is written here and then acknowledged, so it never
blocks its partition. `DeadLetterSink` is the seam: `FileDeadLetterSink` writes JSON lines;
a Kafka sink produces `encode(record)` with the event id as key through the same protocol.

The file sink appends one line per record with a single `write` on an `O_APPEND` descriptor
and fsyncs it before `write()` returns, because an acknowledged poison event exists only
here. Writes are serialized by a lock and run in a worker thread, off the loop. A write
that fails (a full disk) is a `StorageError`: temporary, so the event is not acknowledged.
The file is never rotated by trigger: dead letters are rare and precious; rotate it with
logrotate (`copytruncate`) or ship it, as for any log.

`trigger replay` rewrites the file (a new file renamed over it). The writer and the replay
agree on `fcntl.flock` of the file: each append holds it, and `lock_current` re-opens the
path when the descriptor held no longer is the file there (the replay renamed its own over
it), so an append made while a replay runs lands in the file the replay leaves.

One dead letter per (event, rule, reason): a redelivered event — a sender's retry, a
Kafka record handled again after a restart — must not write its letter again.
`OnceDeadLetters` remembers the identities written (the last `REMEMBER`), and learns
those already in the dead-letter file (its last `PRIME_BYTES`) before its first write.

A record whose event cannot be serialised (it should not happen: decoders bound the
nesting of what they accept) is still written, with the event's coordinates, the reason,
and why its document was left out.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol

from trigger.events import Event, format_time, parse_time
from trigger.submit.storage import StorageObserver, report, storage_error

REMEMBER: Final = 100_000  # identities of dead letters written, kept to refuse repeats
PRIME_BYTES: Final = 16 * 1024 * 1024  # the tail of the file read for identities at start
Identity = tuple[str, str, str]


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
    replays: int = 0  # `trigger replay` runs that re-drove it and saw it fail again

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

    @property
    def identity(self) -> Identity:
        """(event, rule, reason): what makes two records the same dead letter. An event
        without an id (an undecodable payload) is named by its payload's digest."""
        event = self.event_id
        if event is None:
            event = "sha256:" + hashlib.sha256((self.payload or "").encode()).hexdigest()
        return event, self.rule or "", self.error

    def to_json(self) -> dict[str, Any]:
        # Field by field, not dataclasses.asdict: that deep-copies the event document
        # recursively, which a deeply nested payload turns into a RecursionError.
        document = {f.name: getattr(self, f.name) for f in fields(self)}
        document["time"] = format_time(self.time)
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> DeadLetter:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in document.items() if k in known}
        return cls(**{**values, "time": parse_time(document["time"])})


def encode(record: DeadLetter) -> bytes:
    """One compact JSON document, newline-free (any sink's wire form). An event document
    that cannot be serialised is left out, and `eventOmitted` says why."""
    document = record.to_json()
    try:
        # default=str: an event document may carry values JSON has no type for.
        return json.dumps(document, ensure_ascii=False, default=str).encode()
    except (RecursionError, ValueError, TypeError) as exc:
        document["event"] = None
        document["eventOmitted"] = f"the event document cannot be serialised: {exc!r}"[:500]
        return json.dumps(document, ensure_ascii=False, default=str).encode()


class DeadLetterSink(Protocol):
    """Where dead letters go. `write` returns only once the record is durable."""

    async def write(self, record: DeadLetter) -> None: ...

    async def close(self) -> None: ...


class FileDeadLetterSink:
    """Dead letters as JSON lines appended to a file, fsynced one by one."""

    target = "dead-letters"

    def __init__(
        self, path: str | os.PathLike[str], *, observer: StorageObserver | None = None
    ) -> None:
        self.path = Path(path)
        self._observer = observer
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
            except OSError as exc:
                error = storage_error(self.target, str(self.path), exc)
                raise report(error, self._observer) from exc

    async def identities(self, max_bytes: int = PRIME_BYTES) -> list[Identity]:
        """The identities of the records in the file's last `max_bytes` (none when the
        file is missing or unreadable: remembering is an optimisation, not a promise)."""
        try:
            return await asyncio.to_thread(_read_identities, self.path, max_bytes)
        except OSError:
            return []

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            fd, self._fd = self._fd, None
            if fd is not None:
                await asyncio.to_thread(os.close, fd)

    def _append(self, line: bytes) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = fd = lock_current(self.path, self._fd, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                # A line cut short by a full disk would glue itself to the next one.
                os.ftruncate(fd, size)
                raise
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def lock_current(path: Path, fd: int | None, flags: int) -> int:
    """A descriptor of the file now at `path`, holding its exclusive `flock` (blocking).

    `fd` (one opened before, or None) is kept when it still is that file; otherwise it is
    closed and the path opened again with `flags` — the lock may be won on a file that
    was renamed away meanwhile, so the check follows every wait."""
    while True:
        if fd is None:
            fd = os.open(path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                there = os.stat(path)
            except FileNotFoundError:
                there = None
        except BaseException:
            os.close(fd)
            raise
        if there is not None and (there.st_dev, there.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)  # closing releases the lock too
        fd = None


def _read_identities(path: Path, max_bytes: int) -> list[Identity]:
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - max_bytes))
        tail = handle.read()
    lines = tail.split(b"\n")
    if size > max_bytes:
        lines = lines[1:]  # the first line may be cut
    found = []
    for line in lines:
        try:
            found.append(DeadLetter.from_json(json.loads(line)).identity)
        except (ValueError, TypeError, KeyError):
            continue  # not a record of ours: nothing to remember
    return found


class PrimedSink(DeadLetterSink, Protocol):
    async def identities(self) -> list[Identity]: ...


class OnceDeadLetters:
    """Writes each (event, rule, reason) once: a repeat returns without writing.

    Concurrent writes of one identity share one write; a write that fails is forgotten,
    so its retry writes. `primer` (the dead-letter file) tells which identities exist
    already, once, before the first write."""

    def __init__(
        self,
        inner: DeadLetterSink,
        *,
        primer: PrimedSink | None = None,
        remember: int = REMEMBER,
    ) -> None:
        self.inner = inner
        self._primer = primer
        self._remember = remember
        self._written: OrderedDict[Identity, asyncio.Future[None]] = OrderedDict()
        self._priming: asyncio.Task[None] | None = None
        self.repeats = 0  # writes refused as repeats

    async def write(self, record: DeadLetter) -> None:
        if self._priming is None:
            self._priming = asyncio.ensure_future(self._prime())
        await asyncio.shield(self._priming)
        identity = record.identity
        found = self._written.get(identity)
        if found is not None:
            self.repeats += 1
            self._written.move_to_end(identity)
            await asyncio.shield(found)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._remember_written(identity, future)
        try:
            await self.inner.write(record)
        except BaseException as exc:
            if self._written.get(identity) is future:
                del self._written[identity]
            future.set_exception(exc)
            future.exception()  # retrieved: a failure is the caller's, not the loop's
            raise
        future.set_result(None)

    async def close(self) -> None:
        await self.inner.close()

    async def _prime(self) -> None:
        if self._primer is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        for identity in await self._primer.identities():
            self._remember_written(identity, done)

    def _remember_written(self, identity: Identity, future: asyncio.Future[None]) -> None:
        self._written[identity] = future
        self._written.move_to_end(identity)
        while len(self._written) > self._remember:
            self._written.popitem(last=False)
