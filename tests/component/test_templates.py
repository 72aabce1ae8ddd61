"""WorkflowTemplate awareness: the watched catalog against the API emulator, and the checks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient

from trigger.decoders.webhook import decode_webhook_file
from trigger.errors import ConfigError, TemporarySubmitError
from trigger.rules.loader import load_rules
from trigger.rules.render import render
from trigger.rules.router import RuleSet
from trigger.submit.templates import (
    Backoff,
    MalformedTemplate,
    TemplateCatalog,
    TemplateKey,
    TemplateMissing,
    TemplateParameter,
    check_rendered,
    check_rules,
    locate,
    parse_template,
    validate_against_cluster,
)
from trigger.testing.kubeapi import KubeEmulator

G, V = "argoproj.io", "v1alpha1"
WFT, CWFT = "workflowtemplates", "clusterworkflowtemplates"
DEADLINE = 10.0  # seconds: a hang fails the test instead of stalling the suite


def template(
    name: str,
    namespace: str | None = "data",
    *,
    kind: str = "WorkflowTemplate",
    parameters: list[Any] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    spec: dict[str, Any] = {
        "entrypoint": "main",
        "templates": [{"name": "main", "container": {"image": "busybox", "command": ["echo"]}}],
    }
    if parameters is not None:
        spec["arguments"] = {"parameters": parameters}
    return {"apiVersion": f"{G}/{V}", "kind": kind, "metadata": meta, "spec": spec}


def cluster_template(name: str, parameters: list[Any] | None = None) -> dict[str, Any]:
    return template(name, None, kind="ClusterWorkflowTemplate", parameters=parameters)


INGEST_PARAMETERS = [
    {"name": "input"},
    {"name": "day"},
    {"name": "mode", "value": "fast", "enum": ["fast", "slow"]},
    {"name": "retries", "default": "3"},
]

RULE = """\
apiVersion: trigger/v1
kind: Rule
metadata:
  name: {name}
spec:
  source:
    webhook: {{path: /hooks/{name}}}
  workflow:
    template: {template}
    namespace: data
    clusterScope: {cluster}
{parameters}"""


def rule_text(
    name: str = "ingest-csv",
    template_name: str = "ingest",
    *,
    cluster: bool = False,
    parameters: dict[str, str] | None = None,
) -> str:
    lines = ""
    if parameters:
        lines = "    parameters:\n" + "".join(f"      {k}: {v}\n" for k, v in parameters.items())
    return RULE.format(
        name=name, template=template_name, cluster=str(cluster).lower(), parameters=lines
    )


def load(tmp_path: Path, *documents: str) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text("---\n".join(documents))
    return load_rules([path])


def offline(*objects: Any) -> TemplateCatalog:
    return TemplateCatalog.from_objects(objects)


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(namespaces=["default", "data", "ml"]) as emulator:
        yield emulator


@pytest.fixture
async def api(kube: KubeEmulator) -> AsyncIterator[ApiClient]:
    async with ApiClient(kube.client_configuration()) as api_client:
        yield api_client


@contextlib.asynccontextmanager
async def running(catalog: TemplateCatalog) -> AsyncIterator[asyncio.Task[None]]:
    """Run the catalog until the block ends, failing if it does not sync in time."""
    task = asyncio.create_task(catalog.run())
    try:
        async with asyncio.timeout(DEADLINE):
            await catalog.wait_synced()
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def expecting(
    catalog: TemplateCatalog, key: TemplateKey, holds: Callable[[], bool]
) -> AsyncIterator[None]:
    """Subscribe, run the block, then wait (with a deadline) for a change of `key` after
    which `holds()` is true."""
    done = asyncio.Event()

    def seen(changed_key: TemplateKey) -> None:
        if changed_key == key and holds():
            done.set()

    unsubscribe = catalog.subscribe(seen)
    try:
        yield
        async with asyncio.timeout(DEADLINE):
            await done.wait()
    finally:
        unsubscribe()


class RecordingSleep:
    """An injected sleep that records the delays and runs an optional hook instead."""

    def __init__(self, hook: Callable[[], None] | None = None) -> None:
        self.delays: list[float] = []
        self.hook = hook

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.hook is not None:
            self.hook()
        await asyncio.sleep(0)


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"name": "input"}, TemplateParameter("input", False, None)),
        ({"name": "mode", "value": "fast"}, TemplateParameter("mode", True, None)),
        ({"name": "mode", "value": ""}, TemplateParameter("mode", True, None)),
        ({"name": "retries", "default": "3"}, TemplateParameter("retries", True, None)),
        (
            {"name": "cm", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
            TemplateParameter("cm", True, None),
        ),
        (
            {"name": "mode", "enum": ["fast", "slow"]},
            TemplateParameter("mode", False, ("fast", "slow")),
        ),
        ({"name": "n", "enum": [1, 2, True]}, TemplateParameter("n", False, ("1", "2", "true"))),
    ],
)
def test_parse_template_reads_parameters(raw: dict[str, Any], expected: TemplateParameter) -> None:
    """Each workflow parameter is read as (name, has default or value, enum as strings)."""
    info = parse_template(template("t", parameters=[raw]))
    assert info.parameters == (expected,)


@pytest.mark.parametrize(
    "obj",
    [
        "not an object",
        {"metadata": {}, "spec": {}},
        {"kind": "WorkflowTemplate", "metadata": {"name": "t"}, "spec": {}},
        template("t", parameters="nope"),  # type: ignore[arg-type]
        template("t", parameters=[{"value": "no name"}]),
        template("t", parameters=[{"name": "p", "enum": "fast"}]),
        template("t", parameters=[{"name": "p", "enum": [{"nested": 1}]}]),
        {**template("t"), "spec": ["a", "list"]},
    ],
)
def test_parse_template_refuses_malformed_objects(obj: Any) -> None:
    """A malformed template raises MalformedTemplate instead of anything else."""
    with pytest.raises(MalformedTemplate):
        parse_template(obj)


def test_from_objects_skips_malformed_templates() -> None:
    """The offline catalog keeps the readable templates and skips the broken ones."""
    catalog = offline(template("good"), template("bad", parameters=[{"value": "x"}]))
    assert catalog.get("data", "good", False) is not None
    assert catalog.get("data", "bad", False) is None
    assert catalog.synced


# --- the catalog over the emulator --------------------------------------------------------------


async def test_catalog_lists_namespaces_and_cluster_templates(
    kube: KubeEmulator, api: ApiClient
) -> None:
    """Templates of the configured namespaces and the cluster templates are listed; others not."""
    kube.put_object(G, V, WFT, template("ingest", "data", parameters=INGEST_PARAMETERS))
    kube.put_object(G, V, WFT, template("train", "ml"))
    kube.put_object(G, V, WFT, template("elsewhere", "default"))
    kube.put_object(G, V, CWFT, cluster_template("shared", [{"name": "x", "value": "1"}]))
    catalog = TemplateCatalog(api, namespaces=["data", "ml"], cluster_templates=True)
    async with running(catalog):
        ingest = catalog.get("data", "ingest", False)
        assert ingest is not None and [p.name for p in ingest.parameters] == [
            "input",
            "day",
            "mode",
            "retries",
        ]
        assert catalog.get("ml", "train", False) is not None
        assert catalog.get("default", "elsewhere", False) is None
        shared = catalog.get("anything", "shared", True)
        assert shared is not None and shared.cluster_scope
        assert len(catalog) == 3


async def test_catalog_without_namespaces_lists_all_namespaces(
    kube: KubeEmulator, api: ApiClient
) -> None:
    """namespaces=None lists WorkflowTemplates cluster-wide, with one request."""
    kube.put_object(G, V, WFT, template("ingest", "data"))
    kube.put_object(G, V, WFT, template("train", "ml"))
    catalog = TemplateCatalog(api, namespaces=None, cluster_templates=False)
    async with running(catalog):
        assert catalog.get("data", "ingest", False) is not None
        assert catalog.get("ml", "train", False) is not None
    assert kube.count(method="GET", path_contains=f"/apis/{G}/{V}/{WFT}?") >= 1
    assert kube.count(path_contains="/namespaces/") == 0


def _add(kube: KubeEmulator) -> None:
    kube.put_object(G, V, WFT, template("late", "data", parameters=[{"name": "p"}]))


def _modify(kube: KubeEmulator) -> None:
    kube.put_object(G, V, WFT, template("ingest", "data", parameters=[{"name": "changed"}]))


def _delete(kube: KubeEmulator) -> None:
    kube.delete_object(G, V, WFT, "ingest", "data")


def _has_param(name: str, param: str) -> Callable[[TemplateCatalog], bool]:
    def check(catalog: TemplateCatalog) -> bool:
        found = catalog.get("data", name, False)
        return found is not None and found.parameter(param) is not None

    return check


@pytest.mark.parametrize(
    ("change", "name", "holds"),
    [
        (_add, "late", _has_param("late", "p")),
        (_modify, "ingest", _has_param("ingest", "changed")),
        (_delete, "ingest", lambda c: c.get("data", "ingest", False) is None),
    ],
    ids=["added", "modified", "deleted"],
)
async def test_watch_sees_changes_after_sync(
    kube: KubeEmulator,
    api: ApiClient,
    change: Callable[[KubeEmulator], None],
    name: str,
    holds: Callable[[TemplateCatalog], bool],
) -> None:
    """A template added, modified or deleted after sync reaches the catalog and subscribers."""
    kube.put_object(G, V, WFT, template("ingest", "data", parameters=INGEST_PARAMETERS))
    catalog = TemplateCatalog(api, namespaces=["data"], cluster_templates=False)
    async with running(catalog):
        assert not holds(catalog)
        async with expecting(catalog, TemplateKey("data", name, False), lambda: holds(catalog)):
            change(kube)
    assert holds(catalog)


async def test_cluster_template_changes_are_watched(kube: KubeEmulator, api: ApiClient) -> None:
    """A ClusterWorkflowTemplate created after sync is seen under its cluster key."""
    catalog = TemplateCatalog(api, namespaces=["data"], cluster_templates=True)
    async with running(catalog):
        key = TemplateKey("", "shared", True)
        async with expecting(catalog, key, lambda: catalog.get("", "shared", True) is not None):
            kube.put_object(G, V, CWFT, cluster_template("shared"))
    assert catalog.get("data", "shared", False) is None


async def test_gone_on_watch_resume_relists(kube: KubeEmulator, api: ApiClient) -> None:
    """A watch resumed from a compacted resourceVersion gets 410 and re-lists what it missed."""
    kube.put_object(G, V, WFT, template("old", "data"))

    def meanwhile() -> None:  # while the catalog backs off, the cluster moves on and compacts
        kube.delete_object(G, V, WFT, "old", "data")
        kube.put_object(G, V, WFT, template("new", "data"))
        kube.compact()

    kube.inject(500, count=1, method="GET", path_contains="watch=True")
    sleep = RecordingSleep(meanwhile)
    catalog = TemplateCatalog(api, namespaces=["data"], cluster_templates=False, sleep=sleep)
    relisted = asyncio.Event()
    catalog.subscribe(lambda key: relisted.set() if key.name == "new" else None)
    async with running(catalog):
        async with asyncio.timeout(DEADLINE):
            await relisted.wait()
        assert catalog.get("data", "new", False) is not None
        assert catalog.get("data", "old", False) is None
    lists = [r for r in kube.requests if r[0] == "GET" and "watch=" not in r[2]]
    assert len(lists) == 2
    assert sleep.delays == [1.0]


async def test_list_failures_back_off_with_the_injected_sleep(
    kube: KubeEmulator, api: ApiClient
) -> None:
    """Failed lists are retried after growing backoff delays, through the injected sleep."""
    kube.put_object(G, V, WFT, template("ingest", "data"))
    kube.inject(500, count=3, method="GET", path_contains=f"/namespaces/data/{WFT}")
    sleep = RecordingSleep()
    catalog = TemplateCatalog(
        api,
        namespaces=["data"],
        cluster_templates=False,
        sleep=sleep,
        backoff=Backoff(initial=0.5, factor=2, max=1.5),
    )
    async with running(catalog):
        assert catalog.get("data", "ingest", False) is not None
    assert sleep.delays == [0.5, 1.0, 1.5]


async def test_malformed_template_does_not_stop_the_watch(
    kube: KubeEmulator, api: ApiClient
) -> None:
    """A malformed template, listed or watched, is skipped and later changes still arrive."""
    kube.put_object(G, V, WFT, template("broken", "data", parameters=[{"value": "no name"}]))
    catalog = TemplateCatalog(api, namespaces=["data"], cluster_templates=False)
    async with running(catalog) as task:
        assert catalog.get("data", "broken", False) is None
        key = TemplateKey("data", "fine", False)
        async with expecting(catalog, key, lambda: catalog.get("data", "fine", False) is not None):
            kube.put_object(G, V, WFT, template("also-broken", "data", parameters="x"))  # type: ignore[arg-type]
            kube.put_object(G, V, WFT, template("fine", "data"))
        assert not task.done()
        assert catalog.get("data", "also-broken", False) is None


async def test_watch_requests_cycle_with_timeout_seconds(
    kube: KubeEmulator, api: ApiClient
) -> None:
    """Every watch asks the server for timeoutSeconds, so streams end and resume."""
    catalog = TemplateCatalog(api, namespaces=["data"], cluster_templates=False, watch_timeout=42)
    async with running(catalog):
        async with asyncio.timeout(DEADLINE):
            await kube.wait_watching()
    watches = [q for m, _, q in kube.requests if "watch=True" in q]
    assert watches and all("timeoutSeconds=42" in q for q in watches)


async def test_run_cancels_cleanly_and_reraises(kube: KubeEmulator, api: ApiClient) -> None:
    """Cancelling run() ends it with CancelledError."""
    catalog = TemplateCatalog(api, namespaces=["data"], cluster_templates=True)
    task = asyncio.create_task(catalog.run())
    async with asyncio.timeout(DEADLINE):
        await catalog.wait_synced()
        await kube.wait_watching(2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_catalog_from_configuration_owns_its_client(kube: KubeEmulator) -> None:
    """Given only a Configuration, the catalog opens (and closes) its own ApiClient."""
    kube.put_object(G, V, WFT, template("ingest", "data"))
    catalog = TemplateCatalog(
        configuration=kube.client_configuration(), namespaces=["data"], cluster_templates=False
    )
    async with running(catalog):
        assert catalog.get("data", "ingest", False) is not None


# --- load-time checks ----------------------------------------------------------------------


def test_missing_template_is_an_error(tmp_path: Path) -> None:
    """A rule whose WorkflowTemplate does not exist gets an error on workflow.template."""
    rules = load(tmp_path, rule_text(parameters={"input": "x"}))
    problems = check_rules(rules, offline(template("other")))
    assert [(p.field, p.severity, p.message) for p in problems] == [
        ("workflow.template", "error", "WorkflowTemplate data/ingest not found")
    ]
    located = locate(problems[0], rules)
    assert (located.line, located.column) == (9, 15)


def test_missing_required_parameter_is_located(tmp_path: Path) -> None:
    """A required template parameter the rule does not supply is an error at `parameters:`."""
    rules = load(
        tmp_path,
        rule_text("first", parameters={"day": "monday"}),
        rule_text("second", parameters={"input": "x"}),
    )
    problems = check_rules(rules, offline(template("ingest", parameters=INGEST_PARAMETERS)))
    assert [(p.rule, p.severity) for p in problems] == [("first", "error"), ("second", "error")]
    assert "missing input" in problems[0].message and "day" not in problems[0].message
    assert "missing day" in problems[1].message
    located = [str(locate(p, rules)) for p in problems]
    assert located[0].startswith(f"{tmp_path / 'rules.yaml'}:12:5: rule first: ")
    assert located[1].startswith(f"{tmp_path / 'rules.yaml'}:26:5: rule second: ")


def test_missing_parameters_without_a_parameters_block_point_at_workflow(tmp_path: Path) -> None:
    """With no `parameters:` at all, the missing-parameter error points at `workflow:`."""
    rules = load(tmp_path, rule_text())
    problems = check_rules(rules, offline(template("ingest", parameters=INGEST_PARAMETERS)))
    assert "missing input, day" in problems[0].message
    located = locate(problems[0], rules)
    assert (located.line, located.column) == (8, 3)


def test_undeclared_parameter_is_a_warning(tmp_path: Path) -> None:
    """A rule parameter the template does not declare is a warning at that parameter."""
    rules = load(tmp_path, rule_text(parameters={"input": "x", "day": "d", "extra": "1"}))
    problems = check_rules(rules, offline(template("ingest", parameters=INGEST_PARAMETERS)))
    assert [(p.field, p.severity) for p in problems] == [("workflow.parameters.extra", "warning")]
    located = locate(problems[0], rules)
    assert (located.line, located.column) == (15, 14)
    assert located.message.startswith("warning: workflow.parameters.extra:")


@pytest.mark.parametrize(
    ("value", "problems"),
    [
        ("fast", 0),
        ("slow", 0),
        ("turbo", 1),
        ("'{{ event.body.mode }}'", 0),  # templated: only known at submit time
    ],
)
def test_literal_values_are_checked_against_the_enum(
    tmp_path: Path, value: str, problems: int
) -> None:
    """A literal value outside the template's enum is an error; templated values are not checked."""
    rules = load(tmp_path, rule_text(parameters={"input": "x", "day": "d", "mode": value}))
    found = check_rules(rules, offline(template("ingest", parameters=INGEST_PARAMETERS)))
    assert len(found) == problems
    if problems:
        assert found[0].field == "workflow.parameters.mode"
        assert "'turbo' is not allowed" in found[0].message
        located = locate(found[0], rules)
        assert (located.line, located.column) == (15, 13)


@pytest.mark.parametrize(
    ("cluster", "objects", "found"),
    [
        (True, [cluster_template("ingest")], True),
        (True, [template("ingest", "data")], False),
        (False, [cluster_template("ingest")], False),
        (False, [template("ingest", "data")], True),
        (False, [template("ingest", "ml")], False),
    ],
)
def test_cluster_scope_selects_the_template_kind(
    tmp_path: Path, cluster: bool, objects: list[Any], found: bool
) -> None:
    """clusterScope looks up a ClusterWorkflowTemplate, otherwise one in the rule's namespace."""
    rules = load(tmp_path, rule_text(cluster=cluster))
    problems = check_rules(rules, offline(*objects))
    assert (problems == []) is found
    if not found:
        kind = "ClusterWorkflowTemplate ingest" if cluster else "WorkflowTemplate data/ingest"
        assert problems[0].message == f"{kind} not found"


# --- submit-time checks --------------------------------------------------------------------


def rendered(tmp_path: Path, mode: str, *, cluster: bool = False) -> dict[str, Any]:
    rules = load(
        tmp_path,
        rule_text(
            cluster=cluster,
            parameters={"input": "x", "day": "d", "mode": "'{{ event.body.mode }}'"},
        ),
    )
    event = decode_webhook_file({"webhook": {"path": "/hooks/ingest-csv", "body": {"mode": mode}}})
    return render(rules.rules[0], event)


@pytest.mark.parametrize(("mode", "refused"), [("slow", False), ("turbo", True)])
def test_check_rendered_enforces_enums(tmp_path: Path, mode: str, refused: bool) -> None:
    """A rendered value outside the enum is reported; an allowed one is not."""
    catalog = offline(template("ingest", parameters=INGEST_PARAMETERS))
    message = check_rendered(rendered(tmp_path, mode), catalog)
    if refused:
        assert message == (
            "parameter mode: 'turbo' is not allowed by WorkflowTemplate "
            "data/ingest (enum: fast, slow)"
        )
    else:
        assert message is None


def test_check_rendered_resolves_cluster_templates(tmp_path: Path) -> None:
    """A Workflow referencing a ClusterWorkflowTemplate is checked against that template."""
    catalog = offline(cluster_template("ingest", INGEST_PARAMETERS))
    message = check_rendered(rendered(tmp_path, "turbo", cluster=True), catalog)
    assert message is not None and "ClusterWorkflowTemplate ingest" in message


def test_check_rendered_raises_template_missing(tmp_path: Path) -> None:
    """A missing template is TemplateMissing, a temporary submit error."""
    with pytest.raises(TemplateMissing) as caught:
        check_rendered(rendered(tmp_path, "fast"), offline(template("other")))
    assert isinstance(caught.value, TemporarySubmitError)
    assert caught.value.key == TemplateKey("data", "ingest", False)


async def test_check_rendered_waits_for_a_synced_catalog(tmp_path: Path, api: ApiClient) -> None:
    """Before the first list, no template is reported missing."""
    catalog = TemplateCatalog(api, namespaces=["data"])
    assert check_rendered(rendered(tmp_path, "turbo"), catalog) is None


# --- validate --cluster --------------------------------------------------------------------


async def test_validate_against_cluster_reports_located_problems(
    tmp_path: Path, kube: KubeEmulator, api: ApiClient
) -> None:
    """One list, then every problem located, warnings marked as such."""
    kube.put_object(G, V, WFT, template("ingest", "data", parameters=INGEST_PARAMETERS))
    kube.put_object(G, V, CWFT, cluster_template("shared", [{"name": "x"}]))
    rules = load(
        tmp_path,
        rule_text("ok", parameters={"input": "i", "day": "d"}),
        rule_text("extra", parameters={"input": "i", "day": "d", "zzz": "1"}),
        rule_text("cluster", "shared", cluster=True),
        rule_text("gone", "missing"),
    )
    problems = await validate_against_cluster(rules, api)
    file = tmp_path / "rules.yaml"
    assert [str(p) for p in problems] == [
        f"{file}:30:12: rule extra: warning: workflow.parameters.zzz: WorkflowTemplate "
        "data/ingest declares no parameter 'zzz'",
        f"{file}:39:3: rule cluster: workflow.parameters: missing x, required by "
        "ClusterWorkflowTemplate shared (no default)",
        f"{file}:52:15: rule gone: WorkflowTemplate data/missing not found",
    ]
    assert kube.count(path_contains="watch=") == 0


async def test_validate_against_cluster_fails_when_it_cannot_list(
    tmp_path: Path, kube: KubeEmulator, api: ApiClient
) -> None:
    """A list the server refuses is a ConfigError naming what could not be listed."""
    kube.inject(403, count=1, path_contains=WFT)
    rules = load(tmp_path, rule_text())
    with pytest.raises(ConfigError, match="WorkflowTemplates in data: 403"):
        await validate_against_cluster(rules, api)


CHAIN = """\
apiVersion: trigger/v1
kind: Rule
metadata:
  name: report
spec:
  source:
    workflow: {namespace: data, templates: [load], phases: [Succeeded]}
  workflow:
    template: report
    namespace: data
    parameters:
      table: "{{ event.outputs.table }}"
      rows: "{{ event.outputs.rowz }}"
"""


def test_chained_rule_uses_only_declared_outputs(tmp_path: Path) -> None:
    """A chain's `event.outputs.NAME` must be an output parameter its upstream declares."""
    load_template = template("load")
    main = load_template["spec"]["templates"][0]
    main["outputs"] = {"parameters": [{"name": "table"}, {"name": "rows"}]}
    report = template("report", parameters=[{"name": "table"}, {"name": "rows"}])
    rules = load(tmp_path, CHAIN)
    problems = check_rules(rules, offline(load_template, report))
    assert [(p.field, p.severity) for p in problems] == [("workflow.parameters.rows", "error")]
    assert "declares no output parameter 'rowz' (it declares: table, rows)" in problems[0].message
    # Without the upstream template in the catalog, nothing is known, nothing is said.
    assert check_rules(rules, offline(report)) == []
