"""The `trigger` command line: run | validate | match | fire | finish | backfill | replay |
queues | convert | schedule | events | why.

Each command parses its arguments, builds what it needs and calls into the library; exit
codes are part of the contract (DESIGN §5): 0 success, 1 invalid input (rules or events),
2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import structlog
import yaml

from trigger import __version__
from trigger.decoders.detect import decode_file
from trigger.errors import (
    ConfigError,
    DecodeError,
    Problem,
    RenderError,
    RuleError,
    SourceError,
    SubmitError,
    TemporarySubmitError,
    TriggerError,
)
from trigger.events import Event, parse_time
from trigger.rules.loader import load_rules
from trigger.rules.render import render
from trigger.rules.router import RuleSet
from trigger.rules.rule import Rule
from trigger.settings import Settings, load_settings, origin

if TYPE_CHECKING:
    from trigger.core.gatekeeper import GateReplay

DEFAULT_RULES = "rules/"
EXAMPLE_RULES = Path(__file__).parent / "examples" / "rules"
# Flags that set a setting of the same name, on the commands that have them.
SETTING_FLAGS = ("sink", "listen", "state", "dead_letter", "kafka_bootstrap", "strict")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if args.command != "run":  # the daemon configures its own log
        _library_errors_only()
    try:
        code: int = args.handler(args)
    except _Exit as stop:
        return stop.code
    except BrokenPipeError:
        # The reader went away (`trigger match ... | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


def _library_errors_only() -> None:
    """A one-shot command says what went wrong itself: the libraries' warnings (such as
    kubernetes_asyncio's `Config not found` before our own `no kubeconfig found`) are not
    printed, their errors are, one line each in our form."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("trigger: %(name)s: %(message)s"))
    handler.setLevel(logging.ERROR)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.ERROR)


class _Exit(Exception):
    """Raised once the reason was printed: the command ends with exit code `code`."""

    def __init__(self, code: int) -> None:
        self.code = code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trigger",
        description="Turn OSS, Kafka, cron and webhook events into Argo Workflows.",
    )
    parser.add_argument("--version", action="version", version=f"trigger {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check rule files; exit 1 listing every problem as file:line:column",
        description="Check rule files, and say which rules would be idle under the "
        "settings (--config, TRIGGER_* variables, the flags below) and environment at hand. "
        "Exit 0 when every rule is valid (idle ones are warnings, unless --strict), 1 with "
        "one 'file:line:column: rule NAME: message' line per problem.",
    )
    validate.add_argument("paths", nargs="*", metavar="PATH", help="files or directories")
    validate.add_argument("--rules", action="append", metavar="PATH", help="same as PATH")
    validate.add_argument("--config", metavar="FILE", help="YAML settings file")
    validate.add_argument("--listen", metavar="HOST:PORT", help="where the daemon would listen")
    validate.add_argument(
        "--kafka-bootstrap", metavar="HOST:PORT", help="the default Kafka cluster's servers"
    )
    validate.add_argument(
        "--sink", help="the daemon's sink (a cron rule with Forbid or Replace needs one that "
        "can list Workflows)"
    )
    _strict_flag(validate)
    validate.add_argument(
        "--cluster",
        action="store_true",
        help="also check the referenced WorkflowTemplates on the cluster (kubeconfig or "
        "in-cluster): they exist, required parameters are supplied, enum values are allowed",
    )
    validate.add_argument("--kubeconfig", metavar="FILE", help="with --cluster")
    validate.add_argument("--context", help="kubeconfig context, with --cluster")
    validate.set_defaults(handler=cmd_validate)

    match = commands.add_parser(
        "match",
        help="dry run: print the Workflows that events would create",
        description="Decode each event file (EventBridge CloudEvent or array, MNS "
        "notification, {kafka|cron|webhook: ...}) and print the Workflow objects the "
        "matching rules would create. Exit 0 even when nothing matches; 1 when an event "
        "file cannot be read or decoded, or a template fails for an event.",
    )
    match.add_argument("events", nargs="+", metavar="EVENT_FILE")
    match.add_argument("--rules", action="append", metavar="PATH", help=f"default {DEFAULT_RULES}")
    match.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    match.add_argument(
        "--explain", action="store_true", help="say on stderr why each rule did not match"
    )
    match.add_argument("--cluster", default="default", help="Kafka cluster of kafka events")
    match.set_defaults(handler=cmd_match)

    run = commands.add_parser(
        "run",
        help="run the daemon",
        description="Run the daemon. Every setting has a default of its own: the rules in "
        "./rules/, Workflows written under ./workflows/, HTTP on 127.0.0.1:8080, state in "
        "./state/, dead letters in ./dead-letters.jsonl. Flags win over TRIGGER_* environment "
        "variables, which win over --config; each changes its own setting only.",
    )
    _daemon_flags(run)
    _strict_flag(run)
    run.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        help="json: one JSON object per line; console: text; auto (default): console on a "
        "terminal, else json (log.format)",
    )
    run.set_defaults(handler=cmd_run)

    fire = commands.add_parser(
        "fire",
        help="submit one Workflow from a rule by hand",
        description="Create one Workflow from RULE's template, like `argo submit --from`. The "
        "rule's literal parameters are defaults; -p overrides them and must supply every "
        "parameter that is a template (those need an event); a name the rule does not have "
        "is refused. Prints the Workflow's name.",
    )
    fire.add_argument("rule", metavar="RULE")
    fire.add_argument(
        "-p",
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a value for one of the rule's parameters (repeatable)",
    )
    fire.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up (exit 1) when no Workflow is created by then; default 30",
    )
    _config_flags(fire)
    _sink_flags(fire)
    fire.set_defaults(handler=cmd_fire)

    finish = commands.add_parser(
        "finish",
        help="mark a local Workflow manifest finished (the embedded default's controller)",
        description="End the local sink's manifest NAME as Argo's controller would: status "
        "phase, times, output parameters (-p) and message, and the "
        "workflows.argoproj.io/completed label. A running daemon's workflow rules then fire "
        "for it. Only the local sink: on a cluster, Argo finishes Workflows. Exit 1 when "
        "there is no such manifest or it has finished already, 2 for bad arguments.",
    )
    finish.add_argument("name", metavar="NAME")
    finish.add_argument("--phase", required=True, choices=("Succeeded", "Failed", "Error"))
    finish.add_argument("-n", "--namespace", default="default", help="default: default")
    finish.add_argument(
        "-p",
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an output parameter of the Workflow (repeatable)",
    )
    finish.add_argument("--message", default="", help="status.message (why it failed)")
    finish.add_argument("--config", metavar="FILE", help="YAML settings file")
    finish.add_argument("--sink", help="local:DIR (default: the settings' sink)")
    finish.set_defaults(handler=cmd_finish)

    _backfill_parser(commands)
    _replay_parser(commands)
    _convert_parser(commands)
    _queues_parser(commands)

    _schedule_parser(commands)
    _inspect_parsers(commands)
    return parser


def _schedule_parser(commands: Any) -> None:
    schedule = commands.add_parser(
        "schedule",
        help="print the next fire times of a cron rule",
        description="Print RULE's next N fire times after --from (default: now), one ISO-8601 "
        "time with the offset of the rule's timezone per line, exactly as the daemon fires "
        "them (daylight-saving policy included). A --from without offset is read in the "
        "rule's timezone. Exit 2 when RULE is unknown or not a cron rule.",
    )
    schedule.add_argument("rule", metavar="RULE")
    schedule.add_argument("--from", dest="start", metavar="TIME", help="default: now")
    schedule.add_argument("-n", dest="count", type=int, default=10, metavar="N")
    schedule.add_argument(
        "--rules", action="append", metavar="PATH", help=f"default {DEFAULT_RULES}"
    )
    schedule.set_defaults(handler=cmd_schedule)


def _inspect_parsers(commands: Any) -> None:
    events = commands.add_parser(
        "events",
        help="a running daemon's decision records: what happened per rule per event",
        description="List the newest decision records of a running daemon (oldest first): "
        "per event, each rule's outcome (filtered, rate-limited, retrying, failed, created, "
        "duplicate, dead-lettered, gated) and how many rules were not for it. Exit 2 when the "
        "daemon cannot be reached.",
    )
    events.add_argument("--rule", metavar="RULE", help="only records where RULE took part")
    events.add_argument(
        "--outcome", metavar="OUTCOME", help="only records with this outcome (or other-source)"
    )
    events.add_argument("--source", help="only events of this source (oss, kafka, ...)")
    events.add_argument("-n", "--limit", type=int, default=50, metavar="N", help="default 50")
    events.add_argument("-f", "--follow", action="store_true", help="keep printing new ones")
    _inspect_flags(events)
    events.set_defaults(handler=cmd_events)

    why = commands.add_parser(
        "why",
        help="why a running daemon did (not) fire for an event",
        description="Show a running daemon's decision record of EVENT_ID: each rule's "
        "outcome and, for a rule whose filter did not match, the check that failed, the field "
        "and the value seen, for a gate member the gate's key and what it still lacks; the "
        "rules not for the event, grouped by why. Exit 1 when the "
        "daemon has no record of it (it keeps the last decisions.size), 2 when it cannot be "
        "reached.",
    )
    why.add_argument("event_id", metavar="EVENT_ID")
    _inspect_flags(why)
    why.set_defaults(handler=cmd_why)


def _inspect_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", metavar="URL", help="default: where the settings listen")
    parser.add_argument("--config", metavar="FILE", help="YAML settings file")
    parser.add_argument(
        "-o", "--output", choices=("auto", "table", "json"), default="auto",
        help="auto (default): a table on a terminal, else JSON lines",
    )


def _backfill_parser(commands: Any) -> None:
    backfill = commands.add_parser(
        "backfill",
        help="create the Workflows a rule would have created over a past range",
        description="Create RULE's Workflows for a past range [--from, --to]: a cron rule's "
        "every tick (the daemon's schedule and DST policy, the live ticks' names, so a tick "
        "already fired is a duplicate), or for an OSS rule with source.oss.poll every object "
        "under its bucket/prefix modified in the range (the poller's events). Each goes "
        "through the rule's filter, rate limit and the sink. Ends with a summary; exit 1 if "
        "any failed, 2 for bad arguments, 130 when interrupted (run it again to resume: "
        "what was created is then a duplicate).",
    )
    backfill.add_argument("rule", metavar="RULE")
    backfill.add_argument(
        "--from",
        dest="start",
        required=True,
        metavar="TIME",
        help="ISO-8601 (no offset: the rule's timezone) or epoch seconds",
    )
    backfill.add_argument(
        "--to", dest="end", required=True, metavar="TIME", help="inclusive, like --from"
    )
    _run_flags(
        backfill,
        dry_run="print the Workflows that would be created; create nothing",
        parallel="submissions at once (default 4); the rule's rateLimit holds",
    )
    _config_flags(backfill)
    _sink_flags(backfill)
    backfill.set_defaults(handler=cmd_backfill)


def _run_flags(parser: argparse.ArgumentParser, *, dry_run: str, parallel: str) -> None:
    """--dry-run, -o and --parallel, as backfill and replay share them."""
    parser.add_argument("--dry-run", action="store_true", help=dry_run)
    parser.add_argument(
        "-o", "--output", choices=("yaml", "json"), default="yaml", help="with --dry-run"
    )
    parser.add_argument("--parallel", type=int, default=4, metavar="N", help=parallel)


def _replay_parser(commands: Any) -> None:
    replay = commands.add_parser(
        "replay",
        help="re-drive dead letters through the current rules and templates",
        description="Re-drive the dead letters in SOURCE — a dead-letter file (file:PATH or "
        "PATH) or a Kafka dead-letter topic (kafka:TOPIC, on --cluster) — through the "
        "current rules, templates and sink: each record ends created NAME, duplicate NAME "
        "(its Workflow exists), filtered out, or failed again: REASON. A file is then "
        "rewritten atomically without the records that succeeded (those failing again are "
        "updated, the rest stay as they were); a topic is read in the consumer group "
        "trigger-replay.TOPIC and what is to stay is produced to it again. Exit 1 if any "
        "record failed again or is bad, 2 for bad arguments, 130 when interrupted (run it "
        "again: what was created is then a duplicate).",
    )
    replay.add_argument("source", metavar="SOURCE", help="file:PATH | PATH | kafka:TOPIC")
    replay.add_argument("--rule", metavar="RULE", help="only the records of this rule")
    replay.add_argument(
        "--since",
        metavar="TIME",
        help="only records dead-lettered at or after TIME (ISO-8601, UTC without offset; "
        "or epoch seconds)",
    )
    _run_flags(
        replay,
        dry_run="print the Workflows that would be created; touch nothing",
        parallel="records replayed at once (default 4); the rules' rateLimit holds",
    )
    replay.add_argument(
        "--cluster",
        default="default",
        metavar="NAME",
        help="the Kafka cluster of kafka:TOPIC (default: default)",
    )
    replay.add_argument(
        "--kafka-bootstrap", metavar="HOST:PORT", help="the default Kafka cluster's servers"
    )
    _config_flags(replay)
    replay.add_argument("--sink", help="local:DIR | stdout | kubernetes | argo-server:URL")
    replay.set_defaults(handler=cmd_replay)
def _convert_parser(commands: Any) -> None:
    convert = commands.add_parser(
        "convert",
        help="convert CronWorkflows, CronJobs and Argo Events Sensors into rules",
        description="Read Kubernetes/Argo YAML (Argo CronWorkflow, Kubernetes CronJob, Argo "
        "Events Sensor with its EventSources) and write trigger rules and the "
        "WorkflowTemplates they need: to stdout, or with -o into DIR/rules/, "
        "DIR/workflowtemplates/ and DIR/REPORT.md. What could not be carried over, and why, "
        "is reported on stderr per object and field. Exit 0 when rules were made, 1 when a "
        "file cannot be read or nothing converts.",
    )
    convert.add_argument("files", nargs="+", metavar="FILE")
    convert.add_argument("-o", "--output", metavar="DIR", help="write files here")
    convert.set_defaults(handler=cmd_convert)
def _queues_parser(commands: Any) -> None:
    queues = commands.add_parser(
        "queues",
        help="show each queue's limit and its Workflows running and waiting",
        description="Per `kind: Queue` of the rules: its limit, namespaces, and how many of "
        "its unfinished Workflows are Running and waiting (phase Pending, or none yet), "
        "listed by the trigger.dev/queue label through the sink (kubernetes, argo-server; "
        "local: its manifests, with a note). --server URL asks a running daemon instead "
        "(its /status, which adds what its queue keeper found). Exit 1 when the Workflows "
        "could not be counted, 2 for bad arguments or configuration.",
    )
    queues.add_argument("--server", metavar="URL", help="a running daemon, e.g. http://trigger:8080")
    queues.add_argument("-o", "--output", choices=("table", "json"), default="table")
    _config_flags(queues)
    queues.add_argument("--sink", help="local:DIR | kubernetes | argo-server:URL")
    queues.set_defaults(handler=cmd_queues)


# Each command takes the flags of the settings it uses, and no others.


def _daemon_flags(parser: argparse.ArgumentParser) -> None:
    _config_flags(parser)
    _sink_flags(parser)
    parser.add_argument("--listen", metavar="HOST:PORT", help="HTTP server address")
    parser.add_argument("--state", help="file:PATH | kubernetes[:NAMESPACE/NAME]")
    parser.add_argument(
        "--kafka-bootstrap",
        metavar="HOST:PORT",
        help="bootstrap servers of the default Kafka cluster",
    )


def _config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML settings file")
    parser.add_argument(
        "--rules", action="append", metavar="PATH", help="rule files or directories"
    )


def _sink_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sink", help="local:DIR | stdout | kubernetes | argo-server:URL")
    parser.add_argument("--dead-letter", metavar="file:PATH", help="dead-letter sink")


def _strict_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        default=None,  # unset: TRIGGER_STRICT or the config file decide
        help="idle rules (Kafka cluster not configured, secret unset, ...) are errors",
    )


def _settings(args: argparse.Namespace) -> tuple[Settings, str]:
    """The settings of any command, and where its rules came from — the one way every
    command finds its rules: --rules (and validate's PATHs), else TRIGGER_RULES, else the
    config file's `rules`, else ./rules/ (which must then exist: no guessing). On failure,
    prints why and exits: 2 for a bad configuration, 1 when there are no rules."""
    flags: dict[str, Any] = {name: getattr(args, name, None) for name in SETTING_FLAGS}
    flags["rules"] = [*(getattr(args, "rules", None) or []), *getattr(args, "paths", [])] or None
    config = getattr(args, "config", None)
    try:
        settings = load_settings(config, flags=flags)
        found = origin("rules", config, flags=flags)
    except ConfigError as exc:
        print(f"trigger: error: {exc}", file=sys.stderr)
        raise _Exit(2) from exc
    if found == "default" and not Path(DEFAULT_RULES).exists():
        print(
            f"trigger: error: no rules: ./{DEFAULT_RULES} does not exist (the default rules "
            f"path); pass --rules PATH or set TRIGGER_RULES (the bundled examples: --rules "
            f"{EXAMPLE_RULES})",
            file=sys.stderr,
        )
        raise _Exit(1)
    return settings, found


def cmd_run(args: argparse.Namespace) -> int:
    from trigger.daemon import logs
    from trigger.daemon.assembly import Daemon

    settings, rules_origin = _settings(args)
    try:
        logs.configure(settings.log.level, args.log_format or settings.log.format)
        return asyncio.run(Daemon.create(settings, rules_origin=rules_origin).run())
    except ConfigError as exc:
        print(f"trigger: error: {exc}", file=sys.stderr)
        return 2


def cmd_fire(args: argparse.Namespace) -> int:
    settings, _ = _settings(args)
    try:
        overrides = dict(_key_value(p) for p in args.parameter)
    except ConfigError as exc:
        print(f"trigger: error: {exc}", file=sys.stderr)
        return 2
    rules = _load(list(settings.rules), sys.stderr)
    if rules is None:
        return 1
    rule, problem = _firable(rules, args.rule)
    if rule is None:
        print(f"trigger: error: {problem}", file=sys.stderr)
        return 2
    parameters, problems = _fire_parameters(rule, overrides)
    for problem in problems:
        print(f"trigger: error: {problem}", file=sys.stderr)
    if problems:
        return 2
    try:
        return asyncio.run(_fire(settings, rule, parameters, args.timeout))
    except ConfigError as exc:
        print(f"trigger: error: {exc}", file=sys.stderr)
        return 2


def _firable(rules: RuleSet, name: str) -> tuple[Rule | None, str]:
    """The rule `trigger fire NAME` creates a Workflow of — a gate rule by its own name,
    as it fires (its parameters see `gate`: each templated one needs `-p`) — or why none."""
    members = rules.gates.get(name)
    if members is not None:
        assert members[0].gate is not None
        return members[0].gate.rule, ""
    rule = rules.by_name.get(name)
    if rule is not None and rule.gate is not None:
        gate = rule.gate.rule.name
        return None, (
            f"rule {name} is member {rule.gate.member!r} of the gate {gate}, which creates "
            f"no Workflow of its own: fire the gate: trigger fire {gate}"
        )
    return rule, "" if rule is not None else f"no rule named {name!r}"


def _fire_parameters(rule: Rule, given: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The rule's parameters (`-p` values, else its literal ones), and every problem with
    them at once: the `-p` names the rule does not have, the templated parameters (which
    need an event) that no `-p` gives."""
    own = dict(rule.parameters)
    problems = []
    unknown = [name for name in given if name not in own]
    if unknown:
        listed = f"its parameters: {', '.join(own)}" if own else "it has no parameters"
        problems.append(f"rule {rule.name} has no parameter {', '.join(unknown)} ({listed})")
    missing = [name for name, t in rule.parameters if name not in given and not t.is_literal]
    if missing:
        many = len(missing) > 1
        what = (
            f"parameters {', '.join(missing)} are templates"
            if many
            else (f"parameter {missing[0]} is a template")
        )
        need = "they need an event" if many else "it needs an event"
        hint = " ".join(f"-p {name}=VALUE" for name in missing)
        problems.append(f"rule {rule.name}: {what} ({need}): pass {hint}")
    if problems:
        return {}, problems
    return {n: given[n] if n in given else t.render({}) for n, t in rule.parameters}, []


async def _fire(
    settings: Settings, rule: Rule, parameters: dict[str, str], timeout: float  # noqa: ASYNC109
) -> int:
    try:
        async with asyncio.timeout(timeout):
            return await _fire_once(settings, rule, parameters)
    except TimeoutError:
        print(
            f"trigger: error: no Workflow created within {timeout:g} s: the backend did not "
            "answer or kept failing (see the retries above); nothing was dead-lettered",
            file=sys.stderr,
        )
        return 1


async def _fire_once(settings: Settings, rule: Rule, parameters: dict[str, str]) -> int:
    from trigger.clock import SystemClock
    from trigger.daemon.assembly import dead_letter_sink, sink_options
    from trigger.submit.sinks import open_sink
    from trigger.submit.size import SizeLimit
    from trigger.submit.submitter import NoHooks, Submitter

    class RetriesShown(NoHooks):
        """One stderr line per retry: a failing backend is not silence."""

        def on_retry(
            self, rule: Rule, event: Any, attempt: int, delay: float, error: Exception
        ) -> None:
            print(
                f"trigger: attempt {attempt} failed ({error}); retrying in {delay:.1f} s",
                file=sys.stderr,
            )

    sink = await open_sink(settings.sink, **sink_options(settings, os.environ))
    dead_letters = dead_letter_sink(settings.dead_letter)
    try:
        size = SizeLimit(settings.submit.max_workflow_bytes)
        submitter = Submitter(
            sink, dead_letters, SystemClock(), size_limit=size, hooks=RetriesShown()
        )
        outcome = await submitter.fire(rule, parameters, key=f"fire:{uuid.uuid4()}")
    except TemporarySubmitError as exc:
        print(f"trigger: error: submission failing temporarily: {exc}", file=sys.stderr)
        return 1
    finally:
        await sink.close()
        await dead_letters.close()
    if outcome.kind == "dead-lettered":
        print(f"trigger: error: {outcome.reason}: {outcome.message}", file=sys.stderr)
        return 1
    print(outcome.workflow)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from trigger.daemon import backfill as bf
    from trigger.rules.schedules import compile_timezone

    settings, _ = _settings(args)
    rules = _load(list(settings.rules), sys.stderr)
    if rules is None:
        return 1
    rule = rules.by_name.get(args.rule)
    try:
        if rule is None and args.rule in rules.gates:
            raise ConfigError(f"rule {args.rule} is a gate: backfill takes cron and OSS rules")
        if rule is not None and rule.gate is not None:
            raise ConfigError(
                f"rule {rule.name} is a member of the gate {rule.gate.rule.name}: "
                "backfill takes cron and OSS rules, not gate members"
            )
        if rule is None:
            raise ConfigError(f"no rule named {args.rule!r}")
        if rule.kind not in ("cron", "oss"):
            raise ConfigError(
                f"rule {rule.name} is a {rule.kind} rule: backfill takes cron and OSS rules"
            )
        if args.parallel < 1:
            raise ConfigError(f"--parallel must be at least 1, got {args.parallel}")
        tz = compile_timezone(rule.cron.timezone if rule.kind == "cron" else "UTC")
        start = bf.parse_moment(args.start, tz, "--from")
        end = bf.parse_moment(args.end, tz, "--to")
        if end < start:
            raise ConfigError(f"--to ({args.end}) is before --from ({args.start})")
    except ConfigError as exc:
        print(f"trigger: error: {exc}", file=sys.stderr)
        return 2
    try:
        with _batch_logging():
            if args.dry_run:
                return asyncio.run(_backfill_dry(rule, start, end, settings, args.output))
            return asyncio.run(_backfill(rule, start, end, settings, args.parallel))
    except ConfigError as exc:
        print(f"trigger: error: {exc}", file=sys.stderr)
        return 2
    except SourceError as exc:  # a dry run's listing failed
        print(f"trigger: error: {exc}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _batch_logging(level: int = logging.WARNING) -> Iterator[None]:
    """Per-event lines would drown a batch command's summary: only warnings (retries) and
    errors, on stderr; the previous configuration comes back after (main() runs inside
    tests too)."""
    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


def _backfill_events(rule: Rule, start: Any, end: Any, settings: Settings) -> Any:
    from trigger.daemon import backfill as bf

    if rule.kind == "cron":
        return bf.cron_events(rule, start, end)
    return bf.oss_events(rule, start, end, os.environ, settings.oss.poll.timeout)


async def _backfill_dry(rule: Rule, start: Any, end: Any, settings: Settings, out: str) -> int:
    from trigger.daemon import backfill as bf

    events = _backfill_events(rule, start, end, settings)
    status = 0

    def emit(event: Event) -> None:
        nonlocal status
        try:
            for workflow in bf.plan(rule, event):
                _emit(workflow, out)
        except RenderError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1

    if rule.kind == "cron":
        for event in events:
            emit(event)
    else:
        async for event in events:
            emit(event)
    return status


async def _backfill(rule: Rule, start: Any, end: Any, settings: Settings, parallel: int) -> int:
    from trigger.clock import SystemClock
    from trigger.daemon import backfill as bf
    from trigger.daemon.assembly import dead_letter_sink
    from trigger.daemon.runs import Progress, Tally, submission
    from trigger.rules.cronmath import count_fires
    from trigger.rules.schedules import compile_timezone

    clock = SystemClock()
    total = None
    if rule.kind == "cron":
        tz = compile_timezone(rule.cron.timezone)
        total = count_fires(rule.schedules, tz, start - bf.JUST_BEFORE, end, 10**9)
    dead_letters = dead_letter_sink(settings.dead_letter)
    progress = Progress(total)
    job = None
    interrupted, broken = False, None
    try:
        async with submission(settings, RuleSet((rule,)), dead_letters, clock, parallel) as sub:
            job = bf.Backfill(rule, sub, dead_letters, clock, parallel=parallel, progress=progress)
            await job.run(_backfill_events(rule, start, end, settings))
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this task
        interrupted = True
    except SourceError as exc:  # listing the bucket failed: say so after what was done
        broken = str(exc)
    finally:
        progress.close()
        await dead_letters.close()
    tally = job.tally if job is not None else Tally()
    return _summarize(f"backfill {rule.name}", tally, interrupted=interrupted, broken=broken)


def _summarize(what: str, tally: Any, *, interrupted: bool, broken: str | None = None) -> int:
    """The end of a batch command (backfill, replay): the failure reasons on stderr, then
    the summary; exit 130 when interrupted, 1 when anything failed or `broken` says the
    run could not go on."""
    for error in tally.errors:
        print(f"trigger: failed: {error}", file=sys.stderr)
    if interrupted:
        print(
            f"{what}: interrupted: {tally.summary()}; run it again to "
            "resume (what was created will be a duplicate)",
            file=sys.stderr,
        )
        raise _Exit(130)
    if broken is not None:
        print(f"trigger: error: {broken}; run it again to resume", file=sys.stderr)
    print(f"{what}: {tally.summary()}")
    return 1 if not tally.ok or broken is not None else 0


def cmd_replay(args: argparse.Namespace) -> int:
    from trigger.daemon import replay as rp

    settings, _ = _settings(args)
    rules = _load(list(settings.rules), sys.stderr)
    if rules is None:
        return 1
    try:
        if args.parallel < 1:
            raise ConfigError(f"--parallel must be at least 1, got {args.parallel}")
        since = None
        if args.since is not None:
            try:
                since = parse_time(args.since, where="--since")
            except DecodeError as exc:
                raise ConfigError(str(exc)) from exc
        select = rp.Selection(args.rule, since)
        kind, _, where = args.source.partition(":")
        if kind == "kafka" and where:
            source: Any = rp.TopicReplay(
                args.cluster, where, _kafka_options(settings, args.cluster), select, args.parallel
            )
        else:
            path = Path(where if kind == "file" and where else args.source)
            if not path.is_file():
                raise ConfigError(f"no dead-letter file {str(path)!r}")
            source = path
        # Each record's line says how it ended: the pipeline's own log lines ("dead-lettered"
        # for a record that fails again, though nothing is written) would only mislead.
        with _batch_logging(logging.CRITICAL):
            if args.dry_run:
                return asyncio.run(_replay_dry(rules, source, select, args.output, args.cluster))
            return asyncio.run(_replay(rules, source, select, settings, args))
    except ConfigError as exc:
        print(f"trigger: error: {exc}", file=sys.stderr)
        return 2


def _kafka_options(settings: Settings, name: str) -> dict[str, Any]:
    from trigger.sources.kafka.config import client_options

    cluster = settings.kafka.clusters.get(name)
    if cluster is None:
        known = ", ".join(sorted(settings.kafka.clusters)) or "none"
        raise ConfigError(
            f"Kafka cluster {name!r} is not configured (configured: {known}); add it under "
            "kafka.clusters or pass --kafka-bootstrap"
        )
    return client_options(name, cluster, os.environ)


async def _replay_dry(rules: RuleSet, source: Any, select: Any, out: str, cluster: str) -> int:
    from trigger.daemon import replay as rp

    status = 0

    def emit(letter: rp.Letter) -> None:
        nonlocal status
        if letter.problem is not None:
            print(f"{letter.describe()}: bad: {letter.problem}", file=sys.stderr)
            status = 1
            return
        try:
            for workflow in rp.plan(rules, letter, cluster):
                _emit(workflow, out)
        except (RenderError, rp.Unreplayable) as exc:
            print(f"{letter.describe()}: error: {exc}", file=sys.stderr)
            status = 1

    if isinstance(source, Path):
        snapshot = await asyncio.to_thread(rp.read_file, source)
        taken = {id(letter) for letter in rp.chosen(snapshot.letters, select)}
        for letter in snapshot.letters:
            if letter.problem is not None or id(letter) in taken:
                emit(letter)
    else:
        await source.run(None, emit)
    return status


async def _replay(
    rules: RuleSet, source: Any, select: Any, settings: Settings, args: argparse.Namespace
) -> int:
    from trigger.clock import SystemClock
    from trigger.daemon import replay as rp
    from trigger.daemon.runs import Progress, submission

    clock = SystemClock()
    progress = Progress(None, label="replay")

    def report(letter: rp.Letter) -> None:
        if letter.result is None:
            progress.note(f"{letter.describe()}: bad, kept: {letter.problem}")
            return
        for line in letter.result.lines():
            progress.note(f"{letter.describe()}: {line}")

    job = None
    interrupted, broken = False, None
    try:
        async with submission(settings, rules, rp.Caught(), clock, args.parallel) as sub:
            job = rp.Replay(
                rules, sub, clock, cluster=args.cluster, progress=progress, report=report
            )
            if isinstance(source, Path):
                await rp.replay_file(source, job, select, args.parallel)
            else:
                await source.run(job, lambda letter: None)
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this task
        interrupted = True
    except (rp.FileChanged, SourceError, OSError) as exc:
        broken = str(exc)
    finally:
        progress.close()
    tally = job.tally if job is not None else rp.ReplayTally()
    return _summarize(f"replay {args.source}", tally, interrupted=interrupted, broken=broken)


def cmd_queues(args: argparse.Namespace) -> int:
    if args.server:
        if args.config or args.rules or args.sink:
            print("trigger: error: --server takes no --config, --rules or --sink", file=sys.stderr)
            return 2
        found = _server_queues(args.server)
    else:
        settings, _ = _settings(args)
        rules = _load(list(settings.rules), sys.stderr)
        if rules is None:
            return 1
        try:
            found = asyncio.run(_count_queues(settings, rules))
        except ConfigError as exc:
            print(f"trigger: error: {exc}", file=sys.stderr)
            return 2
    if args.output == "json":
        print(json.dumps(found, indent=2))
    else:
        _print_queues(found)
    return 1 if any(q.get("running") is None for q in found.values()) else 0


def _server_queues(url: str) -> dict[str, Any]:
    import urllib.error
    import urllib.request

    address = url.rstrip("/") + "/status"
    if not address.startswith(("http://", "https://")):
        print(f"trigger: error: --server {url!r}: expected http://HOST:PORT", file=sys.stderr)
        raise _Exit(2)
    try:
        with urllib.request.urlopen(address, timeout=15) as answer:  # noqa: S310 (http only)
            status = json.load(answer)
    except (OSError, ValueError) as exc:
        print(f"trigger: error: cannot read {address}: {exc}", file=sys.stderr)
        raise _Exit(2) from exc
    queues: dict[str, Any] = status.get("queues") or {}
    return queues


async def _count_queues(settings: Settings, rules: RuleSet) -> dict[str, Any]:
    from trigger.core.queues import describe_queues
    from trigger.daemon.assembly import sink_options
    from trigger.submit.sinks import open_sink

    sink = await open_sink(settings.sink, **sink_options(settings, os.environ))
    try:
        return await describe_queues(sink, rules, within=settings.kubernetes.timeout * 3)
    finally:
        await sink.close()


def _print_queues(found: dict[str, Any]) -> None:
    if not found:
        print("no queues: the rules declare no `kind: Queue`")
        return
    rows = [["QUEUE", "LIMIT", "RUNNING", "WAITING", "NAMESPACES"]]
    for name, queue in found.items():
        counts = ["?" if queue.get(k) is None else str(queue[k]) for k in ("running", "waiting")]
        rows.append([name, str(queue["limit"]), *counts, ",".join(queue.get("namespaces", []))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    notes = {note for queue in found.values() if (note := queue.get("note"))}
    for name, queue in found.items():
        for problem in queue.get("problems", []):
            print(f"{name}: {problem}")
    for note in sorted(notes):
        print(f"note: {note}")


def cmd_finish(args: argparse.Namespace) -> int:
    from trigger.clock import SystemClock
    from trigger.submit.local import LocalSink

    try:
        outputs = dict(_key_value(p) for p in args.parameter)
        settings = load_settings(args.config, flags={"sink": args.sink})
    except ConfigError as exc:
        print(f"trigger: error: {exc}", file=sys.stderr)
        return 2
    kind, _, directory = settings.sink.partition(":")
    if kind != "local" or not directory:
        print(
            f"trigger: error: finish marks local manifests; the sink is {settings.sink!r} "
            "(on a cluster, Argo's controller finishes Workflows)",
            file=sys.stderr,
        )
        return 2

    async def finish() -> dict[str, Any]:
        sink = LocalSink(directory)
        try:
            return await sink.finish_workflow(
                args.namespace,
                args.name,
                args.phase,
                now=SystemClock().now(),
                outputs=outputs,
                message=args.message,
            )
        finally:
            await sink.close()

    try:
        done = asyncio.run(finish())
    except SubmitError as exc:
        print(f"trigger: error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.namespace}/{args.name} {done['status']['phase']}")
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from trigger.clock import SystemClock
    from trigger.rules.cronmath import rule_fire_times
    from trigger.rules.schedules import ScheduleError

    rules = _load(_settings(args)[0].rules, sys.stderr)
    if rules is None:
        return 1
    try:
        if args.count < 1:
            raise ScheduleError(f"-n must be at least 1, got {args.count}")
        lines = rule_fire_times(
            rules.by_name.get(args.rule), args.rule, args.start, args.count, SystemClock().now()
        )
    except ScheduleError as exc:
        print(f"trigger: error: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from trigger.rules.convert.command import run

    return run(args.files, args.output, sys.stdout, sys.stderr)


def cmd_events(args: argparse.Namespace) -> int:
    from trigger.daemon import inspect

    return _inspecting(
        lambda settings: inspect.events(
            settings,
            server=args.server,
            rule=args.rule,
            outcome=args.outcome,
            source=args.source,
            limit=args.limit,
            follow=args.follow,
            output=args.output,
        ),
        args,
    )


def cmd_why(args: argparse.Namespace) -> int:
    from trigger.daemon import inspect

    return _inspecting(
        lambda settings: inspect.why(
            settings, args.event_id, server=args.server, output=args.output
        ),
        args,
    )


def _inspecting(command: Any, args: argparse.Namespace) -> int:
    from trigger.daemon.inspect import NotFound, Unreachable

    try:
        return int(command(load_settings(args.config)))
    except ConfigError as exc:
        print(f"trigger: error: {exc}", file=sys.stderr)
        return 2
    except NotFound as exc:
        print(f"trigger: {exc}", file=sys.stderr)
        return 1
    except Unreachable as exc:
        print(f"trigger: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"-p expects KEY=VALUE, got {text!r}")
    return key, value


def _load(paths: Sequence[str], err: TextIO) -> RuleSet | None:
    try:
        return load_rules(paths)
    except RuleError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        print(f"{len(exc.problems)} problem(s) found", file=err)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    from trigger.daemon.verdicts import judge

    settings, _ = _settings(args)
    try:
        verdicts = judge(settings.rules, settings, os.environ)
    except RuleError as exc:  # invalid rules, or idle ones in strict mode
        for problem in exc.problems:
            print(problem)
        print(f"{len(exc.problems)} problem(s) found")
        return 1
    for problem in (*verdicts.rules.warnings, *verdicts.problems(strict=False)):
        print(problem)
    rules = verdicts.rules
    if args.cluster:
        try:
            problems = asyncio.run(_cluster_problems(rules, args.kubeconfig, args.context))
        except ConfigError as exc:
            print(f"trigger: error: {exc}", file=sys.stderr)
            return 2
        errors = [p for p in problems if not p.message.startswith("warning: ")]
        for problem in problems:
            print(problem)
        if errors:
            print(f"{len(errors)} problem(s) found", file=sys.stdout)
            return 1
    print(
        f"ok: {len(rules.written)} rule(s) in {len(rules.files)} file(s): "
        f"{verdicts.active_count} active, {len(verdicts.idle)} idle"
        + (f"; {len(rules.queues)} queue(s)" if rules.queues else "")
    )
    return 0


async def _cluster_problems(
    rules: RuleSet, kubeconfig: str | None, context: str | None
) -> list[Problem]:
    from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink
    from trigger.submit.templates import validate_against_cluster

    sink = await KubernetesSink.connect(KubernetesOptions(kubeconfig=kubeconfig, context=context))
    try:
        return await validate_against_cluster(rules, sink.api_client)
    finally:
        await sink.close()


def cmd_match(args: argparse.Namespace) -> int:
    rules = _load(_settings(args)[0].rules, sys.stderr)
    if rules is None:
        return 1
    from trigger.core.gatekeeper import GateReplay

    status = 0
    gates = GateReplay()
    for name in args.events:
        try:
            events = decode_file(Path(name))
        except (OSError, DecodeError) as exc:
            print(f"{name}: cannot read event: {exc}", file=sys.stderr)
            status = 1
            continue
        for event in events:
            status = max(status, _match_one(rules, event, args, gates))
    for line in gates.progress():
        print(line, file=sys.stderr)
    return status


def _match_one(rules: RuleSet, event: Event, args: argparse.Namespace, gates: GateReplay) -> int:
    routed = rules.route(event, cluster=args.cluster)
    status = 0
    for failure in routed.failures:
        print(f"event {event.id}: rule {failure.rule.name}: {failure.message}", file=sys.stderr)
    for match in routed.matches:
        pairs = [(match.rule, match.event)]
        try:
            if match.rule.gate is not None:  # gates fire over the whole set of event files
                firings, notes = gates.add(match.rule, match.event)
                for note in notes:
                    print(f"event {event.id}: {note}", file=sys.stderr)
                pairs = [(match.rule.gate.rule, firing) for firing in firings]
            workflows = [render(rule, routed_event) for rule, routed_event in pairs]
        except TriggerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        for workflow in workflows:
            _emit(workflow, args.output)
    if args.explain:
        matched = {m.rule.name for m in routed.matches}
        for line in rules.explain_misses(event, matched, cluster=args.cluster):
            print(f"event {event.id}: {line}", file=sys.stderr)
    return status


def _emit(workflow: dict[str, Any], output: str) -> None:
    if output == "json":
        print(json.dumps(workflow, separators=(",", ":"), ensure_ascii=False))
    else:
        print("---")
        print(yaml.safe_dump(workflow, sort_keys=False, allow_unicode=True), end="")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
