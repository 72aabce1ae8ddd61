"""`trigger events` and `trigger why`: a running daemon's decision records, asked over its
HTTP API (trigger.daemon.console), shown as tables on a terminal or as JSON.

The daemon is the one the settings describe (`listen`, a wildcard address asked on
loopback) unless `--server URL` names another; the token of `ui.token_env` /
`ui.token_file`, when set, goes along as `Authorization: Bearer`. Exit codes: 0; 1 when
`why` finds no record of the event; 2 when the daemon cannot be reached or refuses.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TextIO

from trigger.settings import Settings

FOLLOW_EVERY: Final = 1.0  # seconds between two polls of --follow
TIMEOUT: Final = 10.0


class Unreachable(Exception):
    """The daemon could not be asked (printed, exit 2)."""


class NotFound(Exception):
    """No record of the event (printed, exit 1)."""


def server_url(settings: Settings, given: str | None) -> str:
    """The daemon's base URL: `given`, else where the settings say it listens."""
    if given:
        if urllib.parse.urlsplit(given).scheme not in {"http", "https"}:
            raise Unreachable(f"--server {given!r}: expected an http:// or https:// URL")
        return given.rstrip("/")
    host, _, port = settings.listen.rpartition(":")
    host = host.strip("[]")
    if host in {"0.0.0.0", "::", ""}:  # noqa: S104 - reading where the daemon listens
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def token(settings: Settings, environ: Mapping[str, str]) -> str | None:
    ui = settings.ui
    if ui.token_file:
        try:
            return Path(ui.token_file).read_text().strip() or None
        except OSError as exc:
            raise Unreachable(f"cannot read ui.token_file: {exc}") from exc
    return environ.get(ui.token_env) if ui.token_env else None


def fetch(base: str, path: str, bearer: str | None) -> Any:
    """GET base+path as JSON; NotFound for 404, Unreachable for anything else amiss."""
    # `base` is http(s): server_url checked it.
    request = urllib.request.Request(base + path, headers={"Accept": "application/json"})  # noqa: S310
    if bearer:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310 - the user's URL
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace").strip()
        if exc.code == 404:
            raise NotFound(text) from exc
        raise Unreachable(f"{base} answered {exc.code}: {text}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unreachable(f"cannot reach the daemon at {base}: {exc}") from exc


def events(
    settings: Settings,
    *,
    server: str | None,
    rule: str | None,
    outcome: str | None,
    source: str | None,
    limit: int,
    follow: bool,
    output: str,
    out: TextIO = sys.stdout,
) -> int:
    """`trigger events`: the newest records (oldest first), then new ones with --follow."""
    base, bearer = server_url(settings, server), token(settings, os.environ)
    query = {k: v for k, v in {"rule": rule, "outcome": outcome, "source": source}.items() if v}
    as_json = _json_output(output, out)
    after = 0
    first = True
    while True:
        params = {**query, "limit": str(limit), "after": str(after)}
        found = fetch(base, "/api/events?" + urllib.parse.urlencode(params), bearer)
        after = found["last"]
        _print_events(found["events"], as_json, out, header=first)
        first = False
        if not follow:
            return 0
        out.flush()
        time.sleep(FOLLOW_EVERY)  # polling interval of --follow


def why(settings: Settings, event_id: str, *, server: str | None, output: str,
        out: TextIO = sys.stdout) -> int:  # fmt: skip
    """`trigger why EVENT_ID`: the record of the event, each rule's outcome and, for a
    filtered rule, the check that failed."""
    base, bearer = server_url(settings, server), token(settings, os.environ)
    found = fetch(base, "/api/events/" + urllib.parse.quote(event_id, safe=""), bearer)
    if _json_output(output, out):
        print(json.dumps(found), file=out)
        return 0
    print(f"event {found['id']} ({found['source']}, {found['type']}) at {found['time']}", file=out)
    if found.get("clipped"):
        print("  (the event was large: the checks ran on a clipped copy)", file=out)
    for entry in found["rules"]:
        detail = f": {entry['detail']}" if entry.get("detail") else ""
        print(f"  rule {entry['rule']}: {entry['outcome']}{detail}", file=out)
        for step in entry.get("steps", []):
            mark = "ok  " if step["ok"] else "FAIL"
            print(f"    {mark} {step['check']}: {step['detail']}", file=out)
            for miss in step.get("misses", []):
                print(f"         {miss}", file=out)
    for group in found.get("otherRuleReasons", []):
        print(f"  not for this event: {group['reason']}: {', '.join(group['rules'])}", file=out)
    if not found["rules"] and not found.get("otherRuleReasons"):
        print("  no rule is loaded for it", file=out)
    return 0


def _json_output(output: str, out: TextIO) -> bool:
    return output == "json" or (output == "auto" and not out.isatty())


def _print_events(
    found: Sequence[Mapping[str, Any]], as_json: bool, out: TextIO, *, header: bool
) -> None:
    if as_json:
        for record in found:
            print(json.dumps(record), file=out)
        return
    rows = [(r["at"], r["source"], r["id"], _outcomes(r)) for r in found]
    if header:
        rows.insert(0, ("TIME", "SOURCE", "EVENT", "RULES"))
    _table(rows, out)


def _outcomes(record: Mapping[str, Any]) -> str:
    parts = [
        f"{e['rule']}={e['outcome']}" + (f" ({e['detail']})" if e.get("detail") else "")
        for e in record["rules"]
    ]
    if record.get("otherRules"):
        parts.append(f"+{record['otherRules']} not for it")
    return "; ".join(parts) or "-"


def _table(rows: Iterable[Sequence[str]], out: TextIO) -> None:
    rows = list(rows)
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]), file=out)
