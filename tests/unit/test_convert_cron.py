"""`trigger convert` for Argo CronWorkflows and Kubernetes CronJobs."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import WorkflowChecker
from tests.convert_helpers import convert_fixtures, load, notes, original, resolve, workflows
from trigger.rules.convert import Origin, cronjob, cronworkflow
from trigger.rules.convert.writer import files
from trigger.rules.loader import load_rules

MULTIPLE = "argo-cron-workflow-multiple-schedules.yaml"


def test_cron_workflow_carries_its_schedules_and_policies(tmp_path: Path) -> None:
    """The multiple-schedules example keeps its schedules, zone, policy and no catch-up."""
    conversion = convert_fixtures(MULTIPLE)
    rules = load(conversion, tmp_path)
    rule = rules.by_name["hello-world-multiple-schedules"]
    (doc,) = conversion.rules
    assert doc["spec"]["source"]["cron"] == {
        "schedules": ["*/3 * * * 1-5", "*/2 * * * *"],
        "timezone": "America/Los_Angeles",
        "catchUp": "none",  # startingDeadlineSeconds: 0 runs no missed Workflow
        "concurrencyPolicy": "Replace",
    }
    assert rule.kind == "cron"
    dropped = {path for path, severity, _ in notes(conversion) if severity == "dropped"}
    assert dropped == {"spec.successfulJobsHistoryLimit", "spec.failedJobsHistoryLimit"}


def test_cron_workflow_tick_creates_the_original_workflow(
    tmp_path: Path, valid_workflow: WorkflowChecker
) -> None:
    """A tick creates the CronWorkflow's workflowSpec, {{workflow.scheduledTime}} filled in."""
    conversion = convert_fixtures(MULTIPLE)
    rules = load(conversion, tmp_path)
    tick = "2025-01-06T18:00:00Z"
    (workflow,) = workflows(
        rules, {"cron": {"rule": "hello-world-multiple-schedules", "scheduledTime": tick}}
    )
    ran = resolve(workflow, conversion)
    valid_workflow(ran)
    expected = original(MULTIPLE)["spec"]["workflowSpec"]
    expected["templates"][0]["container"]["args"] = [f"🕓 hello world. Scheduled on: {tick}"]
    assert ran["spec"]["templates"] == expected["templates"]
    assert ran["spec"]["entrypoint"] == expected["entrypoint"]
    assert ran["metadata"]["name"].startswith("hello-world-multiple-schedules-")


def test_cron_workflow_of_a_template_refers_to_it(tmp_path: Path) -> None:
    """A workflowSpec that is only a workflowTemplateRef needs no new template."""
    conversion = convert_fixtures("argo-cron-backfill.yaml")
    rules = load(conversion, tmp_path)
    assert conversion.templates == []
    (workflow,) = workflows(
        rules, {"cron": {"rule": "daily-job", "scheduledTime": "2025-01-02T02:00:00Z"}}
    )
    assert workflow["spec"] == original("argo-cron-backfill.yaml", 1)["spec"]["workflowSpec"]
    kinds = {(n.origin.kind, n.severity) for n in conversion.notes}
    assert ("Workflow", "dropped") in kinds and ("WorkflowTemplate", "manual") in kinds


def test_cron_workflow_when_is_reported(tmp_path: Path) -> None:
    """`when` has no equivalent and the report says why, naming the field."""
    conversion = convert_fixtures("argo-cron-when.yaml")
    load(conversion, tmp_path)
    (when,) = [n for n in conversion.notes if n.path == "spec.when"]
    assert when.severity == "dropped" and "per-tick condition" in when.message
    assert (
        conversion.templates[0]["spec"] == original("argo-cron-when.yaml")["spec"]["workflowSpec"]
    )


def test_cronjob_becomes_one_container_template(
    tmp_path: Path, valid_workflow: WorkflowChecker
) -> None:
    """The docs' CronJob runs its container in a Workflow, backoffLimit as retryStrategy."""
    conversion = convert_fixtures("k8s-cronjob.yaml")
    rules = load(conversion, tmp_path)
    (workflow,) = workflows(
        rules, {"cron": {"rule": "hello", "scheduledTime": "2025-01-01T00:01:00Z"}}
    )
    ran = resolve(workflow, conversion)
    valid_workflow(ran)
    pod = original("k8s-cronjob.yaml")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (template,) = ran["spec"]["templates"]
    container = dict(pod["containers"][0])
    del container["name"]
    assert template["container"] == container
    assert template["retryStrategy"]["limit"] == "6"  # the Job's default backoffLimit
    assert rules.by_name["hello"].cron.schedules == ["* * * * *"]
    restart = [n for n in conversion.notes if n.path.endswith("restartPolicy")]
    assert restart and restart[0].severity == "changed"


def test_cronjob_pod_fields_land_on_the_workflow(
    tmp_path: Path, valid_workflow: WorkflowChecker
) -> None:
    """Volumes, service account, deadlines, TTL, labels and zone carry over; the rest is reported."""
    conversion = convert_fixtures("k8s-cronjob.yaml")
    rules = load(conversion, tmp_path)
    (workflow,) = workflows(
        rules, {"cron": {"rule": "nightly-export", "scheduledTime": "2025-01-01T18:30:00Z"}}
    )
    ran = resolve(workflow, conversion)
    valid_workflow(ran)
    spec = ran["spec"]
    assert spec["serviceAccountName"] == "exporter"
    assert spec["volumes"] == [{"name": "scratch", "emptyDir": {}}]
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["ttlStrategy"] == {"secondsAfterCompletion": 86400}
    assert spec["podMetadata"] == {"labels": {"app": "export"}}
    assert spec["templates"][0]["podSpecPatch"] == '{"terminationGracePeriodSeconds": 60}'
    assert workflow["metadata"]["namespace"] == "data"
    assert workflow["metadata"]["labels"]["team"] == "data"
    cron = next(r for r in conversion.rules if r["metadata"]["name"] == "nightly-export")
    assert cron["spec"]["source"]["cron"] == {
        "schedules": ["30 2 * * *"],
        "timezone": "Asia/Shanghai",
        "startingDeadline": "10m",
        "catchUp": "latest",
        "concurrencyPolicy": "Forbid",
    }


ZONES = st.sampled_from(["UTC", "Asia/Shanghai", "Europe/Berlin", "America/Los_Angeles", None])
FIELD = st.sampled_from(["*", "0", "5", "*/15", "1-5", "0,30"])
SCHEDULE = st.builds(
    lambda m, h, dow: f"{m} {h} * * {dow}",
    FIELD,
    st.sampled_from(["*", "2", "*/6", "9-17"]),
    st.sampled_from(["*", "1-5", "0"]),
)


@st.composite
def cron_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A CronWorkflow or a CronJob with any combination of the fields a cron rule carries."""
    job = draw(st.booleans())
    spec: dict[str, Any] = (
        {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}}
        if job
        else {"workflowSpec": {"entrypoint": "m", "templates": [{"name": "m"}]}}
    )
    schedules = draw(st.lists(SCHEDULE, min_size=1, max_size=1 if job else 3, unique=True))
    if not job and (len(schedules) > 1 or draw(st.booleans())):
        spec["schedules"] = schedules
    else:
        spec["schedule"] = schedules[0]  # a CronJob's, and a CronWorkflow's before Argo 3.6
    for key, strategy in (
        ("timeZone" if job else "timezone", ZONES),
        ("concurrencyPolicy", st.sampled_from(["Allow", "Forbid", "Replace", None])),
        ("startingDeadlineSeconds", st.sampled_from([0, 30, 600, 7200, None])),
        ("suspend", st.sampled_from([True, False, None])),
    ):
        value = draw(strategy)
        if value is not None:
            spec[key] = value
    name = draw(st.text(string.ascii_lowercase, min_size=1, max_size=20))
    kind = "CronJob" if job else "CronWorkflow"
    return {"kind": kind, "metadata": {"name": name}, "spec": spec}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cron_objects())
def test_any_cron_object_converts_to_a_valid_equivalent_rule(
    tmp_path_factory: Any, cron: dict[str, Any]
) -> None:
    """Every schedule/zone/policy/deadline/suspend combination validates and keeps its meaning."""
    origin = Origin("gen.yaml", cron["kind"], cron["metadata"]["name"])
    job = cron["kind"] == "CronJob"
    conversion = (cronjob if job else cronworkflow).convert(cron, origin)
    directory = tmp_path_factory.mktemp("cron")
    for name, text in files(conversion).items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    rule = load_rules([directory / "rules"]).by_name[cron["metadata"]["name"]]
    spec = cron["spec"]
    source = rule.cron
    assert source.schedules == spec.get("schedules", [spec.get("schedule")])
    assert source.timezone == spec.get("timeZone" if job else "timezone", "UTC")
    assert source.concurrencyPolicy == spec.get("concurrencyPolicy", "Allow")
    assert source.suspend is spec.get("suspend", False)
    deadline = spec.get("startingDeadlineSeconds") or 0
    # Missed runs: a CronWorkflow with no deadline runs none, a CronJob the latest; a
    # deadline of 0 lets neither start a late run.
    unset = "startingDeadlineSeconds" not in spec
    assert source.catchUp == ("latest" if deadline or (job and unset) else "none")
    assert source.startingDeadline == (float(deadline) if deadline else None)
