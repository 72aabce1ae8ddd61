"""The status page at `/` and the JSON API under `/api/` (DESIGN §8): read-only views of
the rules, the decision records and the dead letters.

`GET /api/events?rule=&outcome=&source=&limit=&after=` lists decision records (oldest
first; `after` is a record's `seq`, for following), `GET /api/events/ID` is one record
with the explain tree of each filtered rule (computed then), `GET /api/rules` the rules
with their verdicts, counters and next cron fire times, `GET /api/gates` the open gates
(read from the state store through the GateKeeper, bounded in rows and time). The page
renders the same data with Jinja2 (autoescaped: what came from an event shows as text),
styled inline, and reloads itself every `ui.refresh` seconds.

Who may look: without a token (`ui.token_env` / `ui.token_file`) only clients on a
loopback address; with one, any client that sends it — `Authorization: Bearer TOKEN`, or
the cookie the login form at `/login` sets — and no other, loopback included.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from trigger.clock import Clock
from trigger.core.decisions import OTHER_SOURCE, Decision, Outcome, explain
from trigger.core.pipeline import Pipeline, RuleStatus
from trigger.daemon.http import Health
from trigger.events import format_time
from trigger.rules.cronmath import next_fire_times
from trigger.rules.router import RuleSet
from trigger.rules.schedules import compile_timezone
from trigger.settings import Settings
from trigger.submit.transport import TokenFile

COOKIE: Final = "trigger_ui"
MAX_LIMIT: Final = 1000
NEXT_FIRES: Final = 3  # next fire times shown per cron rule
DEAD_LETTER_TAIL: Final = 64 * 1024  # bytes of the dead-letter file read for the newest
OUTCOMES: Final = (*(str(o) for o in Outcome), OTHER_SOURCE)
GATE_ROWS: Final = 50  # open gates shown per gate rule (page and /api/gates)
GATES_TIMEOUT: Final = 5.0  # seconds the page and /api/gates wait for the state store

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Panel:
    """A section another part adds to the page (a table: title, column names, rows) —
    how gates and queues show themselves; none is shown when none is registered."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]


@dataclass
class Console:
    """What the page and the API read: the pipeline (rules, counters, decisions) and the
    daemon's `Health` (verdicts, leader, the last reload), both kept current by the daemon."""

    pipeline: Pipeline
    settings: Settings
    clock: Clock
    health: Health
    panels: list[Callable[[], Panel]] = field(default_factory=list)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _token_file: TokenFile | None = None

    def __post_init__(self) -> None:
        if self.settings.ui.token_file:
            self._token_file = TokenFile(self.settings.ui.token_file, clock=self.clock)
        self._pages = jinja2.Environment(
            loader=jinja2.PackageLoader("trigger.daemon", "templates"),
            autoescape=True,
        )
        self._pages.filters["q"] = lambda value: quote(str(value), safe="")
        self._pages.filters["pretty"] = lambda value: json.dumps(
            value, indent=2, ensure_ascii=False, default=str
        )

    async def token(self) -> str | None:
        """The configured token, or None: then only loopback clients are served."""
        ui = self.settings.ui
        if self._token_file is not None:
            return await self._token_file.read()
        if ui.token_env:
            return self.environ.get(ui.token_env) or None
        return None

    def routes(self) -> list[web.RouteDef]:
        guard = self._guarded
        return [
            web.get("/", guard(self._page)),
            web.get("/events/{id:.+}", guard(self._detail_page)),
            web.get("/api/events", guard(self._events)),
            web.get("/api/events/{id:.+}", guard(self._event)),
            web.get("/api/rules", guard(self._rules)),
            web.get("/api/gates", guard(self._gates)),
            web.get("/login", self._login_form),
            web.post("/login", self._login),
        ]

    # --- who may look ------------------------------------------------------------------

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            token = await self.token()
            if token is None:
                if not _loopback(request.remote):
                    raise web.HTTPForbidden(
                        text="the status page and API are served on loopback only; "
                        "configure ui.token_env or ui.token_file to open them to others\n"
                    )
            elif not _presents(request, token):
                if request.path.startswith("/api/"):
                    raise web.HTTPUnauthorized(
                        text="send Authorization: Bearer TOKEN (ui.token_env/ui.token_file)\n",
                        headers={"WWW-Authenticate": 'Bearer realm="trigger"'},
                    )
                raise web.HTTPSeeOther("/login")
            return await handler(request)

        return guarded

    async def _login_form(self, request: web.Request) -> web.StreamResponse:
        return self._html("login.html", failed=False)

    async def _login(self, request: web.Request) -> web.StreamResponse:
        token = await self.token()
        form = await request.post()
        given = str(form.get("token", ""))
        if token is None or not hmac.compare_digest(given.encode(), token.encode()):
            response = self._html("login.html", failed=True)
            response.set_status(401)
            return response
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, _cookie(token), httponly=True, samesite="Strict")
        return response

    # --- the API -----------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        found = self._select(request.query)
        last = found[-1].seq if found else int(request.query.get("after", "0") or 0)
        return web.json_response({"events": [d.summary() for d in found], "last": last})

    async def _event(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._explained(request.match_info["id"]))

    async def _rules(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"rules": self.rules_view()})

    async def _gates(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"gates": await self.gates_view()})

    async def gates_view(self) -> list[dict[str, Any]]:
        """Per gate rule, its open gates (`GateKeeper.open_gates`); none before the state
        store is open. Every replica shows them: they are read from the state store, which
        the replicas share (a follower records its members' events there too)."""
        keeper = self.pipeline.gates
        if keeper is None:
            return []
        return await keeper.open_gates(self.pipeline.rules, limit=GATE_ROWS, within=GATES_TIMEOUT)

    def _select(self, query: Mapping[str, str]) -> list[Decision]:
        try:
            limit = min(int(query.get("limit", "100")), MAX_LIMIT)
            after = int(query.get("after", "0") or 0)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"limit and after are numbers: {exc}\n") from exc
        outcome = query.get("outcome") or None
        if outcome is not None and outcome not in OUTCOMES:
            raise web.HTTPBadRequest(text=f"outcome is one of {', '.join(OUTCOMES)}\n")
        return self.pipeline.decisions.select(
            rule=query.get("rule") or None,
            outcome=outcome,
            source=query.get("source") or None,
            after=after,
            limit=max(limit, 1),
        )

    def _explained(self, event_id: str) -> dict[str, Any]:
        decision = self.pipeline.decisions.find(event_id)
        if decision is None:
            raise web.HTTPNotFound(
                text=f"no decision record for event {event_id!r} (the ring keeps the last "
                f"{self.pipeline.decisions.size})\n"
            )
        return explain(self.pipeline.rules, decision)

    def rules_view(self) -> list[dict[str, Any]]:
        """Every loaded rule: source, verdict and why, counters, next cron fire times."""
        rules: RuleSet = self.pipeline.rules
        now = self.clock.now()
        found = []
        for rule in rules.rules:
            verdicts = self.health.verdicts
            verdict = verdicts.of(rule.name) if verdicts is not None else None
            entry: dict[str, Any] = {
                "name": rule.name,
                "source": rule.kind,
                "file": rule.file,
                "namespace": rule.document.spec.workflow.namespace,
                "verdict": verdict.state if verdict else "active",
                "reason": verdict.reason if verdict else None,
                **self.pipeline.status.get(rule.name, RuleStatus()).as_dict(),
            }
            if rule.kind == "cron":
                tz = compile_timezone(rule.cron.timezone)
                fires = next_fire_times(rule.schedules, tz, now, NEXT_FIRES)
                entry["nextFires"] = [moment.isoformat() for moment in fires]
            found.append(entry)
        return found

    # --- the page ----------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        decisions = self._select({**query, "limit": query.get("limit", "50")})
        decisions.reverse()  # newest first on the page
        dead = await asyncio.to_thread(_newest_dead_letter, self.settings.dead_letter)
        return self._html(
            "status.html",
            rules=self.rules_view(),
            decisions=[d.summary() for d in decisions],
            rule_filter=query.get("rule", ""),
            outcome_filter=query.get("outcome", ""),
            outcomes=OUTCOMES,
            namespaces=self._namespaces(),
            dead=dead,
            dead_count=sum(s.dead_letters for s in self.pipeline.status.values()),
            replay=_replay_command(self.settings),
            panels=[
                *(p for p in [await self._queues_panel(), await self._gates_panel()] if p),
                *(p() for p in self.panels),
            ],
            **self._common(),
        )

    async def _queues_panel(self) -> Panel | None:
        """The declared queues: limit, namespaces, Workflows running and waiting (as
        `/status` and `trigger queues` count them), and the queue keeper's problems."""
        if self.health.queues is None:
            return None
        queues = await self.health.queues()
        if not queues:
            return None

        def count(value: Any) -> str:
            return "?" if value is None else str(value)

        rows: list[tuple[str, ...]] = [
            (
                name,
                str(q["limit"]),
                ", ".join(q.get("namespaces") or []),
                count(q.get("running")),
                count(q.get("waiting")),
                "; ".join([*q.get("problems", []), *([q["note"]] if q.get("note") else [])]),
            )
            for name, q in queues.items()
        ]
        columns = ("queue", "limit", "namespaces", "running", "waiting", "notes")
        return Panel("Queues", columns, rows)

    async def _gates_panel(self) -> Panel | None:
        """The open gates, one row per gate key; a row per rule says what was not shown
        (keys past GATE_ROWS, a store that did not answer). None without gate rules."""
        rules = await self.gates_view()
        if not rules:
            return None
        rows: list[tuple[str, ...]] = []
        for entry in rules:
            for gate in entry["gates"]:
                have = ", ".join(f"{m} {n['have']}/{n['need']}" for m, n in gate["members"].items())
                lacking = ", ".join(f"{m} ({n})" for m, n in gate["missing"].items())
                row = (gate["key"], gate["firstEvent"], gate["opened"], gate["deadline"])
                rows.append((entry["rule"], *row, have, lacking))
            notes = [entry["error"]] if entry["error"] else []
            if entry["unread"]:
                notes.append(f"{entry['unread']} more gate keys not shown (open or just closed)")
            if not entry["gates"] or notes:
                rows.append((entry["rule"], "", "", "", "", "", "; ".join(notes) or "none open"))
        columns = ("gate rule", "key", "first event", "opened", "deadline", "members", "missing")
        return Panel("Open gates", columns, rows)

    async def _detail_page(self, request: web.Request) -> web.StreamResponse:
        found = self._explained(request.match_info["id"])
        return self._html(
            "event.html", record=found, namespaces=self._namespaces(), **self._common()
        )

    def _namespaces(self) -> dict[str, str]:
        """Where each rule's Workflows are: the Argo UI's links need it."""
        return {r.name: r.document.spec.workflow.namespace for r in self.pipeline.rules.rules}

    def _common(self) -> dict[str, Any]:
        ui = self.settings.ui
        return {
            "refresh": int(ui.refresh),
            "argo_url": (ui.argo_url or "").rstrip("/"),
            "leader": self.health.leader,
            "loaded_at": format_time(loaded) if (loaded := self.health.loaded_at) else None,
            "reload_error": self.health.reload_error,
            "template_problems": self.health.template_problems,
            "now": format_time(self.clock.now()),
            "urlencode": urlencode,
        }

    def _html(self, name: str, **context: Any) -> web.Response:
        text = self._pages.get_template(name).render(**context)
        return web.Response(text=text, content_type="text/html", charset="utf-8")


def _loopback(remote: str | None) -> bool:
    if remote is None:  # a Unix socket: the same host
        return True
    try:
        return ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        return False


def _cookie(token: str) -> str:
    """What the login cookie holds: a MAC of the token, not the token itself."""
    return hmac.new(token.encode(), b"trigger-ui-session", hashlib.sha256).hexdigest()


def _presents(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), _cookie(token).encode())


def _replay_command(settings: Settings) -> str:
    path = settings.dead_letter.removeprefix("file:")
    return f"trigger replay {path}"


def _newest_dead_letter(spec: str) -> str | None:
    """The last line of the dead-letter file (blocking: run in a thread), or None."""
    path = Path(spec.removeprefix("file:"))
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - DEAD_LETTER_TAIL))
            lines = handle.read().splitlines()
    except OSError:
        return None
    return lines[-1].decode("utf-8", "replace")[:2000] if lines else None
