"""The stdout sink: a dry run that prints each Workflow instead of creating it.

YAML documents (each opened with `---`) or JSON lines. It remembers the names it printed
in this process — the most recent 10,000 — and answers a repeat with `AlreadyExists`, so
a dry run shows the de-duplication a real backend would do (a name printed for another
rule or idempotency key is `NameTaken`, as a real backend would show a collision).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, TextIO

from trigger.errors import AlreadyExists, NameTaken, PermanentSubmitError, TemporarySubmitError
from trigger.submit.base import Created, create_one, identity, origin
from trigger.submit.local import dump

Format = Literal["yaml", "json"]
REMEMBER: Final = 10_000  # enough for redeliveries; keeps a long dry run flat in memory


def _yaml(workflow: Mapping[str, Any]) -> str:
    return "---\n" + dump(workflow)


def _json(workflow: Mapping[str, Any]) -> str:
    return json.dumps(workflow, ensure_ascii=False, separators=(",", ":")) + "\n"


_RENDERERS: Final[Mapping[str, Callable[[Mapping[str, Any]], str]]] = {"yaml": _yaml, "json": _json}


class StdoutSink:
    """Prints Workflows; a name printed before is AlreadyExists."""

    kind = "stdout"

    def __init__(
        self, stream: TextIO | None = None, format: Format = "yaml", *, remember: int = REMEMBER
    ) -> None:
        if format not in _RENDERERS:
            raise ValueError(f"unknown format {format!r}: expected yaml or json")
        self.stream = stream if stream is not None else sys.stdout
        self.format = format
        self._render = _RENDERERS[format]
        self._remember = remember
        self._printed: OrderedDict[tuple[str, str], tuple[Any, Any]] = OrderedDict()
        # Whole documents, in the order they were created; concurrent creates share one
        # write (one thread hop) instead of queueing for one each.
        self._pending: list[tuple[str, asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def create(self, workflow: Mapping[str, Any]) -> Created:
        """Print the Workflow, unless its name was printed before."""
        return await create_one(self, workflow)

    async def create_many(
        self, workflows: Sequence[Mapping[str, Any]]
    ) -> list[Created | Exception]:
        """Print several Workflows in one write: per Workflow, in order, Created or the
        error `create` would raise."""
        results: list[Created | Exception] = []
        claimed: list[tuple[str, str]] = []
        texts: list[str] = []
        for workflow in workflows:
            try:
                name, namespace = identity(workflow)
            except PermanentSubmitError as exc:
                results.append(exc)
                continue
            key = (namespace, name)
            printed = self._printed.get(key)
            if printed is not None:
                self._printed.move_to_end(key)
                if printed == origin(workflow):
                    results.append(AlreadyExists(f"{namespace}/{name} was printed before"))
                else:
                    rule, key = printed
                    what = f"{namespace}/{name} was printed for rule {rule!r}, key {key!r}"
                    results.append(NameTaken(what))
                continue
            self._printed[key] = origin(workflow)  # claimed before the write: a twin sees it
            if len(self._printed) > self._remember:
                self._printed.popitem(last=False)
            claimed.append(key)
            texts.append(self._render(workflow))
            results.append(Created(name=name, namespace=namespace))
        if texts:
            try:
                await self._write("".join(texts))
            except (OSError, ValueError) as exc:  # a closed stream raises ValueError
                for key in claimed:
                    self._printed.pop(key, None)
                error = TemporarySubmitError(f"stdout: {exc}")
                error.__cause__ = exc
                results = [error if isinstance(r, Created) else r for r in results]
        return results

    async def _write(self, text: str) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush(), name="stdout-sink-writer")
        await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._write_now, "".join(text for text, _ in batch))
            except (OSError, ValueError) as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except BaseException:  # cancelled: nobody may wait for ever
                for _, future in batch:
                    if not future.done():
                        future.set_exception(OSError("stdout writer stopped"))
                raise
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    def _write_now(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    async def check(self) -> None:
        """The stream must still be open."""
        if self.stream.closed:
            raise TemporarySubmitError("stdout is closed")

    async def close(self) -> None:
        """Flush; the stream belongs to the caller and stays open."""
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        if not self.stream.closed:
            await asyncio.to_thread(self.stream.flush)
