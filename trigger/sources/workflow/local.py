"""Finished Workflows from the local sink's directory: the embedded default, with no cluster.

No Argo controller runs there, so nothing finishes a manifest by itself: `trigger finish
NAME --phase Succeeded [-p NAME=VALUE]` writes the final status into it as Argo's
controller would (the local sink's `finish_workflow`). This feed finds those manifests by
polling the directory every `interval` seconds; a manifest's modification time (ns) plays
the resourceVersion: a watch from version V yields every manifest changed at or after V,
oldest first, and the source's watermark stores the newest it handled. A manifest changed
within the same nanosecond as the watermark may be handed over twice; its Workflow names
make that harmless. Reading runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import yaml

from trigger.decoders.workflow import LABEL_COMPLETED
from trigger.errors import SourceError
from trigger.sources.workflow.feed import Change

try:  # libyaml is an order of magnitude faster when it is there
    from yaml import CSafeLoader as Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as Loader  # type: ignore[assignment]

SUFFIX: Final = ".yaml"
Found = tuple[int, str, dict[str, Any]]  # (mtime_ns, path, manifest)


def _files(root: Path, namespace: str | None) -> list[Path]:
    if namespace is not None:
        return sorted((root / namespace).glob(f"*{SUFFIX}"))
    return sorted(root.glob(f"*/*{SUFFIX}"))


def _scan(root: Path, namespace: str | None, since: int) -> tuple[list[Found], int]:
    """The finished manifests changed at or after `since` (oldest first), and the newest
    modification time seen among all manifests."""
    newest = since
    found: list[Found] = []
    for path in _files(root, namespace):
        try:
            stamp = path.stat().st_mtime_ns
            if stamp < since:
                continue
            newest = max(newest, stamp)
            manifest = yaml.load(path.read_text(encoding="utf-8"), Loader=Loader)
        except FileNotFoundError:
            continue  # removed meanwhile
        except yaml.YAMLError:
            continue  # half a manifest written by hand: seen again once it is whole
        labels = ((manifest or {}).get("metadata") or {}).get("labels") or {}
        if isinstance(manifest, dict) and labels.get(LABEL_COMPLETED) == "true":
            found.append((stamp, str(path), manifest))
    found.sort(key=lambda item: (item[0], item[1]))
    return found, newest


class LocalFeed:
    """The feed over a directory of manifests (`<dir>/<namespace>/<name>.yaml`)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        interval: float = 1.0,
        watch_timeout: float = 300.0,
    ) -> None:
        self._root = Path(directory)
        self._sleep, self._interval, self._timeout = sleep, interval, watch_timeout

    async def list_finished(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        found, newest = await self._scan(namespace, 0)
        return [manifest for _, _, manifest in found], str(newest)

    async def watch(self, namespace: str | None, version: str) -> AsyncIterator[Change]:
        since = int(version or 0)
        handed: set[str] = set()  # manifests already yielded at exactly `since`
        for _ in range(max(1, int(self._timeout / self._interval))):
            found, _ = await self._scan(namespace, since)
            for stamp, path, manifest in found:
                if stamp == since and path in handed:
                    continue
                if stamp > since:
                    since, handed = stamp, set()
                handed.add(path)
                yield Change("MODIFIED", manifest, str(stamp))
            await self._sleep(self._interval)

    async def _scan(self, namespace: str | None, since: int) -> tuple[list[Found], int]:
        try:
            return await asyncio.to_thread(_scan, self._root, namespace, since)
        except OSError as exc:
            raise SourceError(f"read {self._root}: {exc}") from exc
