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
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from trigger.submit.filewriter import HEADER, frame

MAX_BATCH: Final = 1024  # items per request: bounds the writer's memory per request
STOP_TIMEOUT: Final = 10.0  # seconds for the writer to finish and exit after close


class InvalidDocument(ValueError):
    """The writer cannot write this document (it is not plain YAML data)."""


@dataclass
class GroupWriter:
    """Batches concurrent writes into one request and one sync (see the module doc)."""

    root: Path
    pending: list[tuple[bytes, asyncio.Future[bool]]] = field(default_factory=list)
    flushing: asyncio.Task[None] | None = None
    process: asyncio.subprocess.Process | None = None

    async def write(self, relative: str, document: Mapping[str, Any]) -> bool:
        """True when written, False when the name already exists; raises OSError, or
        InvalidDocument for a document that cannot be written."""
        try:
            item = json.dumps([relative, document], separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise InvalidDocument(f"cannot write the document: {exc}") from exc
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.create_task(self._flush(), name="local-sink-writer")
        # A caller cancelled while waiting cancels only its own future; the flush skips
        # futures that are done, and the write itself goes ahead (the name is idempotent).
        return await future

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

    async def _flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
            try:
                answers = await self._exchange(b"[" + b",".join(i for i, _ in batch) + b"]")
            except OSError as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:  # cancelled: nobody may wait for ever
                for _, future in batch:
                    if not future.done():
                        future.set_exception(OSError("the file writer was stopped"))
                raise
            for (_, future), answer in zip(batch, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, bool):
                    future.set_result(answer)
                elif "invalid" in answer:
                    future.set_exception(InvalidDocument(answer["invalid"]))
                else:
                    future.set_exception(OSError(answer["errno"], answer["error"]))

    async def _exchange(self, request: bytes) -> list[Any]:
        process = self.process or await self._start()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(frame(request))
            await process.stdin.drain()
            size = int.from_bytes(await process.stdout.readexactly(HEADER), "big")
            answers: list[Any] = json.loads(await process.stdout.readexactly(size))
        except (OSError, asyncio.IncompleteReadError) as exc:
            await self._discard(process)
            raise OSError(f"the file writer process failed: {exc!r}") from exc
        except BaseException:  # cancelled mid-request: the streams are out of step
            await self._discard(process)
            raise
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
