"""The local sink: Workflow manifests in a directory, `<dir>/<namespace>/<name>.yaml`.

It is the default sink (no cluster needed), and it keeps the sink contract
exactly: a name is written once, atomically, and a second create of the same name is
`AlreadyExists`. Each manifest is written as an unnamed (or temporary) file in the same
directory, then linked to its final name — `link` fails if the name exists, so an existing
manifest is never overwritten, even by a concurrent writer in another process. Concurrent
creates are sent together to a file-writer process of the sink's own and made durable by
one file-system sync before any of them returns (`batching`, `filewriter`): no file I/O
runs on the event loop, and none competes with it for the GIL. Reads and patches (cron's
Forbid and Replace, `trigger finish`) are rare and run in worker threads.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import yaml

from trigger.decoders.workflow import FINAL_PHASES, LABEL_COMPLETED, LABEL_PHASE
from trigger.errors import PermanentSubmitError, TemporarySubmitError
from trigger.submit.base import Created, conflict, create_one, identity
from trigger.submit.batching import Existing, GroupWriter, InvalidDocument
from trigger.submit.manifest import to_yaml
from trigger.submit.storage import StorageObserver, report, storage_error

try:  # libyaml is an order of magnitude faster when it is there
    from yaml import CSafeLoader as Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as Loader  # type: ignore[assignment]

SUFFIX: Final = ".yaml"
_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_NAMESPACE: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_REQUIREMENT: Final = re.compile(
    r"\s*(?:!(?P<absent>[\w./-]+)|(?P<key>[\w./-]+)(?:\s*(?P<op>==|=|!=)\s*(?P<value>[\w.-]*))?)\s*"
)

Selector = tuple[tuple[str, str, str], ...]


def dump(workflow: Mapping[str, Any]) -> str:
    """A Workflow as YAML, keys in their given order (see trigger.submit.manifest)."""
    return to_yaml(workflow)


def _relative(namespace: str, name: str) -> str:
    """`<namespace>/<name>.yaml`, once both are checked to be DNS names (so the path
    cannot leave the sink's directory). Plain strings: pathlib per Workflow cost more
    than the rest of the sink's work on the event loop."""
    if not _NAMESPACE.fullmatch(namespace):
        raise PermanentSubmitError(f"invalid namespace {namespace!r}", status=422)
    if not _NAME.fullmatch(name):
        raise PermanentSubmitError(f"invalid workflow name {name!r}", status=422)
    return f"{namespace}/{name}{SUFFIX}"


def parse_selector(text: str) -> Selector:
    """Parse a simple label selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated."""
    requirements = []
    for part in (p for p in text.split(",") if p.strip()):
        found = _REQUIREMENT.fullmatch(part)
        if found is None:
            raise PermanentSubmitError(f"unsupported label selector: {part!r}", status=400)
        if found["absent"]:
            requirements.append((found["absent"], "absent", ""))
        elif found["op"]:
            requirements.append(
                (found["key"], "!=" if found["op"] == "!=" else "=", found["value"])
            )
        else:
            requirements.append((found["key"], "exists", ""))
    return tuple(requirements)


def matches(selector: Selector, labels: Mapping[str, Any]) -> bool:
    """Whether the labels satisfy every requirement."""
    for key, op, value in selector:
        present = key in labels
        if (
            (op == "exists" and not present)
            or (op == "absent" and present)
            or (op == "=" and labels.get(key) != value)
            or (op == "!=" and present and labels[key] == value)
        ):
            return False
    return True


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def finished_patch(
    workflow: Mapping[str, Any],
    phase: str,
    *,
    now: datetime,
    outputs: Mapping[str, str] | None = None,
    message: str = "",
) -> dict[str, Any]:
    """The merge patch that ends `workflow` in `phase` as Argo's controller would."""
    if phase not in FINAL_PHASES:
        raise PermanentSubmitError(
            f"phase {phase!r} is not one of {', '.join(sorted(FINAL_PHASES))}", status=422
        )
    meta = workflow.get("metadata") or {}
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status: dict[str, Any] = {
        "phase": phase,
        "startedAt": (workflow.get("status") or {}).get("startedAt")
        or meta.get("creationTimestamp")
        or stamp,
        "finishedAt": stamp,
    }
    if message:
        status["message"] = message
    if outputs:
        status["outputs"] = {"parameters": [{"name": k, "value": v} for k, v in outputs.items()]}
    labels = {LABEL_COMPLETED: "true", LABEL_PHASE: phase}
    patch: dict[str, Any] = {"metadata": {"labels": labels}, "status": status}
    if not meta.get("uid"):
        patch["metadata"]["uid"] = str(uuid.uuid4())
    return patch


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temporary(directory: Path, name: str, text: str) -> str:
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(temporary)
        raise
    return temporary


def _replace(path: Path, text: str) -> None:
    temporary = _write_temporary(path.parent, path.name, text)
    try:
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _load(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    loaded = yaml.load(text, Loader=Loader)
    return loaded if isinstance(loaded, dict) else None


def _scan(directory: Path, selector: Selector) -> list[dict[str, Any]]:
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        workflow = _load(path)
        if workflow is not None and matches(
            selector, (workflow.get("metadata") or {}).get("labels") or {}
        ):
            found.append(workflow)
    return found


def _probe(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".check.", suffix=".tmp", dir=directory)
    os.close(fd)
    os.unlink(temporary)


class LocalSink:
    """Writes Workflows as YAML manifests under a directory, once per name."""

    kind = "local"
    target = "local-sink"

    def __init__(
        self, directory: str | os.PathLike[str], *, observer: StorageObserver | None = None
    ) -> None:
        self.directory = Path(directory)
        self.observer = observer
        self._rewrites = asyncio.Lock()  # patches read, modify and write one file
        self._writer = GroupWriter(self.directory)  # creates: one request, one sync per batch

    def path(self, namespace: str, name: str) -> Path:
        """Where the manifest of a Workflow lives; the names are checked to stay inside."""
        return self.directory / _relative(namespace, name)

    def _prepare(self, workflow: Mapping[str, Any]) -> tuple[Created, str, dict[str, Any]]:
        meta = workflow.get("metadata") or {}
        name, namespace = identity(workflow)
        relative = _relative(namespace, name)
        body = dict(workflow)
        body["metadata"] = {k: v for k, v in meta.items() if k != "generateName"}
        return Created(name=name, namespace=namespace), relative, body

    async def create(self, workflow: Mapping[str, Any]) -> Created:
        """Write the manifest; AlreadyExists when the name is taken."""
        return await create_one(self, workflow)

    async def create_many(
        self, workflows: Sequence[Mapping[str, Any]]
    ) -> list[Created | Exception]:
        """Write several manifests in one request and one sync: per Workflow, in order,
        Created or the error `create` would raise (AlreadyExists, Temporary-, Permanent-)."""
        results: list[Created | Exception | None] = [None] * len(workflows)
        writes: list[tuple[str, dict[str, Any]]] = []
        places: list[tuple[int, Created]] = []
        for index, workflow in enumerate(workflows):
            try:
                created, relative, body = self._prepare(workflow)
            except PermanentSubmitError as exc:
                results[index] = exc
                continue
            writes.append((relative, body))
            places.append((index, created))
        try:
            answers = await self._writer.write_many(writes) if writes else []
        except OSError as exc:  # the writer process failed the whole request
            answers = [exc] * len(writes)
        for (index, created), (relative, _), answer in zip(places, writes, answers, strict=True):
            if answer is True:
                results[index] = created
                continue
            path = self.directory / relative
            if isinstance(answer, Existing):
                existing = {"metadata": answer.metadata}
                results[index] = conflict(existing, workflows[index], str(path))
            elif isinstance(answer, InvalidDocument):
                results[index] = PermanentSubmitError(f"write {path}: {answer}", status=422)
            elif isinstance(answer, OSError) and answer.errno:  # the disk said no
                error = report(storage_error(self.target, str(path), answer), self.observer)
                error.__cause__ = answer
                results[index] = error
            else:  # the writer process failed the request
                failure = TemporarySubmitError(f"write {path}: {answer}")
                failure.__cause__ = answer if isinstance(answer, Exception) else None
                results[index] = failure
        return [r for r in results if r is not None]

    async def get_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored manifest, or None."""
        path = self.path(namespace, name)
        try:
            return await asyncio.to_thread(_load, path)
        except (OSError, yaml.YAMLError) as exc:
            raise TemporarySubmitError(f"read {path}: {exc}") from exc

    async def list_workflows(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """The manifests in the namespace whose labels match a simple selector."""
        selector = parse_selector(label_selector)
        directory = self.path(namespace, "x").parent
        try:
            return await asyncio.to_thread(_scan, directory, selector)
        except (OSError, yaml.YAMLError) as exc:
            raise TemporarySubmitError(f"list {directory}: {exc}") from exc

    async def patch_workflow(
        self, namespace: str, name: str, merge_patch: Mapping[str, Any]
    ) -> None:
        """Apply a JSON merge patch to the stored manifest (atomic rewrite)."""
        path = self.path(namespace, name)
        async with self._rewrites:
            current = await self.get_workflow(namespace, name)
            if current is None:
                raise PermanentSubmitError(f"workflow {namespace}/{name} not found", status=404)
            try:
                text = dump(apply_merge_patch(current, merge_patch))
                await asyncio.to_thread(_replace, path, text)
            except OSError as exc:
                raise TemporarySubmitError(f"write {path}: {exc}") from exc

    async def finish_workflow(
        self,
        namespace: str,
        name: str,
        phase: str,
        *,
        now: datetime,
        outputs: Mapping[str, str] | None = None,
        message: str = "",
    ) -> dict[str, Any]:
        """End a manifest as Argo's controller ends a Workflow (`trigger finish`): the final
        phase, start and finish times, output parameters and message in `status`, the
        `workflows.argoproj.io/completed` and `phase` labels, and a uid if it has none.
        PermanentSubmitError when there is no such manifest or it has finished already."""
        current = await self.get_workflow(namespace, name)
        if current is None:
            raise PermanentSubmitError(f"workflow {namespace}/{name} not found", status=404)
        status = current.get("status") or {}
        if status.get("phase") in FINAL_PHASES:
            raise PermanentSubmitError(
                f"workflow {namespace}/{name} has finished already ({status['phase']})",
                status=409,
            )
        patch = finished_patch(current, phase, now=now, outputs=outputs, message=message)
        await self.patch_workflow(namespace, name, patch)
        return apply_merge_patch(current, patch)  # type: ignore[no-any-return]

    async def stop_workflow(self, namespace: str, name: str) -> None:
        """Mark the manifest stopped (spec.shutdown: Stop), as Argo's stop does."""
        await self.patch_workflow(namespace, name, {"spec": {"shutdown": "Stop"}})

    async def check(self) -> None:
        """Raise TemporarySubmitError unless a file can be created in the directory."""
        try:
            await asyncio.to_thread(_probe, self.directory)
        except OSError as exc:
            raise TemporarySubmitError(f"{self.directory} is not writable: {exc}") from exc

    async def close(self) -> None:
        """Wait for a batch still being written (its creates have all returned)."""
        await self._writer.close()
