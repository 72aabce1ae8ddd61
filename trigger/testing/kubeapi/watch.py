"""The watch verb: a chunked stream of events from the store to one client.

A watch starts with the current objects (no resourceVersion) or the history after a
resourceVersion, then follows live changes until `timeoutSeconds`, the client leaves, or
the emulator stops. An idle stream sends BOOKMARKs when the client allows them; a version
compacted away is reported the way the real server does, as an ERROR event with a 410
Status on an open stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Final

from aiohttp import web

from trigger.testing.kubeapi.errors import ApiStatusError
from trigger.testing.kubeapi.resources import JSON
from trigger.testing.kubeapi.store import Change, Store, Watcher

TRUE: Final = frozenset({"1", "t", "T", "true", "True", "TRUE"})  # Go's strconv.ParseBool


async def watch(
    request: web.Request, store: Store, watcher: Watcher, *, bookmark_interval: float
) -> web.StreamResponse:
    """Answer a `watch=true` list: stream the watcher's events until the watch ends."""
    query = request.query
    try:
        timeout = float(query["timeoutSeconds"]) if "timeoutSeconds" in query else None
    except ValueError:
        raise ApiStatusError(400, "invalid timeoutSeconds") from None
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    try:
        initial = store.subscribe(watcher, query.get("resourceVersion"))
    except ApiStatusError as err:
        if err.code != 410:
            raise
        # The real server opens the stream and reports an expired version as an event.
        await response.prepare(request)
        await _write_event(response, "ERROR", err.status)
        return await _finish(response)
    bookmarks = query.get("allowWatchBookmarks", "") in TRUE
    try:
        await response.prepare(request)
        async with asyncio.timeout(timeout):
            await _stream(
                request,
                response,
                watcher,
                initial,
                store=store,
                bookmarks=bookmarks,
                bookmark_interval=bookmark_interval,
            )
    except (TimeoutError, ConnectionResetError):
        pass  # timeoutSeconds elapsed, or the client went away
    finally:
        store.unsubscribe(watcher)
    return await _finish(response)


async def _stream(
    request: web.Request,
    response: web.StreamResponse,
    watcher: Watcher,
    initial: list[Change],
    *,
    store: Store,
    bookmarks: bool,
    bookmark_interval: float,
) -> None:
    for replayed in initial:
        await _send(response, watcher, replayed)
    while True:
        change: Change | None
        try:
            async with asyncio.timeout(bookmark_interval):
                change = await watcher.queue.get()
        except TimeoutError:
            if request.transport is None or request.transport.is_closing():
                return
            if bookmarks:
                meta = {"resourceVersion": store.resource_version}
                bookmark = {
                    "kind": watcher.rtype.kind,
                    "apiVersion": watcher.rtype.api_version,
                    "metadata": meta,
                }
                await _write_event(response, "BOOKMARK", bookmark)
            continue
        if change is None:
            return
        await _send(response, watcher, change)


async def _send(response: web.StreamResponse, watcher: Watcher, change: Change) -> None:
    event = watcher.translate(change)
    if event is not None:
        await _write_event(response, *event)


async def _write_event(response: web.StreamResponse, event: str, obj: JSON) -> None:
    line = json.dumps({"type": event, "object": obj}, separators=(",", ":")) + "\n"
    await response.write(line.encode())


async def _finish(response: web.StreamResponse) -> web.StreamResponse:
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response
