"""Template problems as `file:line:column`, and `trigger validate --cluster`.

`locate` reads a rule file again to point a `TemplateProblem` at the line that causes it;
`validate_against_cluster` lists the templates once and checks every rule against them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Final

from kubernetes_asyncio import client

from trigger.errors import Problem
from trigger.rules.router import RuleSet
from trigger.rules.yamldoc import Document, Path, YamlProblem, read_documents
from trigger.submit.templates.catalog import TemplateCatalog
from trigger.submit.templates.checks import TemplateProblem, check_rules

_FILE_UNREADABLE: Final = ()
Documents = dict[str, tuple[Document, ...]]


def _documents(file: str, cache: Documents) -> tuple[Document, ...]:
    if file not in cache:
        try:
            text = FsPath(file).read_text(encoding="utf-8")
            cache[file] = tuple(read_documents(text))
        except (OSError, UnicodeDecodeError, YamlProblem):
            cache[file] = _FILE_UNREADABLE  # the file changed since it was loaded
    return cache[file]


def _path(where: str) -> tuple[Path, bool]:
    """The document path of a problem's field, and whether to point at the key."""
    prefix = "workflow.parameters."
    if where.startswith(prefix):
        return ("spec", "workflow", "parameters", where[len(prefix) :]), False
    if where == "workflow.parameters":
        return ("spec", "workflow", "parameters"), True
    return ("spec", *where.split(".")), False


def locate(
    problem: TemplateProblem, rules: RuleSet | None = None, *, documents: Documents | None = None
) -> Problem:
    """The problem as a `file:line:column` Problem; warnings start with "warning: ".

    The rule file is read again (positions are only kept while loading); pass one
    `documents` dict to read each file once for many problems.
    """
    rule = rules.by_name.get(problem.rule) if rules is not None else None
    file, index = (rule.file, rule.index) if rule is not None else (problem.file, problem.index)
    line, column = 1, 1
    doc = next(
        (d for d in _documents(file, {} if documents is None else documents) if d.index == index),
        None,
    )
    if doc is not None:
        path, key = _path(problem.field)
        line, column = doc.where(path, key=key)
    prefix = "warning: " if problem.severity == "warning" else ""
    return Problem(file, line, column, problem.rule, prefix + problem.message)


async def validate_against_cluster(
    rules: RuleSet, api_client: client.ApiClient, *, namespaces: Sequence[str] | None = None
) -> list[Problem]:
    """List the templates once and check every rule against them.

    `namespaces` None lists only the namespaces the rules name (least privilege); cluster
    templates are listed only when a rule uses one. Raises ConfigError when a list fails.
    """
    if namespaces is None:
        namespaces = sorted(
            {r.workflow.namespace for r in rules.rules if not r.workflow.clusterScope}
        )
    catalog = TemplateCatalog(
        api_client,
        namespaces=namespaces,
        cluster_templates=any(r.workflow.clusterScope for r in rules.rules),
    )
    await catalog.load()
    documents: Documents = {}
    return [locate(p, rules, documents=documents) for p in check_rules(rules, catalog)]
