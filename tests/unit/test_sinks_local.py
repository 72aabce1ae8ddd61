"""The local (directory) and stdout sinks, and the sink registry."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from trigger.errors import (
    AlreadyExists,
    ConfigError,
    PermanentSubmitError,
    TemporarySubmitError,
)
from trigger.submit import local
from trigger.submit.base import Created, Sink
from trigger.submit.local import LocalSink
from trigger.submit.sinks import SINKS, TYPES, open_sink, sink_type
from trigger.submit.stdout import StdoutSink

Make = Callable[..., dict[str, Any]]


@pytest.fixture
def make_workflow(valid_workflow: Callable[[dict[str, Any]], None]) -> Make:
    """Build a Workflow and check it against hera's models and Argo's schema."""

    def make(
        name: str,
        namespace: str = "data",
        *,
        labels: dict[str, str] | None = None,
        generate_name: str | None = None,
        value: str = "oss://b/k",
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": {"trigger.dev/rule": "ingest", **(labels or {})},
            "annotations": {"trigger.dev/event-id": f"evt-{name}"},
        }
        if generate_name:
            meta["generateName"] = generate_name
        obj = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": meta,
            "spec": {
                "workflowTemplateRef": {"name": "ingest"},
                "arguments": {"parameters": [{"name": "input", "value": value}]},
            },
        }
        valid_workflow(obj)
        return obj

    return make


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[LocalSink]:
    made = LocalSink(tmp_path / "out")
    yield made
    await made.close()


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


# --- local: create ---------------------------------------------------------------------------


async def test_create_writes_manifest_that_round_trips(
    sink: LocalSink, make_workflow: Make
) -> None:
    """The manifest lands at <dir>/<namespace>/<name>.yaml and loads back identical."""
    workflow = make_workflow("ingest-1")
    created = await sink.create(workflow)
    path = sink.directory / "data" / "ingest-1.yaml"
    assert created == Created(name="ingest-1", namespace="data")
    assert yaml.safe_load(path.read_text()) == workflow


async def test_manifest_keeps_key_order(sink: LocalSink, make_workflow: Make) -> None:
    """Keys are written in the Workflow's own order, not sorted."""
    await sink.create(make_workflow("ordered"))
    text = (sink.directory / "data" / "ordered.yaml").read_text()
    assert text.index("apiVersion") < text.index("kind") < text.index("metadata")


async def test_generate_name_is_not_written(sink: LocalSink, make_workflow: Make) -> None:
    """A named Workflow is written without its generateName."""
    await sink.create(make_workflow("ingest-2", generate_name="ingest-"))
    stored = await sink.get_workflow("data", "ingest-2")
    assert stored is not None and "generateName" not in stored["metadata"]


async def test_recreate_is_already_exists_and_never_overwrites(
    sink: LocalSink, make_workflow: Make
) -> None:
    """A second create of a name is AlreadyExists and leaves the first manifest intact."""
    await sink.create(make_workflow("once", value="first"))
    with pytest.raises(AlreadyExists):
        await sink.create(make_workflow("once", value="second"))
    stored = await sink.get_workflow("data", "once")
    assert stored is not None
    assert stored["spec"]["arguments"]["parameters"][0]["value"] == "first"


async def test_no_temporary_files_left_behind(sink: LocalSink, make_workflow: Make) -> None:
    """After creates and refused re-creates, only the final manifests remain."""
    await sink.create(make_workflow("a"))
    await sink.create(make_workflow("b"))
    with pytest.raises(AlreadyExists):
        await sink.create(make_workflow("a"))
    assert files_under(sink.directory) == ["data/a.yaml", "data/b.yaml"]


async def test_concurrent_creates_of_one_name_have_one_winner(
    sink: LocalSink, make_workflow: Make
) -> None:
    """Of 16 concurrent creates of the same name, exactly one succeeds."""
    results = await asyncio.gather(
        *(sink.create(make_workflow("contested", value=str(i))) for i in range(16)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Created) for r in results) == 1
    assert sum(isinstance(r, AlreadyExists) for r in results) == 15
    assert files_under(sink.directory) == ["data/contested.yaml"]


@pytest.mark.parametrize(
    ("namespace", "name"),
    [("data", "../escape"), ("data", "a/b"), ("data", "Upper"), ("..", "x"), ("Bad_NS", "x")],
)
async def test_unsafe_names_are_permanent(namespace: str, name: str, sink: LocalSink) -> None:
    """Names that are not DNS-1123 (and could leave the directory) are refused."""
    body = {"metadata": {"name": name, "namespace": namespace}, "spec": {}}
    with pytest.raises(PermanentSubmitError):
        await sink.create(body)
    assert not sink.directory.exists()


async def test_unwritable_directory_is_temporary(tmp_path: Path, make_workflow: Make) -> None:
    """A directory that cannot be created (a file is in the way) is temporary."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    sink = LocalSink(blocker)
    with pytest.raises(TemporarySubmitError):
        await sink.create(make_workflow("x"))
    await sink.close()


def test_manifest_reads_back_as_written() -> None:
    """The manifest text is YAML that reads back to the Workflow, keys in order."""
    workflow = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "w", "namespace": "data"},
        "spec": {"arguments": {"parameters": [{"name": "n", "value": "12"}]}},
    }
    text = local.dump(workflow)
    assert yaml.safe_load(text) == workflow
    assert text.startswith("apiVersion: argoproj.io/v1alpha1\nkind: Workflow\n")


# --- local: reads, patches, stop ---------------------------------------------------------


async def test_get_workflow_missing_is_none(sink: LocalSink) -> None:
    """get_workflow of an unknown name is None."""
    assert await sink.get_workflow("data", "nothing") is None


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("team=a", ["a1", "a2"]),
        ("team==a", ["a1", "a2"]),
        ("team!=a", ["b1", "none"]),
        ("team", ["a1", "a2", "b1"]),
        ("!team", ["none"]),
        ("team=a,env=prod", ["a2"]),
        (" team = b ", ["b1"]),
        ("", ["a1", "a2", "b1", "none"]),
    ],
)
async def test_list_workflows_by_selector(
    selector: str, expected: list[str], sink: LocalSink, make_workflow: Make
) -> None:
    """list_workflows applies simple label selectors to the manifests of one namespace."""
    await sink.create(make_workflow("a1", labels={"team": "a"}))
    await sink.create(make_workflow("a2", labels={"team": "a", "env": "prod"}))
    await sink.create(make_workflow("b1", labels={"team": "b"}))
    await sink.create(make_workflow("none"))
    await sink.create(make_workflow("other-ns", namespace="default", labels={"team": "a"}))
    found = await sink.list_workflows("data", selector)
    assert [w["metadata"]["name"] for w in found] == expected


async def test_list_unknown_namespace_is_empty(sink: LocalSink) -> None:
    """Listing a namespace nothing was written to gives an empty list."""
    assert await sink.list_workflows("empty", "team=a") == []


async def test_set_based_selector_is_refused(sink: LocalSink) -> None:
    """Set-based selectors are not supported by the local sink and say so."""
    with pytest.raises(PermanentSubmitError, match="unsupported label selector"):
        await sink.list_workflows("data", "team in (a,b)")


async def test_stop_workflow_sets_shutdown_and_keeps_the_rest(
    sink: LocalSink, make_workflow: Make
) -> None:
    """stop_workflow rewrites the manifest with spec.shutdown: Stop, other fields intact."""
    workflow = make_workflow("running")
    await sink.create(workflow)
    await sink.stop_workflow("data", "running")
    stored = await sink.get_workflow("data", "running")
    assert stored is not None
    assert stored["spec"] == {**workflow["spec"], "shutdown": "Stop"}
    assert files_under(sink.directory) == ["data/running.yaml"]


async def test_merge_patch_null_deletes(sink: LocalSink, make_workflow: Make) -> None:
    """patch_workflow follows RFC 7386: null removes a key, objects merge."""
    await sink.create(make_workflow("p", labels={"team": "a"}))
    await sink.patch_workflow("data", "p", {"metadata": {"labels": {"team": None, "x": "1"}}})
    stored = await sink.get_workflow("data", "p")
    assert stored is not None
    assert stored["metadata"]["labels"] == {"trigger.dev/rule": "ingest", "x": "1"}


async def test_patch_missing_is_permanent(sink: LocalSink) -> None:
    """Patching a manifest that does not exist is a permanent 404."""
    with pytest.raises(PermanentSubmitError) as err:
        await sink.stop_workflow("data", "ghost")
    assert err.value.status == 404


async def test_check_creates_writable_directory(sink: LocalSink) -> None:
    """check() creates the directory and leaves no probe file."""
    await sink.check()
    assert sink.directory.is_dir() and files_under(sink.directory) == []


async def test_check_unwritable_is_temporary(tmp_path: Path) -> None:
    """check() raises TemporarySubmitError when the directory cannot be written."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TemporarySubmitError, match="not writable"):
        await LocalSink(blocker / "sub").check()


# --- stdout --------------------------------------------------------------------------------


async def test_stdout_yaml_documents_round_trip(make_workflow: Make) -> None:
    """YAML output is one `---` document per Workflow, loading back identical."""
    stream = io.StringIO()
    sink = StdoutSink(stream)
    workflows = [make_workflow("y1"), make_workflow("y2")]
    for workflow in workflows:
        await sink.create(workflow)
    assert stream.getvalue().startswith("---\n")
    assert list(yaml.safe_load_all(stream.getvalue())) == workflows


async def test_stdout_json_lines_round_trip(make_workflow: Make) -> None:
    """JSON output is one object per line."""
    stream = io.StringIO()
    sink = StdoutSink(stream, format="json")
    workflows = [make_workflow("j1"), make_workflow("j2")]
    for workflow in workflows:
        await sink.create(workflow)
    lines = stream.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == workflows


async def test_stdout_repeat_is_already_exists(make_workflow: Make) -> None:
    """A name printed before is AlreadyExists and is not printed again."""
    stream = io.StringIO()
    sink = StdoutSink(stream, format="json")
    await sink.create(make_workflow("twice"))
    with pytest.raises(AlreadyExists):
        await sink.create(make_workflow("twice"))
    assert len(stream.getvalue().splitlines()) == 1


async def test_stdout_memory_is_bounded_lru(make_workflow: Make) -> None:
    """Only the most recent `remember` names are kept; older ones print again."""
    stream = io.StringIO()
    sink = StdoutSink(stream, format="json", remember=2)
    for name in ("a", "b", "c"):
        await sink.create(make_workflow(name))
    await sink.create(make_workflow("a"))  # forgotten: printed again
    with pytest.raises(AlreadyExists):
        await sink.create(make_workflow("c"))
    assert [json.loads(x)["metadata"]["name"] for x in stream.getvalue().splitlines()] == [
        "a",
        "b",
        "c",
        "a",
    ]


async def test_stdout_concurrent_twins_print_once(make_workflow: Make) -> None:
    """Concurrent creates of one name print it exactly once."""
    stream = io.StringIO()
    sink = StdoutSink(stream, format="json")
    results = await asyncio.gather(
        *(sink.create(make_workflow("twin")) for _ in range(8)), return_exceptions=True
    )
    assert sum(isinstance(r, Created) for r in results) == 1
    assert len(stream.getvalue().splitlines()) == 1


async def test_stdout_defaults_to_sys_stdout(
    capsys: pytest.CaptureFixture[str], make_workflow: Make
) -> None:
    """Without a stream, the sink prints to the process's stdout."""
    await StdoutSink().create(make_workflow("shown"))
    assert "name: shown" in capsys.readouterr().out


async def test_stdout_closed_stream_fails_check() -> None:
    """check() reports a closed stream as temporary."""
    stream = io.StringIO()
    sink = StdoutSink(stream)
    await sink.check()
    stream.close()
    with pytest.raises(TemporarySubmitError):
        await sink.check()


def test_stdout_unknown_format_is_refused() -> None:
    """Only yaml and json are formats."""
    with pytest.raises(ValueError, match="unknown format"):
        StdoutSink(io.StringIO(), format="xml")  # type: ignore[arg-type]


# --- registry ------------------------------------------------------------------------------


def test_registry_names_the_four_sinks() -> None:
    """One table holds every kind of sink."""
    assert sorted(SINKS) == ["argo-server", "kubernetes", "local", "stdout"]


def test_every_kind_of_sink_names_its_class() -> None:
    """`sink_type` gives the class of each kind in SINKS without opening one."""
    assert sorted(TYPES) == sorted(SINKS)
    for kind in SINKS:
        assert sink_type(f"{kind}:anything").kind == kind


async def test_open_local(tmp_path: Path) -> None:
    """`local:DIR` opens a LocalSink on that directory."""
    sink = await open_sink(f"local:{tmp_path}")
    assert isinstance(sink, LocalSink) and isinstance(sink, Sink)
    assert sink.directory == tmp_path


@pytest.mark.parametrize(
    ("spec", "options", "expected"),
    [("stdout", {}, "yaml"), ("stdout:json", {}, "json"), ("stdout", {"format": "json"}, "json")],
)
async def test_open_stdout(spec: str, options: dict[str, Any], expected: str) -> None:
    """`stdout` opens a StdoutSink; the format comes from the spec or the options."""
    sink = await open_sink(spec, **options)
    assert isinstance(sink, StdoutSink) and sink.format == expected


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("ftp:x", {}, "unknown sink 'ftp'"),
        ("local", {}, "needs a directory"),
        ("local:/tmp/x", {"qps": 3}, "sink local"),
        ("stdout:xml", {}, "unknown format"),
        ("kubernetes:ctx", {}, "takes no argument"),
        ("argo-server", {}, "needs a URL"),
        ("argo-server:argo:2746", {}, "needs a URL"),
        ("kubernetes", {"nonsense": 1}, "sink kubernetes"),
    ],
)
async def test_open_sink_refuses_bad_specs(
    spec: str, options: dict[str, Any], message: str
) -> None:
    """Bad kinds, missing arguments and unknown options are configuration errors."""
    with pytest.raises(ConfigError, match=message):
        await open_sink(spec, **options)
