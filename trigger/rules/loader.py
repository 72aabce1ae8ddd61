"""Load rule files: read YAML safely, check the schema, compile everything, report all problems.

`load_rules` either returns a complete RuleSet or raises RuleError listing every problem as
`file:line:column: rule NAME: message`, so `trigger validate` shows them all at once and the
daemon can keep its previous rule set when a reload fails. `kind: Queue` documents sit
beside the rules; every rule's `workflow.queue` is checked against them once all files
are read. What is worth a look but does
not stop a load — a rule file with no rules in it — is a warning on the RuleSet.
"""

from __future__ import annotations

import difflib
import gc
from collections.abc import Iterable
from pathlib import Path as FsPath
from typing import Final

from trigger.errors import Problem, RuleError
from trigger.rules.compiler import DocumentCompiler, Session, default_generate_name
from trigger.rules.model import DNS1123_LABEL
from trigger.rules.router import RuleSet
from trigger.rules.rule import Rule
from trigger.rules.templating import TemplateEngine
from trigger.rules.yamldoc import YamlProblem, read_documents

RULE_SUFFIXES: Final = (".yaml", ".yml")


def rule_files(paths: Iterable[str | FsPath]) -> list[FsPath]:
    """The rule files under `paths`: files as given, directories searched recursively."""
    found: list[FsPath] = []
    for raw in paths:
        path = FsPath(raw)
        if path.is_dir():
            # Hidden entries are skipped below the root: a mounted ConfigMap keeps every file
            # twice, once in a hidden `..2025_01_01...` snapshot directory.
            found.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.suffix in RULE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and p.is_file()
            )
        else:
            found.append(path)
    return found


def load_rules(paths: Iterable[str | FsPath], *, engine: TemplateEngine | None = None) -> RuleSet:
    """Load and compile every rule under `paths`; raises RuleError with all problems."""
    files = rule_files(paths)
    if not files:
        raise RuleError(
            [Problem(", ".join(map(str, paths)) or ".", 1, 1, None, "no rule files found")]
        )
    # Loading builds many small long-lived objects; the cyclic collector would rescan them
    # again and again as they pile up. The load makes no cyclic garbage (tested), so the
    # collector is off while it runs. At the end the heap is frozen (`gc.freeze`): the rule
    # set joins a generation no collection scans — not now (a full collection of 10,000
    # rules' objects costs ~0.4 s) and not in every later full collection of the running
    # daemon. What an earlier load froze is handed back to the collector and collected
    # first: the rule set a reload replaces (its few cycles, ~400 objects for 10,000 rules)
    # and anything else frozen with it is garbage by then, or will be by the next reload.
    collecting = gc.isenabled()
    gc.disable()
    if gc.get_freeze_count():
        gc.unfreeze()
        gc.collect()
    try:
        return _compile_files(files, Session(engine or TemplateEngine()))
    finally:
        if collecting:
            gc.freeze()
            gc.enable()


def _compile_files(files: list[FsPath], session: Session) -> RuleSet:
    warnings: list[Problem] = []
    for file in files:
        if _load_file(session, file) == 0:
            warnings.append(Problem(str(file), 1, 1, None, "warning: the file holds no rules"))
    _check_shared_paths(session)
    _check_queues(session)
    if session.problems:
        raise RuleError(session.problems)
    return RuleSet(
        tuple(session.rules),
        files=tuple(str(f) for f in files),
        warnings=tuple(warnings),
        queues={q.name: q for q in session.queues},
    )


def _load_file(session: Session, file: FsPath) -> int | None:
    """Compile the documents of one file; how many it holds (None when it cannot be read)."""
    name = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        session.problems.append(Problem(name, 1, 1, None, f"cannot read rule file: {exc}"))
        return None
    count = 0
    try:
        for doc in read_documents(text):
            count += 1
            DocumentCompiler(session, name, doc).compile()
    except YamlProblem as exc:
        session.problems.append(Problem(name, exc.line, exc.column, None, str(exc)))
        return None
    return count


def _check_shared_paths(session: Session) -> None:
    """Rules that share a webhook path must authenticate it the same way."""
    first: dict[str, Rule] = {}
    for rule in session.rules:
        if rule.kind != "webhook":
            continue
        other = first.setdefault(rule.webhook.path, rule)
        if other is not rule and other.webhook.auth != rule.webhook.auth:
            file, doc = session.seen[rule.name]
            line, column = doc.where(("spec", "source", "webhook", "auth"))
            session.problems.append(
                Problem(
                    file,
                    line,
                    column,
                    rule.name,
                    f"source.webhook.auth differs from rule {other.name}, which shares "
                    f"path {rule.webhook.path}: rules on one path share its authentication",
                )
            )


def _check_queues(session: Session) -> None:
    """Each rule's `workflow.queue` names a declared queue that takes its namespace."""
    queues = {q.name: q for q in session.queues}
    for rule in session.rules:
        name = rule.workflow.queue
        if name is None:
            continue
        queue = queues.get(name)
        if queue is None and name in session.queues_seen:
            continue  # declared, but wrong: its own problems say why
        if queue is None:
            close = difflib.get_close_matches(name, session.queues_seen, n=1)
            hint = (
                f"; did you mean {close[0]!r}?"
                if close
                else f" (declared: {', '.join(sorted(queues))})"
                if queues
                else " (no `kind: Queue` document declares any)"
            )
            message = f"workflow.queue: unknown queue {name!r}{hint}"
        elif queue.namespaces is not None and rule.workflow.namespace not in queue.namespaces:
            message = (
                f"workflow.queue: queue {name!r} takes Workflows in namespace(s) "
                f"{', '.join(queue.namespaces)}, not {rule.workflow.namespace!r} "
                "(workflow.namespace): its semaphore lives beside the Workflow"
            )
        else:
            continue
        file, doc = session.seen[rule.name]
        line, column = doc.where(("spec", "workflow", "queue"))
        session.problems.append(Problem(file, line, column, rule.name, message))


__all__ = ["DNS1123_LABEL", "default_generate_name", "load_rules", "rule_files"]
