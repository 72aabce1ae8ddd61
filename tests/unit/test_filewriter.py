"""The local sink's file writer, with O_TMPFILE and with a named temporary file."""

from __future__ import annotations

import asyncio
import io
import marshal
import os
import signal
import stat
from pathlib import Path

import pytest
import yaml

from trigger.errors import AlreadyExists, TemporarySubmitError
from trigger.submit import filewriter
from trigger.submit.batching import Existing, GroupWriter, InvalidDocument
from trigger.submit.filewriter import write_files
from trigger.submit.local import LocalSink


@pytest.fixture(params=["empty-path", "proc-link", "named"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test every way: O_TMPFILE linked by linkat(AT_EMPTY_PATH), O_TMPFILE
    linked through /proc, and a named temporary file — each only where the platform has it."""
    if request.param != "named" and not filewriter._TMPFILE.usable:
        pytest.skip("no O_TMPFILE here")
    if request.param == "empty-path" and filewriter._LINKAT is None:
        pytest.skip("no linkat here")
    monkeypatch.setattr(filewriter._TMPFILE, "usable", request.param != "named")
    monkeypatch.setattr(filewriter._TMPFILE, "empty_path", request.param == "empty-path")
    return str(request.param)


def w(path: Path, text: str) -> tuple[str, str, str]:
    return str(path.parent), path.name, text


def test_writes_new_files_in_several_directories(tmp_path: Path, way: str) -> None:
    a, b = tmp_path / "ns1" / "a.yaml", tmp_path / "ns2" / "deep" / "b.yaml"
    assert write_files([w(a, "one\n"), w(b, "two ü\n")]) == [True, True]
    assert a.read_text() == "one\n"
    assert b.read_text(encoding="utf-8") == "two ü\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(a.stat().st_mode) == 0o644 & ~umask
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.yaml", "b.yaml"]


def test_an_existing_name_is_false_and_kept(tmp_path: Path, way: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("first\n")
    assert write_files([w(path, "second\n")]) == [False]
    assert path.read_text() == "first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.yaml"]


def test_the_same_name_twice_in_one_batch_is_written_once(tmp_path: Path, way: str) -> None:
    path = tmp_path / "x.yaml"
    assert write_files([w(path, "a\n"), w(path, "b\n")]) == [True, False]
    assert path.read_text() == "a\n"


def test_one_failing_item_fails_alone(tmp_path: Path, way: str) -> None:
    (tmp_path / "blocker").write_text("a file where a directory should be")
    good, bad = tmp_path / "ok" / "a.yaml", tmp_path / "blocker" / "b.yaml"
    results = write_files([w(bad, "no\n"), w(good, "yes\n")])
    assert isinstance(results[0], OSError)
    assert results[1] is True
    assert good.read_text() == "yes\n"


def test_large_text_is_written_whole(tmp_path: Path, way: str) -> None:
    body = "x" * (3 * 1024 * 1024) + "\n"
    path = tmp_path / "big.yaml"
    assert write_files([w(path, body)]) == [True]
    assert path.stat().st_size == len(body)


# --- the writer process, through GroupWriter ---------------------------------------------


async def test_group_writer_writes_through_its_process_and_closes_it(tmp_path: Path) -> None:
    writer = GroupWriter(tmp_path)
    results = await asyncio.gather(
        *(writer.write(f"ns/w{i}.yaml", {"metadata": {"name": f"w{i}"}}) for i in range(50))
    )
    assert results == [True] * 50
    assert await writer.write("ns/w0.yaml", {"other": 1}) == Existing({})
    assert yaml.safe_load((tmp_path / "ns" / "w7.yaml").read_text()) == {"metadata": {"name": "w7"}}
    process = writer.process
    assert process is not None
    await writer.close()
    assert process.returncode == 0
    assert writer.pid is None


async def test_a_dead_writer_fails_its_request_and_is_replaced(tmp_path: Path) -> None:
    writer = GroupWriter(tmp_path)
    try:
        assert await writer.write("ns/a.yaml", {"a": 1}) is True
        process = writer.process
        assert process is not None
        process.kill()
        await process.wait()
        with pytest.raises(OSError, match="file writer process failed"):
            await writer.write("ns/b.yaml", {"b": 1})
        assert await writer.write("ns/b.yaml", {"b": 1}) is True
        assert writer.pid not in (None, process.pid)
    finally:
        await writer.close()


async def test_the_writer_ignores_sigint(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the whole process group; the daemon drains through the
    writer, so the writer must not die of it."""
    writer = GroupWriter(tmp_path)
    try:
        assert await writer.write("ns/a.yaml", {"a": 1}) is True
        pid = writer.pid
        assert pid is not None
        os.kill(pid, signal.SIGINT)
        assert await writer.write("ns/b.yaml", {"b": 1}) is True
        assert writer.pid == pid
    finally:
        await writer.close()


async def test_documents_that_cannot_be_written_fail_alone(tmp_path: Path) -> None:
    writer = GroupWriter(tmp_path)
    try:
        with pytest.raises(InvalidDocument, match="cannot write"):
            await writer.write("ns/a.yaml", {"when": {1, 2}})
        outcomes = await asyncio.gather(
            writer.write("../escape.yaml", {"a": 1}),
            writer.write("ns/ok.yaml", {"a": 1}),
            return_exceptions=True,
        )
        assert isinstance(outcomes[0], InvalidDocument)
        assert "not inside" in str(outcomes[0])
        assert outcomes[1] is True
        assert not (tmp_path.parent / "escape.yaml").exists()
    finally:
        await writer.close()


@pytest.mark.parametrize("relative", ["/abs.yaml", "a/../../b.yaml", "..", ""])
def test_paths_must_stay_inside_the_root(tmp_path: Path, relative: str) -> None:
    with pytest.raises(ValueError, match="not inside"):
        filewriter.inside(str(tmp_path), relative)


def test_serve_answers_frames_until_the_input_ends(tmp_path: Path) -> None:
    """The protocol itself, without a process: two requests, two answers, then EOF."""
    requests = [
        [["ns/a.yaml", {"a": 1}], ["ns/a.yaml", {"a": 2}]],
        [["../x.yaml", {}], ["ns/b.yaml", {"b": [1, "2"]}]],
    ]
    bodies = [b"".join(filewriter.encode_item(path, doc) for path, doc in r) for r in requests]
    source = io.BytesIO(b"".join(filewriter.frame(body) for body in bodies))
    sink = io.BytesIO()
    filewriter.serve(str(tmp_path), source, sink)
    sink.seek(0)
    answers = []
    while (body := filewriter.read_frame(sink)) is not None:
        answers.append(marshal.loads(body))
    assert answers[0] == [True, {"exists": {}}]
    assert answers[1][0] == {"invalid": "path '../x.yaml' is not inside the output directory"}
    assert answers[1][1] is True
    assert (tmp_path / "ns" / "b.yaml").read_text() == 'b:\n- 1\n- "2"\n'


async def test_a_dead_writer_is_a_temporary_error_for_the_local_sink(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    body = {"metadata": {"name": "a", "namespace": "ns"}}
    try:
        await sink.create(body)
        process = sink._writer.process
        assert process is not None
        process.kill()
        await process.wait()
        with pytest.raises(TemporarySubmitError, match="file writer process failed"):
            await sink.create({"metadata": {"name": "b", "namespace": "ns"}})
        assert [type(r) for r in await sink.create_many([body])] == [AlreadyExists]
    finally:
        await sink.close()


# --- "exists" means durable too -------------------------------------------------------


def serve_requests(root: Path, requests: list[list[tuple[str, object]]]) -> list[list[object]]:
    """Run the writer's loop in-process over `requests`; its answers, one list each."""
    bodies = [b"".join(filewriter.encode_item(path, doc) for path, doc in r) for r in requests]
    sink = io.BytesIO()
    for body in bodies:  # one serve per request: each is synced and answered on its own
        filewriter.serve(str(root), io.BytesIO(filewriter.frame(body)), sink)
    sink.seek(0)
    answers = []
    while (frame := filewriter.read_frame(sink)) is not None:
        answers.append(marshal.loads(frame))
    return answers


def test_a_retry_after_a_failed_sync_is_answered_only_once_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync of a batch fails (EIO) after its file was linked: the retry finds the
    name, and its "exists" answer waits for a sync that succeeds — never a duplicate of
    data that was never made durable."""
    calls: list[int] = []

    def failing_once(directory: int) -> None:
        calls.append(directory)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(filewriter, "sync_filesystem", failing_once)
    first, retry = serve_requests(tmp_path, [[("ns/a.yaml", {"a": 1})], [("ns/a.yaml", {"a": 1})]])
    assert first == [{"errno": 5, "error": "Input/output error"}]
    assert retry == [{"exists": {}}]
    assert len(calls) == 2


def test_a_name_left_unsynced_by_a_dead_writer_is_synced_before_it_is_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer died between link and sync: the next writer finds the name and syncs the
    file system before it answers "exists"; a failing sync makes that answer an error."""
    assert write_files([w(tmp_path / "ns" / "a.yaml", "a: 1\n")]) == [True]  # never synced
    calls: list[int] = []

    def failing(directory: int) -> None:
        calls.append(directory)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(filewriter, "sync_filesystem", failing)
    (answer,) = serve_requests(tmp_path, [[("ns/a.yaml", {"a": 1})]])
    assert answer == [{"errno": 5, "error": "Input/output error"}]
    assert len(calls) == 1


def test_a_write_that_fails_for_an_existing_name_answers_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    """A full disk refuses the new file, but the name is already there: the answer is
    "exists" (a redelivery needs no free space), with the stored labels and annotations."""
    meta = {"labels": {"trigger.dev/rule": "r"}, "annotations": {"trigger.dev/idempotency-key": "k"}}
    assert serve_requests(tmp_path, [[("ns/a.yaml", {"metadata": meta})]]) == [[True]]

    def full(fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(filewriter, "_write_all", full)
    again, other = serve_requests(
        tmp_path, [[("ns/a.yaml", {"metadata": meta})], [("ns/b.yaml", {"metadata": meta})]]
    )
    assert again == [{"exists": meta}]
    assert other == [{"errno": 28, "error": "No space left on device"}]
