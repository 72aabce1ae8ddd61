"""Group commit for the local sink: concurrent creates share one request to the file
writer process and one file-system sync.

A create encodes its document (so a document that cannot be sent fails alone, at once)
and waits on a future; whichever create finds no flush running starts one, and the flush
sends everything pending at that moment — up to `MAX_BATCH` items — to the writer process
(trigger.submit.filewriter) as one request. The writer writes each manifest without ever
overwriting an existing name, syncs the file system once for the whole batch, and answers.
Creates that arrive during a flush form the next batch. The futures resolve only after the
sync, so a caller that acknowledges its event on success never acknowledges data that is
not on disk. Under load, batches grow to the number of creates in flight; alone, a create
is a batch of one — the latency of a single write plus a sync.

The writer process starts with the first write and again after it dies: a request it did
not answer fails with OSError (a temporary error to the sink's callers, who retry; the
names make a retry of an already written manifest a duplicate). `close` ends it by closing
its input.
"""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from trigger.submit.filewriter import HEADER, encode_item, frame

MAX_BATCH: Final = 4096  # items per request: bounds the writer's memory per request
PIPELINE: Final = 2  # requests sent ahead of their answers
STOP_TIMEOUT: Final = 10.0  # seconds for the writer to finish and exit after close


class InvalidDocument(ValueError):
    """The writer cannot write this document (it is not plain YAML data)."""


@dataclass(frozen=True)
class Existing:
    """The name was taken: the stored manifest's labels and annotations (on disk)."""

    metadata: dict[str, Any]


Answer = bool | Existing | Exception  # written, name taken, or why not
_Request = tuple[list[bytes], "asyncio.Future[list[Answer]]"]


@dataclass
class GroupWriter:
    """Batches concurrent writes into one request and one sync (see the module doc)."""

    root: Path
    pending: list[_Request] = field(default_factory=list)
    flushing: asyncio.Task[None] | None = None
    process: asyncio.subprocess.Process | None = None

    async def write(self, relative: str, document: Mapping[str, Any]) -> bool | Existing:
        """True when written, Existing when the name already exists; raises OSError, or
        InvalidDocument for a document that cannot be written."""
        (answer,) = await self.write_many([(relative, document)])
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def write_many(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Answer]:
        """Write several documents in one go: an answer per item, in order — True,
        Existing (the name exists), InvalidDocument or OSError."""
        answers: list[Answer | None] = [None] * len(items)
        encoded: list[bytes] = []
        places: list[int] = []
        for index, item in enumerate(items):
            try:
                encoded.append(encode_item(*item))
                places.append(index)
            except (TypeError, ValueError) as exc:
                answers[index] = InvalidDocument(f"cannot write the document: {exc}")
        if encoded:
            future: asyncio.Future[list[Answer]] = asyncio.get_running_loop().create_future()
            self.pending.append((encoded, future))
            if self.flushing is None or self.flushing.done():
                self.flushing = asyncio.create_task(self._flush(), name="local-sink-writer")
            # A caller cancelled while waiting cancels only its own future; the flush skips
            # futures that are done, and the write goes ahead (the names are idempotent).
            for index, answer in zip(places, await future, strict=True):
                answers[index] = answer
        return [a for a in answers if a is not None]

    @property
    def pid(self) -> int | None:
        """The writer process's pid while it runs."""
        return self.process.pid if self.process is not None else None

    async def close(self) -> None:
        """Finish the batches in hand, then end the writer process."""
        if self.flushing is not None:
            await asyncio.gather(self.flushing, return_exceptions=True)
        process, self.process = self.process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()

    def _take(self) -> list[_Request]:
        """Whole requests, up to MAX_BATCH items (at least one request)."""
        count, size = 0, 0
        for items, _ in self.pending:
            if count and size + len(items) > MAX_BATCH:
                break
            count, size = count + 1, size + len(items)
        batch, self.pending = self.pending[:count], self.pending[count:]
        return batch

    async def _flush(self) -> None:
        # Up to PIPELINE requests are sent ahead, so the writer finds the next one waiting
        # when it answers one; answers come back in the order the requests went.
        sent: deque[list[_Request]] = deque()
        process: asyncio.subprocess.Process | None = None
        try:
            while self.pending or sent:
                if self.pending and len(sent) < PIPELINE:
                    batch = self._take()
                    sent.append(batch)
                    if process is None or process is not self.process:
                        process = self.process or await self._start()
                    assert process.stdin is not None
                    body = b"".join(i for items, _ in batch for i in items)
                    process.stdin.write(frame(body))  # buffered; the answer tells how it went
                    continue
                assert process is not None
                try:
                    answers = iter(await self._receive(process))
                except OSError as exc:  # every request sent to that process is lost
                    await self._discard(process)
                    _fail(sent, exc)
                    continue
                for items, future in sent.popleft():
                    # `items` first: zip() stops on it without taking an answer too many.
                    mine = [_answer(a) for _, a in zip(items, answers, strict=False)]
                    if not future.done():
                        future.set_result(mine)
        except BaseException:  # cancelled: the streams are out of step, nobody may wait
            if process is not None:
                await self._discard(process)
            _fail(sent, OSError("the file writer was stopped"))
            raise

    async def _receive(self, process: asyncio.subprocess.Process) -> list[Any]:
        assert process.stdout is not None
        try:
            size = int.from_bytes(await process.stdout.readexactly(HEADER), "big")
            body = await process.stdout.readexactly(size)
            answers: list[Any] = marshal.loads(body)  # noqa: S302 - our own writer, a private pipe
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise OSError(f"the file writer process failed: {exc!r}") from exc
        return answers

    async def _start(self) -> asyncio.subprocess.Process:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "trigger.submit.filewriter",
            str(self.root),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # terminal signals go to the daemon, which drains
        )
        return self.process

    async def _discard(self, process: asyncio.subprocess.Process) -> None:
        if self.process is process:
            self.process = None
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _fail(sent: deque[list[_Request]], error: OSError) -> None:
    for batch in sent:
        for _, future in batch:
            if not future.done():
                future.set_exception(error)
    sent.clear()


def _answer(raw: Any) -> Answer:
    if isinstance(raw, bool):
        return raw
    if "exists" in raw:
        return Existing(raw["exists"])
    if "invalid" in raw:
        return InvalidDocument(raw["invalid"])
    return OSError(raw["errno"], raw["error"])
