"""Kubernetes `CronJob` → a WorkflowTemplate with one container template and a cron rule.

The Job's pod template becomes the Workflow's: its (first) container the `main`
template's container, its volumes, service account and scheduling fields the Workflow
spec's own, and what Argo has no field for goes through the template's `podSpecPatch`. The
Job's `backoffLimit` becomes the template's `retryStrategy` (a new pod per attempt, as a
Job with `restartPolicy: Never` makes them), its `activeDeadlineSeconds` the Workflow's.
"""

from __future__ import annotations

import json
from typing import Any, Final

from trigger.rules.convert.cron import cron_source, schedules_of
from trigger.rules.convert.result import (
    Conversion,
    Origin,
    dns_name,
    namespace_of,
    rule_document,
    workflow_template,
)

# Pod spec fields the Workflow spec has under the same name.
_WORKFLOW_FIELDS: Final = (
    "serviceAccountName",
    "automountServiceAccountToken",
    "volumes",
    "nodeSelector",
    "tolerations",
    "affinity",
    "securityContext",
    "imagePullSecrets",
    "hostNetwork",
    "dnsPolicy",
    "dnsConfig",
    "hostAliases",
    "schedulerName",
)
_TEMPLATE_FIELDS: Final = ("activeDeadlineSeconds", "initContainers")
_POD_HANDLED: Final = frozenset(
    {
        *_WORKFLOW_FIELDS,
        *_TEMPLATE_FIELDS,
        "containers",
        "restartPolicy",
        "serviceAccount",
        "priorityClassName",
    }
)
_JOB_HANDLED: Final = frozenset(
    {"template", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"}
)
_CRON_HANDLED: Final = frozenset(
    {
        "schedule",
        "timeZone",
        "concurrencyPolicy",
        "startingDeadlineSeconds",
        "suspend",
        "jobTemplate",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    }
)
JOB_BACKOFF_LIMIT: Final = 6  # the Job's default


def convert(obj: dict[str, Any], origin: Origin) -> Conversion:
    out = Conversion()
    spec: dict[str, Any] = obj.get("spec") or {}
    schedules = schedules_of(spec, out, origin)
    job_template: dict[str, Any] = spec.get("jobTemplate") or {}
    pod: dict[str, Any] = ((job_template.get("spec") or {}).get("template") or {}).get("spec") or {}
    if not schedules or not pod.get("containers"):
        out.note(origin, "spec", "dropped", "no schedule or no container: not converted")
        out.skipped.append(origin)
        return out
    name = dns_name(origin.name)
    namespace = namespace_of(origin, out)
    # A CronJob with no deadline starts the latest missed run, as catchUp: latest does.
    cron = cron_source(
        spec, schedules, out, origin, timezone_key="timeZone", missed_default="latest"
    )
    for key in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        if key in spec:
            out.note(
                origin,
                f"spec.{key}",
                "dropped",
                "trigger keeps no history; the template's spec.ttlStrategy or podGC bound it",
            )
    for key in sorted(set(spec) - _CRON_HANDLED):
        out.note(origin, f"spec.{key}", "dropped", "not a CronJob field trigger knows")
    workflow: dict[str, Any] = {"template": name, "namespace": namespace}
    for key in ("labels", "annotations"):
        value = (job_template.get("metadata") or {}).get(key)
        if value:
            workflow[key] = {str(k): str(v) for k, v in value.items()}
    out.templates.append(
        workflow_template(name, namespace, _workflow_spec(job_template, pod, out, origin))
    )
    out.rules.append(rule_document(name, {"cron": cron}, workflow))
    out.converted.append(origin)
    return out


def _workflow_spec(
    job_template: dict[str, Any], pod: dict[str, Any], out: Conversion, origin: Origin
) -> dict[str, Any]:
    job: dict[str, Any] = job_template.get("spec") or {}
    base = "spec.jobTemplate.spec"
    wf: dict[str, Any] = {"entrypoint": "main"}
    template: dict[str, Any] = {"name": "main", "container": _main_container(pod, out, origin)}
    for key in _WORKFLOW_FIELDS:
        if key in pod:
            wf[key] = pod[key]
    if "serviceAccount" in pod and "serviceAccountName" not in pod:
        wf["serviceAccountName"] = pod["serviceAccount"]
    if "priorityClassName" in pod:
        wf["podPriorityClassName"] = pod["priorityClassName"]
    for key in _TEMPLATE_FIELDS:
        if key in pod:
            template[key] = pod[key]
    pod_meta = (job.get("template") or {}).get("metadata") or {}
    meta = {k: pod_meta[k] for k in ("labels", "annotations") if pod_meta.get(k)}
    if meta:
        wf["podMetadata"] = meta
    patch = {k: v for k, v in pod.items() if k not in _POD_HANDLED}
    if patch:
        template["podSpecPatch"] = json.dumps(patch, sort_keys=True)
        out.note(
            origin,
            f"{base}.template.spec",
            "changed",
            f"{', '.join(sorted(patch))}: no Workflow field of that name; applied through the "
            "template's podSpecPatch",
        )
    _retry(job, pod, template, out, origin)
    if "activeDeadlineSeconds" in job:
        wf["activeDeadlineSeconds"] = job["activeDeadlineSeconds"]
    if "ttlSecondsAfterFinished" in job:
        wf["ttlStrategy"] = {"secondsAfterCompletion": job["ttlSecondsAfterFinished"]}
    for key in sorted(set(job) - _JOB_HANDLED):
        value = job[key]
        if key in ("completions", "parallelism") and value == 1:
            continue
        out.note(
            origin,
            f"{base}.{key}",
            "dropped",
            "a Workflow runs its container once per attempt; Job completion modes, "
            "parallel completions and pod failure policies have no equivalent",
        )
    wf["templates"] = [template]
    return wf


def _main_container(pod: dict[str, Any], out: Conversion, origin: Origin) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod["containers"]
    main = {k: v for k, v in containers[0].items() if k != "name"}
    if len(containers) > 1:
        out.note(
            origin,
            "spec.jobTemplate.spec.template.spec.containers[1:]",
            "dropped",
            "a container template runs one container; the first is converted (make the "
            "others steps or sidecars of the template by hand)",
        )
    return main


def _retry(
    job: dict[str, Any],
    pod: dict[str, Any],
    template: dict[str, Any],
    out: Conversion,
    origin: Origin,
) -> None:
    limit = job.get("backoffLimit", JOB_BACKOFF_LIMIT)
    if isinstance(limit, int) and limit > 0:
        # The Job controller's own backoff: 10 s, doubling, at most 6 minutes. Argo's
        # schema types limit and factor as IntOrString, written as strings.
        template["retryStrategy"] = {
            "limit": str(limit),
            "retryPolicy": "OnFailure",
            "backoff": {"duration": "10s", "factor": "2", "cap": "6m"},
        }
    if pod.get("restartPolicy") == "OnFailure":
        out.note(
            origin,
            "spec.jobTemplate.spec.template.spec.restartPolicy",
            "changed",
            "OnFailure restarted the container in its pod; Argo retries in a new pod "
            f"(retryStrategy, limit {limit} from backoffLimit)",
        )
