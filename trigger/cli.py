"""The `trigger` command line: run | validate | match | fire | schedule.

Each command parses its arguments, builds what it needs and calls into the library; exit
codes are part of the contract (DESIGN §5): 0 success, 1 invalid input (rules or events),
2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from trigger import __version__
from trigger.decoders.detect import decode_file
from trigger.errors import DecodeError, RenderError, RuleError
from trigger.events import Event
from trigger.rules.loader import load_rules
from trigger.rules.render import render
from trigger.rules.router import RuleSet

DEFAULT_RULES = "rules/"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    code: int = args.handler(args)
    return code


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
        description="Check rule files. Exit 0 when every rule is valid, 1 with one "
        "'file:line:column: rule NAME: message' line per problem.",
    )
    validate.add_argument("paths", nargs="*", metavar="PATH", help="files or directories")
    validate.add_argument("--rules", action="append", metavar="PATH", help="same as PATH")
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
    return parser


def _rules_paths(args: argparse.Namespace, extra: Sequence[str] = ()) -> list[str]:
    return [*(args.rules or []), *extra] or [DEFAULT_RULES]


def _load(paths: Sequence[str], err: TextIO) -> RuleSet | None:
    try:
        return load_rules(paths)
    except RuleError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        print(f"{len(exc.problems)} problem(s) found", file=err)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    rules = _load(_rules_paths(args, args.paths), sys.stdout)
    if rules is None:
        return 1
    print(f"ok: {len(rules)} rule(s) in {len(rules.files)} file(s)")
    return 0


def cmd_match(args: argparse.Namespace) -> int:
    rules = _load(_rules_paths(args), sys.stderr)
    if rules is None:
        return 1
    status = 0
    for name in args.events:
        try:
            events = decode_file(Path(name))
        except (OSError, DecodeError) as exc:
            print(f"{name}: cannot read event: {exc}", file=sys.stderr)
            status = 1
            continue
        for event in events:
            status = max(status, _match_one(rules, event, args))
    return status


def _match_one(rules: RuleSet, event: Event, args: argparse.Namespace) -> int:
    routed = rules.route(event, cluster=args.cluster)
    status = 0
    for failure in routed.failures:
        print(f"event {event.id}: rule {failure.rule.name}: {failure.message}", file=sys.stderr)
    for match in routed.matches:
        try:
            workflow = render(match.rule, match.event)
        except RenderError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        _emit(workflow, args.output)
    if args.explain:
        matched = {m.rule.name for m in routed.matches}
        for rule in rules.rules:
            if rule.name not in matched:
                reason = rules.explain(rule, event, cluster=args.cluster)
                print(f"event {event.id}: rule {rule.name}: no match: {reason}", file=sys.stderr)
    return status


def _emit(workflow: dict[str, Any], output: str) -> None:
    if output == "json":
        print(json.dumps(workflow, separators=(",", ":"), ensure_ascii=False))
    else:
        print("---")
        print(yaml.safe_dump(workflow, sort_keys=False, allow_unicode=True), end="")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
