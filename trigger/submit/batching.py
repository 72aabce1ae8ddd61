"""Group commit for the local sink: concurrent creates share one worker-thread call and
one file-system sync.

A create waits on a future; whichever create finds no flush running starts one, and the
flush takes everything pending at that moment into a single `asyncio.to_thread` call that
writes each manifest (temporary file, then hard link to its name, so an existing name is
never overwritten) and then syncs the file system once for the whole batch. Creates that
arrive during a flush form the next batch. The futures resolve only after the sync, so a
caller that acknowledges its event on success never acknowledges data that is not on
disk. Under load, batches grow to the number of creates in flight; alone, a create is a
batch of one — the latency of a single write plus a sync.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

Write = tuple[Path, Callable[[], str]]  # the final path, and how to make its text


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's syncfs(2), which syncs one file system, where the platform has it."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    result: Callable[[int], int] = function
    return result


_SYNCFS: Final = _load_syncfs()


def sync_filesystem(directory: Path) -> None:
    """Make everything written under `directory` durable: syncfs, else fsync of the dir
    after os.sync()."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        if _SYNCFS is None or _SYNCFS(fd) != 0:
            os.sync()
            os.fsync(fd)
    finally:
        os.close(fd)


def write_batch(items: Sequence[Write]) -> list[bool | OSError]:
    """Write each new file (True), or find its name taken (False), or fail (the error);
    then sync once. Runs in a worker thread."""
    results: list[bool | OSError] = []
    made: set[Path] = set()
    for path, text in items:
        try:
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            results.append(_link_new(path, text()))
        except OSError as exc:
            results.append(exc)
    if any(r is True for r in results):
        try:
            for directory in made:
                sync_filesystem(directory)
                break  # one file system: one sync covers every directory under the root
        except OSError as exc:
            results = [exc if r is True else r for r in results]
    return results


_UNIQUE: Final = itertools.count()


def _link_new(path: Path, text: str) -> bool:
    # A temporary name unique to this process and call; O_EXCL guards against anything
    # left over by a crashed process with a recycled pid.
    temporary = path.parent / f".{path.name}.{os.getpid()}.{next(_UNIQUE)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            data = memoryview(text.encode())
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)
    return True


@dataclass
class GroupWriter:
    """Batches concurrent writes into one thread hop and one sync (see the module doc)."""

    pending: list[tuple[Write, asyncio.Future[bool]]] = field(default_factory=list)
    flushing: asyncio.Task[None] | None = None

    async def write(self, path: Path, text: Callable[[], str]) -> bool:
        """True when written, False when the name already exists; raises OSError."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.pending.append(((path, text), future))
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.create_task(self._flush(), name="local-sink-writer")
        # A caller cancelled while waiting cancels only its own future; the flush skips
        # futures that are done, and the write itself goes ahead (the name is idempotent).
        return await future

    async def close(self) -> None:
        if self.flushing is not None:
            await asyncio.gather(self.flushing, return_exceptions=True)

    async def _flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            try:
                results = await asyncio.to_thread(write_batch, [item for item, _ in batch])
            except BaseException as exc:  # the thread could not even run: fail them all
                for _, future in batch:
                    if not future.done():
                        future.set_exception(OSError(f"write failed: {exc}"))
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, OSError):
                    future.set_exception(result)
                else:
                    future.set_result(result)
