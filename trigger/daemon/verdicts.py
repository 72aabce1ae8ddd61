"""One verdict per rule — active, idle or invalid — and why, decided in this one place.

`trigger validate`, the daemon's start log, /readyz and /status all show what `judge`
returns, so they cannot disagree. A rule is

- *invalid* when its file does not load (the loader's `file:line:column` problems): the
  daemon never runs it — exit 1 at start, a reload with it is refused;
- *idle* when it loads but cannot receive events with the settings and environment at
  hand: its Kafka cluster is not configured, its webhook secret or polling credentials
  cannot be read, it would take unauthenticated deliveries beyond loopback, no OSS push
  receiver takes deliveries, or its cron concurrencyPolicy needs a sink that can list
  Workflows and the configured one cannot, or it takes finished Workflows and the sink cannot
  watch them. Idle rules are routed (`trigger match` and the
  receivers see them) but their sources do not consume for them. They are warnings — or,
  in strict mode (`strict: true`, `--strict`), errors, and then the rule set is treated as
  invalid;
- *active* otherwise.

A gate rule is routed as one rule per member (`RULE.MEMBER`), and each member has its own
verdict (an idle member's source does not consume for it). Everything that shows rules to
a user — `validate`, the start log, /readyz, /status — shows the gate rule once: idle when
some member is idle, since the gate cannot complete then, with the member and its reason.

The security choices are made here too, each on its own facts: a receiver with nothing
to check (EventBridge with neither a token nor signature verification, MNS with signature
verification off, a webhook path without `auth`) takes unauthenticated deliveries only
while `listen` is a loopback address, with a warning at start; on any other address it
refuses every delivery, with an error at start (`endpoints`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Final, Literal

from trigger.errors import Problem, RuleError
from trigger.events import SourceKind
from trigger.rules.loader import load_rules
from trigger.rules.router import RuleSet
from trigger.rules.rule import Rule
from trigger.settings import Settings
from trigger.sources.cron import concurrency_problem
from trigger.sources.kafka.config import cluster_problem
from trigger.sources.oss.push import PushAuth
from trigger.sources.webhook import PathAuth, resolve_auth
from trigger.sources.workflow.checks import sink_problem
from trigger.submit.sinks import sink_type
from trigger.submit.templates import TemplateProblem, locate
from trigger.submit.templates.validation import Documents

State = Literal["active", "idle", "invalid"]


@dataclass(frozen=True)
class Verdict:
    """A rule's state and, unless active, why; `where` is the `file:line:column` of the
    field the reason is about."""

    state: State
    reason: str | None = None
    where: str = ""


ACTIVE: Final = Verdict("active")


def loopback_only(listen: str) -> bool:
    """True when `HOST:PORT` binds a loopback address only (not 0.0.0.0, not a routable one)."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Facts:
    """What verdicts are decided on, read once per load: settings, environment, and the
    receivers' authentication with its secrets."""

    settings: Settings
    environ: Mapping[str, str]
    push: PushAuth
    webhooks: Mapping[str, PathAuth]
    sink: type  # the configured sink's class: what it can do


Check = Callable[[Rule, Facts], tuple[str, str] | None]  # -> (field under spec, reason)


def _kafka(rule: Rule, facts: Facts) -> tuple[str, str] | None:
    problem = cluster_problem(rule, facts.settings)
    return None if problem is None else ("source.kafka.cluster", problem)


def _webhook(rule: Rule, facts: Facts) -> tuple[str, str] | None:
    problem = facts.webhooks[rule.webhook.path].problem
    field = "source.webhook.auth" if rule.webhook.auth is not None else "source.webhook"
    return None if problem is None else (field, problem)


def _oss(rule: Rule, facts: Facts) -> tuple[str, str] | None:
    poll = rule.oss.poll
    if poll is not None:
        from trigger.sources.oss.poll import credentials_problem  # oss2: only when polling

        problem = credentials_problem(poll.credentials, facts.environ)
        return None if problem is None else ("source.oss.poll.credentials", problem)
    eventbridge = facts.push.eventbridge.refuses_everything
    mns = facts.push.mns.refuses_everything
    if eventbridge and mns:
        reason = f"no OSS push receiver takes deliveries: EventBridge: {eventbridge}; MNS: {mns}"
        return ("source.oss", reason)
    return None


def _cron(rule: Rule, facts: Facts) -> tuple[str, str] | None:
    problem = concurrency_problem(rule, facts.sink)
    return None if problem is None else ("source.cron.concurrencyPolicy", problem)


def _workflow(rule: Rule, facts: Facts) -> tuple[str, str] | None:
    problem = sink_problem(facts.sink)
    return None if problem is None else ("source.workflow", problem)


# One line per kind of source: what makes its rules idle.
CHECKS: Final[Mapping[SourceKind, Check]] = {
    "oss": _oss,
    "kafka": _kafka,
    "cron": _cron,
    "webhook": _webhook,
    "workflow": _workflow,
}


@dataclass(frozen=True)
class Verdicts:
    """Every loaded rule's verdict, the active rules, and the authentication the webhook
    receiver uses (judged together, so a 401 and an idle verdict have one cause)."""

    rules: RuleSet
    by_rule: Mapping[str, Verdict]  # per routed rule: a gate's members one by one
    active: RuleSet
    webhooks: Mapping[str, PathAuth]

    def of(self, name: str) -> Verdict:
        """The verdict of a routed rule or, by its name, of a gate rule as a whole."""
        return self.shown.get(name) or self.by_rule.get(name, ACTIVE)

    @cached_property
    def shown(self) -> dict[str, Verdict]:
        """Each rule as the user wrote it (a gate once, see the module docstring)."""
        found = {}
        for name in self.rules.written:
            members = self.rules.gates.get(name)
            found[name] = self.by_rule.get(name, ACTIVE) if members is None else self._gate(members)
        return found

    def _gate(self, members: tuple[Rule, ...]) -> Verdict:
        idle = [(m, self.by_rule[m.name]) for m in members if self.by_rule[m.name].state == "idle"]
        if not idle:
            return ACTIVE
        why = "; ".join(
            f"member {m.gate.member if m.gate else m.name} is idle: {v.reason}" for m, v in idle
        )
        return Verdict("idle", f"the gate cannot complete: {why}", idle[0][1].where)

    @property
    def active_count(self) -> int:
        """How many rules (a gate once) are active."""
        return sum(v.state == "active" for v in self.shown.values())

    @property
    def idle(self) -> dict[str, str]:
        """Idle rules (a gate once) and why, in load order."""
        return {n: v.reason or "" for n, v in self.shown.items() if v.state == "idle"}

    def problems(self, *, strict: bool) -> list[Problem]:
        """One `file:line:column: rule NAME: idle: …` line per idle rule (a gate once);
        warnings unless `strict`."""
        prefix = "" if strict else "warning: "
        found = []
        for name, verdict in self.shown.items():
            if verdict.state == "idle":
                file, line, column = verdict.where.rsplit(":", 2)
                message = f"{prefix}idle: {verdict.reason}"
                found.append(Problem(file, int(line), int(column), name, message))
        return found


class StrictRefusal(RuleError):
    """Strict mode: the rules load, but some are idle (`verdicts` says which)."""

    def __init__(self, verdicts: Verdicts) -> None:
        self.verdicts = verdicts
        super().__init__(verdicts.problems(strict=True))


def read_push_auth(settings: Settings, environ: Mapping[str, str]) -> PushAuth:
    """The OSS receivers' authentication, decided on where the daemon listens."""
    return PushAuth.read(settings.oss.push, environ, open_ok=loopback_only(settings.listen))


def assess(
    rules: RuleSet, settings: Settings, environ: Mapping[str, str], push: PushAuth
) -> Verdicts:
    """Each rule's verdict under these settings and this environment (secrets read now)."""
    webhooks = resolve_auth(rules, environ, open_ok=loopback_only(settings.listen))
    facts = Facts(settings, environ, push, webhooks, sink_type(settings.sink))
    documents: Documents = {}
    verdicts: dict[str, Verdict] = {}
    for rule in rules.rules:
        found = CHECKS[rule.kind](rule, facts)
        if found is None:
            verdicts[rule.name] = ACTIVE
            continue
        field, reason = found
        if rule.gate is not None:  # a member's source is written inside the gate
            field = f"gate.members.{rule.gate.member}.{field}"
        about = TemplateProblem(rule.name, rule.file, rule.index, field, "")
        at = locate(about, rules, documents=documents)
        verdicts[rule.name] = Verdict("idle", reason, f"{at.file}:{at.line}:{at.column}")
    return Verdicts(rules, verdicts, _active(rules, verdicts), webhooks)


def judge(
    paths: Iterable[str],
    settings: Settings,
    environ: Mapping[str, str],
    push: PushAuth | None = None,
) -> Verdicts:
    """Load the rules under `paths` and judge each. Raises RuleError for invalid rules and,
    in strict mode, StrictRefusal when some are idle. Blocking: reads files."""
    rules = load_rules(paths)
    push = read_push_auth(settings, environ) if push is None else push
    verdicts = assess(rules, settings, environ, push)
    if settings.strict and verdicts.idle:
        raise StrictRefusal(verdicts)
    return verdicts


def _active(rules: RuleSet, verdicts: Mapping[str, Verdict]) -> RuleSet:
    active = tuple(r for r in rules.rules if verdicts[r.name].state == "active")
    return (
        rules
        if len(active) == len(rules.rules)
        else RuleSet(active, files=rules.files, queues=rules.queues)
    )


@dataclass(frozen=True)
class Endpoint:
    """A URL senders post to, and what it takes: `refused` says why it takes nothing;
    `checks` what it verifies ("nothing": unauthenticated, on loopback only)."""

    url: str
    receiver: str  # oss-eventbridge | oss-mns | webhook
    checks: str
    refused: str | None = None


def endpoints(settings: Settings, push: PushAuth, verdicts: Verdicts) -> list[Endpoint]:
    """Every URL a sender can post to: the two OSS receivers and each webhook path."""
    host, _, port = settings.listen.rpartition(":")
    base = f"http://{host}:{port}"
    eventbridge, mns = push.eventbridge, push.mns
    found = [
        Endpoint(
            base + settings.oss.push.eventbridge_path,
            "oss-eventbridge",
            _checks(token=eventbridge.token is not None, signature=eventbridge.verify_signature),
            eventbridge.refuses_everything,
        ),
        Endpoint(
            base + settings.oss.push.mns_path,
            "oss-mns",
            _checks(signature=mns.verify_signature),
            mns.refuses_everything,
        ),
    ]
    for path, auth in sorted(verdicts.webhooks.items()):
        kind = auth.auth
        bearer = kind is not None and bool(kind.bearerTokenEnv or kind.bearerTokenFile)
        checks = "nothing" if kind is None else "bearer token" if bearer else kind.hmacHeader
        found.append(Endpoint(base + path, "webhook", checks, auth.problem))
    return found


def _checks(*, token: bool = False, signature: bool = False) -> str:
    named = [what for what, on in (("token", token), ("signature", signature)) if on]
    return " and ".join(named) or "nothing"
