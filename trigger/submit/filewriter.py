"""The local sink's file writer: a child process that writes manifests and syncs them.

Writing a manifest takes four system calls, and each one gives the GIL back and has to
win it again. In a worker thread of a daemon whose event loop is busy, every one of those
waits for the loop to let go — up to the interpreter's 5 ms switch interval — and a batch
of 512 manifests took a quarter of a second (measured: a worker thread writing beside a
busy thread managed 72 files/s, alone 7,000/s). So the writing happens in a process of
its own, with its own interpreter and its own core: `GroupWriter` (trigger.submit.batching)
sends it batches of documents and it answers each batch once the batch is on disk.

Protocol, on the child's stdin and stdout: frames of a 4-byte big-endian length and a
body. A request body is a run of framed items, each `marshal`ed `(relative path,
document)`; the answer is one marshalled list, an entry per item: True (written),
`{"exists": metadata}` (the name exists: never overwritten; the stored manifest's labels
and annotations, so the sink can tell a redelivery from a collision), `{"errno": n,
"error": text}` (an OSError) or `{"invalid": text}` (a document that cannot be written as
YAML). marshal, not JSON: it is
five times cheaper to make on the daemon's loop, and both ends are the same interpreter
(`sys.executable`) talking over a private pipe, so its format and trust are not in
question.
Each manifest is an unnamed O_TMPFILE file linked to its name once written (a named
temporary file and a hard link where O_TMPFILE is missing) — `link` fails if the name
exists — and one `syncfs` per batch makes the whole batch durable before it is answered.
A name found to exist is synced too before it is answered: an earlier writer may have
linked it and died (or failed its sync) before it was durable, and "already exists" must
mean "on disk" as much as "written" does. A write that fails (a full disk) for a name
that exists is answered as existing, so a redelivery needs no free space.

The child ends when its stdin closes (the sink closed, or the daemon died), after
answering what it has read. It ignores SIGINT, which a terminal sends to the whole
process group, so a Ctrl-C stops the daemon gracefully while the child finishes its work.

Run: `python -m trigger.submit.filewriter ROOT`.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import marshal
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final

import yaml

from trigger.submit.manifest import to_yaml

try:  # libyaml is an order of magnitude faster when it is there
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

Write = tuple[str, str, str]  # the directory, the file's name in it, and its text
MAX_ERROR: Final = 1000  # characters of an error message in an answer
HEADER: Final = 4  # bytes of frame length


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's syncfs(2), which syncs one file system, where the platform has it."""
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs  # the symbols already loaded
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    result: Callable[[int], int] = function
    return result


_SYNCFS: Final = _load_syncfs()


def sync_filesystem(directory: int) -> None:
    """Make everything written on the file system of the open `directory` durable:
    syncfs, else os.sync() and an fsync of the directory."""
    if _SYNCFS is None or _SYNCFS(directory) != 0:
        os.sync()
        os.fsync(directory)


def write_files(items: Sequence[Write]) -> list[bool | OSError]:
    """Write each new file (True), or find its name taken (False), or fail (the error).
    Nothing is synced here."""
    results: list[bool | OSError] = []
    directories: dict[str, int] = {}  # each directory opened once per batch
    try:
        for directory, name, text in items:
            try:
                fd = directories.get(directory)
                if fd is None:
                    os.makedirs(directory, exist_ok=True)
                    fd = directories[directory] = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                results.append(_write_new(fd, name, text.encode()))
            except OSError as exc:
                results.append(exc)
    finally:
        for fd in directories.values():
            os.close(fd)
    return results


# O_TMPFILE makes an unnamed file that is linked to its name once written: no temporary
# name to create and remove, which halves the directory updates per manifest. File systems
# without it (and kernels before 3.11) use a named temporary file instead.
_TMPFILE_UNSUPPORTED: Final = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})


class _TmpfileSupport:
    usable = hasattr(os, "O_TMPFILE") and Path("/proc/self/fd").is_dir()
    # linkat(fd, "", AT_EMPTY_PATH) links the open file itself. Recent kernels allow it
    # without CAP_DAC_READ_SEARCH for a file the caller opened (seen for non-root on 6.18);
    # it saves the /proc path walk (a fifth of the file's cost). Where it is refused, the
    # /proc link is used from then on.
    empty_path = True


_AT_EMPTY_PATH: Final = 0x1000
_EMPTY_PATH_REFUSED: Final = frozenset({errno.ENOENT, errno.EPERM, errno.EINVAL, errno.ENOSYS})


def _load_linkat() -> Callable[[int, bytes, int, bytes, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).linkat
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    function.restype = ctypes.c_int
    result: Callable[[int, bytes, int, bytes, int], int] = function
    return result


_LINKAT: Final = _load_linkat()


def _link_open_file(fd: int, directory: int, name: str) -> None:
    """Give the open O_TMPFILE file `fd` its name; FileExistsError if the name is taken."""
    if _LINKAT is not None and _TMPFILE.empty_path:
        if _LINKAT(fd, b"", directory, os.fsencode(name), _AT_EMPTY_PATH) == 0:
            return
        code = ctypes.get_errno()
        if code not in _EMPTY_PATH_REFUSED:
            raise OSError(code, os.strerror(code), name)
        _TMPFILE.empty_path = False
    # linkat(AT_SYMLINK_FOLLOW) of the /proc link: fails if `name` exists.
    os.link(
        f"/proc/self/fd/{fd}",
        name,
        src_dir_fd=directory,
        dst_dir_fd=directory,
        follow_symlinks=True,
    )


_TMPFILE: Final = _TmpfileSupport()
_UNIQUE: Final = itertools.count()


def _write_new(directory: int, name: str, data: bytes) -> bool:
    """Write `data` to the new file `name` in the open `directory`; False if it exists
    (also when the write failed, a full disk say, but the name is there)."""
    try:
        return _write_or_link(directory, name, data)
    except OSError:
        if _exists(directory, name):
            return False
        raise


def _exists(directory: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _write_or_link(directory: int, name: str, data: bytes) -> bool:
    if _TMPFILE.usable:
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o644, dir_fd=directory)
        except OSError as exc:
            if exc.errno not in _TMPFILE_UNSUPPORTED:
                raise
            _TMPFILE.usable = False
        else:
            try:
                _write_all(fd, data)
                _link_open_file(fd, directory, name)
            except FileExistsError:
                return False
            finally:
                os.close(fd)
            return True
    return _link_named(directory, name, data)


def _link_named(directory: int, name: str, data: bytes) -> bool:
    # A temporary name unique to this process and call; O_EXCL guards against anything
    # left over by a crashed process with a recycled pid.
    temporary = f".{name}.{os.getpid()}.{next(_UNIQUE)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=directory)
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.link(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary, dir_fd=directory)
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def inside(root: str, relative: str) -> tuple[str, str]:
    """The directory and file name of `root/relative`, refusing anything that could leave
    `root` (plain string work: pathlib cost more than writing the file)."""
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"path {relative!r} is not inside the output directory")
    return os.path.join(root, *parts[:-1]), parts[-1]


def answer(result: bool | OSError) -> bool | dict[str, Any]:
    if isinstance(result, bool):
        return result
    return {"errno": result.errno or 0, "error": (result.strerror or str(result))[:MAX_ERROR]}


Result = bool | OSError | dict[str, Any]  # a write's outcome, or an answer already made


def stored_metadata(path: str) -> dict[str, Any]:
    """The labels and annotations of the manifest at `path` (empty when it cannot be read
    as one: a file someone else put there)."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.load(handle, Loader=_Loader)
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    meta = document.get("metadata") if isinstance(document, dict) else None
    if not isinstance(meta, dict):
        return {}
    return {k: meta[k] for k in ("labels", "annotations") if isinstance(meta.get(k), dict)}


def handle(root: str, items: list[list[Any]]) -> list[Result]:
    """Write one request's items (not synced yet); their results, in the request's order."""
    answers: list[Result | None] = [None] * len(items)
    writes: list[Write] = []
    slots: list[int] = []
    for index, (relative, document) in enumerate(items):
        try:
            directory, name = inside(root, relative)
            text = to_yaml(document)
        except (ValueError, TypeError) as exc:
            answers[index] = {"invalid": str(exc)[:MAX_ERROR]}
            continue
        writes.append((directory, name, text))
        slots.append(index)
    for index, (directory, name, _), result in zip(slots, writes, write_files(writes), strict=True):
        if result is False:
            answers[index] = {"exists": stored_metadata(os.path.join(directory, name))}
        else:
            answers[index] = result
    return [a for a in answers if a is not None]


def read_frame(source: BinaryIO) -> bytes | None:
    """One frame's body, or None at the end of the input."""
    head = source.read(HEADER)
    if len(head) < HEADER:
        return None
    size = int.from_bytes(head, "big")
    body = source.read(size)
    if len(body) < size:
        return None
    return body


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(HEADER, "big") + body


def encode_item(relative: str, document: Any) -> bytes:
    """One request item, framed; raises ValueError for what marshal cannot carry."""
    return frame(marshal.dumps((relative, document)))


def split_items(body: bytes) -> list[Any]:
    """The items of a request body: `encode_item` outputs, one after another."""
    items = []
    view, start = memoryview(body), 0
    while start < len(body):
        size = int.from_bytes(view[start : start + HEADER], "big")
        start += HEADER
        items.append(marshal.loads(view[start : start + size]))  # noqa: S302 - from our parent
        start += size
    return items


def serve(root: str, source: BinaryIO, sink: BinaryIO) -> None:
    """Answer requests until the input ends.

    This thread writes each request's files and hands the results to a second thread,
    which syncs the file system and answers — so the next request is written while the
    last one is synced, and one sync covers every request written meanwhile."""
    written: queue.SimpleQueue[list[Result] | None] = queue.SimpleQueue()
    syncer = threading.Thread(
        target=_sync_and_answer, args=(root, written, sink), name="sync", daemon=True
    )
    syncer.start()
    try:
        while (body := read_frame(source)) is not None:
            written.put(handle(root, split_items(body)))
    finally:
        written.put(None)
        syncer.join()


def _sync_and_answer(
    root: str, written: queue.SimpleQueue[list[Result] | None], sink: BinaryIO
) -> None:
    fd: int | None = None  # the root, opened once something was written under it
    try:
        ending = False
        while not ending:
            batches: list[list[Result]] = []
            item = written.get()  # wait for one, then take every one already there
            while item is not None:
                batches.append(item)
                if written.empty():
                    break
                item = written.get()
            ending = item is None
            error: OSError | None = None
            if any(_on_disk(r) for batch in batches for r in batch):
                try:
                    if fd is None:
                        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
                    sync_filesystem(fd)
                except OSError as exc:
                    error = exc
            for batch in batches:
                results = batch if error is None else [error if _on_disk(r) else r for r in batch]
                sink.write(frame(marshal.dumps([_answer(r) for r in results])))
            sink.flush()
    finally:
        if fd is not None:
            os.close(fd)


def _on_disk(result: Result) -> bool:
    """Whether the answer promises a file on disk (written, or found existing): such an
    answer waits for the sync."""
    return result is True or (isinstance(result, dict) and "exists" in result)


def _answer(result: Result) -> bool | dict[str, Any]:
    return answer(result) if isinstance(result, bool | OSError) else result


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m trigger.submit.filewriter ROOT", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(args[0], sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
