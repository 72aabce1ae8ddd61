"""The container image and the Helm chart: rendered and linted with real Helm.

Helm is Helm v4's Go SDK, linked in-process from the PyPI package `helm-python-sdk`
(module `helm_python`, which bundles `libhelm_c.so`; no `helm` binary, no download).
Rendering is `helm template`: the same engine, values coalescing and `fail` handling.
Every rendered object must survive a lossless round trip through the Kubernetes models of
kubernetes-asyncio (a misspelt or misplaced field is dropped and fails the comparison),
and its pod parts validate against the io.k8s definitions in Argo's JSON schema when
../shared is present. The Dockerfile is not built here (no Docker): it is parsed.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from trigger.rules.loader import load_rules
from trigger.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "trigger"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ARGO_SCHEMA = REPO.parent / "shared" / "argo" / "schema.json"
RELEASE, NAMESPACE = "trig", "jobs"
FULLNAME = f"{RELEASE}-trigger"

CRON_RULE = """\
apiVersion: trigger/v1
kind: Rule
metadata:
  name: nightly-report
spec:
  source:
    cron:
      schedules: ["0 2 * * *"]
      timezone: Asia/Shanghai
      concurrencyPolicy: Forbid
  workflow:
    template: daily-report
    namespace: data
    parameters:
      day: "{{ event.scheduledTime | strftime('%Y-%m-%d', 'Asia/Shanghai') }}"
"""
WEBHOOK_RULE = """\
apiVersion: trigger/v1
kind: Rule
metadata:
  name: deploy-on-push
spec:
  source:
    webhook:
      path: /hooks/github
      auth: {hmacSecretEnv: GITHUB_WEBHOOK_SECRET, hmacHeader: X-Hub-Signature-256}
  workflow:
    template: deploy-pipelines
    namespace: ci
    parameters:
      commit: "{{ event.body.after }}"
"""
BASE: dict[str, Any] = {
    "rules": {"files": {"nightly.yaml": CRON_RULE, "deploy.yaml": WEBHOOK_RULE}}
}

Rule = tuple[str, str, str, str, tuple[str, ...], tuple[str, ...]]
"""(Role|ClusterRole, namespace, apiGroup, resource, verbs, resourceNames), one per grant."""


def workflows(ns: str, *, watch: bool = False) -> Rule:
    verbs = ("create", "get", "list", "patch", *(("watch",) if watch else ()))
    return ("Role", ns, "argoproj.io", "workflows", verbs, ())


def finished(ns: str) -> Rule:
    """The workflow source's grant where no Workflow is created."""
    return ("Role", ns, "argoproj.io", "workflows", ("list", "watch"), ())


def templates(ns: str) -> Rule:
    return ("Role", ns, "argoproj.io", "workflowtemplates", ("list", "watch"), ())


LEASE = {
    ("Role", NAMESPACE, "coordination.k8s.io", "leases", ("get", "update"), (FULLNAME,)),
    ("Role", NAMESPACE, "coordination.k8s.io", "leases", ("create",), ()),
}


def state(ns: str = NAMESPACE) -> set[Rule]:
    # One ConfigMap per state key, named from the key: no resourceNames can list them.
    return {("Role", ns, "", "configmaps", ("create", "get", "list", "update"), ())}


def queues(ns: str) -> set[Rule]:
    """The queue keeper's grants: get/update its one ConfigMap by name, create any."""
    return {
        ("Role", ns, "", "configmaps", ("get", "update"), ("trigger-queues",)),
        ("Role", ns, "", "configmaps", ("create",), ()),
    }


QUEUE_FILE = """\
apiVersion: trigger/v1
kind: Queue
metadata: {name: nightly}
spec: {limit: 2, namespaces: [data]}
"""


CLUSTER_TEMPLATES: Rule = (
    "ClusterRole",
    "",
    "argoproj.io",
    "clusterworkflowtemplates",
    ("list", "watch"),
    (),
)

SCENARIOS: dict[str, tuple[dict[str, Any], set[Rule]]] = {
    "defaults": ({}, {workflows(NAMESPACE), templates(NAMESPACE), *LEASE, *state()}),
    "one replica": ({"replicas": 1}, {workflows(NAMESPACE), templates(NAMESPACE), *state()}),
    "cluster templates": (
        {"clusterWorkflowTemplates": True},
        {workflows(NAMESPACE), templates(NAMESPACE), CLUSTER_TEMPLATES, *LEASE, *state()},
    ),
    "several namespaces": (
        {"workflowNamespaces": ["ci", "data", "ci"]},
        {workflows("ci"), workflows("data"), templates("ci"), templates("data"), *LEASE, *state()},
    ),
    "several namespaces, cluster templates": (
        {"workflowNamespaces": ["ci", "data"], "clusterWorkflowTemplates": True},
        {
            workflows("ci"),
            workflows("data"),
            templates("ci"),
            templates("data"),
            CLUSTER_TEMPLATES,
            *LEASE,
            *state(),
        },
    ),
    "state file": (
        {"state": "file:/var/lib/trigger/state.json", "replicas": 1},
        {workflows(NAMESPACE), templates(NAMESPACE)},
    ),
    "state in another namespace": (
        {"state": "kubernetes:ops/trigger-state"},
        {workflows(NAMESPACE), templates(NAMESPACE), *LEASE, *state("ops")},
    ),
    "template checks off": (
        {"clusterWorkflowTemplates": True, "checkTemplates": False},
        {workflows(NAMESPACE), *LEASE, *state()},
    ),
    "chains in the release namespace and another": (
        {"workflowSource": {"namespaces": [NAMESPACE, "data"]}},
        {
            workflows(NAMESPACE, watch=True),
            finished("data"),
            templates(NAMESPACE),
            *LEASE,
            *state(),
        },
    ),
    "chains everywhere": (
        {"workflowSource": {"namespaces": ["*"]}, "clusterWorkflowTemplates": True},
        {
            workflows(NAMESPACE),
            templates(NAMESPACE),
            CLUSTER_TEMPLATES,
            ("ClusterRole", "", "argoproj.io", "workflows", ("list", "watch"), ()),
            *LEASE,
            *state(),
        },
    ),
    "everything on": (
        {},  # FULL below, filled in after it is defined
        {
            workflows("ci", watch=True),
            workflows("data"),
            templates("ci"),
            templates("data"),
            finished("ops"),
            CLUSTER_TEMPLATES,
            *LEASE,
            *state(),
        },
    ),
    "queues declared inline": (
        {
            "workflowNamespaces": ["ci", "data"],
            "rules": {"files": {**BASE["rules"]["files"], "queues.yaml": QUEUE_FILE}},
        },
        {
            workflows("ci"),
            workflows("data"),
            templates("ci"),
            templates("data"),
            *queues("ci"),
            *queues("data"),
            *LEASE,
            *state(),
        },
    ),
    "queues in an existing rules ConfigMap": (
        {"rules": {"files": {}, "existingConfigMap": "my-rules"}, "queues": True},
        {workflows(NAMESPACE), templates(NAMESPACE), *queues(NAMESPACE), *LEASE, *state()},
    ),
    "queues turned off": (
        {"rules": {"files": {"queues.yaml": QUEUE_FILE}}, "queues": False},
        {workflows(NAMESPACE), templates(NAMESPACE), *LEASE, *state()},
    ),
    "argo-server sink": (
        {
            "sink": "argo-server:https://argo:2746",
            "replicas": 1,
            "state": "file:/var/lib/trigger/s.json",
        },
        set(),
    ),
}

# Every optional part of the chart on, and every value given: what a production install
# with an Ingress, a NetworkPolicy, Prometheus and SASL Kafka looks like.
FULL: dict[str, Any] = {
    "image": {"repository": "registry.example.com/trigger", "tag": "0.1.0", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "registry"}],
    "replicas": 3,
    "workflowNamespaces": ["ci", "data"],
    "workflowSource": {"namespaces": ["ci", "ops"]},
    "clusterWorkflowTemplates": True,
    "config": {
        "log": {"level": "info", "format": "json"},
        "leader": {"lease_duration": "20s"},
        "submit": {"max_in_flight": 32},
        "kafka": {
            "clusters": {
                "default": {
                    "bootstrap_servers": "kafka.example.com:9093",
                    "security_protocol": "SASL_SSL",
                    "sasl_mechanism": "SCRAM-SHA-512",
                    "sasl_username": "trigger",
                    "sasl_password_env": "KAFKA_PASSWORD",
                }
            }
        },
    },
    "extraEnvFrom": [{"secretRef": {"name": "trigger-secrets"}}],
    "extraEnv": [{"name": "TRIGGER_LOG__LEVEL", "value": "info"}],
    "extraVolumes": [{"name": "ca", "secret": {"secretName": "kafka-ca"}}],
    "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/trigger/ca", "readOnly": True}],
    "serviceAccount": {"annotations": {"example.com/role": "trigger"}},
    "service": {"annotations": {"example.com/scrape": "true"}},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "1m"},
        "hosts": ["trigger.example.com"],
        "paths": [
            {"path": "/oss/eventbridge", "pathType": "Exact"},
            {"path": "/oss/mns", "pathType": "Exact"},
            {"path": "/hooks", "pathType": "Prefix"},
        ],
        "tls": [{"secretName": "trigger-tls", "hosts": ["trigger.example.com"]}],
    },
    "networkPolicy": {
        "enabled": True,
        "ingressFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}],
        "apiServer": {"cidrs": ["10.0.0.1/32"], "ports": [6443]},
        "kafka": {"cidrs": ["10.1.0.0/16"], "ports": [9093]},
        "oss": {"cidrs": ["0.0.0.0/0"], "ports": [443]},
        "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.2.0.10/32"}}], "ports": [{"port": 3128}]}],
    },
    "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}},
    "podAnnotations": {"example.com/team": "platform"},
    "podLabels": {"team": "platform"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}
    ],
    "affinity": {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "trigger"}},
                    },
                }
            ]
        }
    },
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "trigger"}},
        }
    ],
    "priorityClassName": "system-cluster-critical",
}
SCENARIOS["everything on"] = (FULL, SCENARIOS["everything on"][1])


def merged(overrides: dict[str, Any]) -> dict[str, Any]:
    values = copy.deepcopy(BASE)
    values.update(copy.deepcopy(overrides))
    return values


class Rendered:
    """The objects `helm template` produced, looked up by kind, namespace and name."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.notes = next((v for k, v in manifests.items() if k.endswith("NOTES.txt")), "")
        self.objects = [
            doc
            for path, text in sorted(manifests.items())
            if path.endswith((".yaml", ".yml"))
            for doc in yaml.safe_load_all(text)
            if doc
        ]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        found = [
            o
            for o in self.all(kind)
            if o["metadata"]["name"] == name and o["metadata"].get("namespace", "") == namespace
        ]
        assert len(found) == 1, f"{kind} {namespace}/{name}: {len(found)} rendered"
        return found[0]

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.get("Deployment", FULLNAME)["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod["containers"]
        return dict(container)

    def settings(self, tmp_path: Path) -> Settings:
        config = self.get("ConfigMap", f"{FULLNAME}-config")["data"]["config.yaml"]
        path = tmp_path / "config.yaml"
        path.write_text(config)
        return load_settings(path, environ={})

    def grants(self) -> set[Rule]:
        found: set[Rule] = set()
        for role in self.all("Role") + self.all("ClusterRole"):
            namespace = role["metadata"].get("namespace", "")
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        names = tuple(sorted(rule.get("resourceNames", ())))
                        found.add(
                            (
                                role["kind"],
                                namespace,
                                group,
                                resource,
                                tuple(sorted(rule["verbs"])),
                                names,
                            )
                        )
        return found


@pytest.fixture(scope="module")
def helm() -> Any:
    try:
        import helm_python
    except ImportError as exc:  # the package or its bundled libhelm_c cannot be loaded
        pytest.skip(f"no Helm: the PyPI package helm-python-sdk is not installed ({exc})")
    helm_python.disable_logging()
    return helm_python


@pytest.fixture(scope="module")
def render(helm: Any) -> Callable[..., Rendered]:
    chart = helm.Chart.load(CHART)

    def run(overrides: dict[str, Any] | None = None, *, base: bool = True) -> Rendered:
        values = merged(overrides or {}) if base else copy.deepcopy(overrides or {})
        return Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True))

    return run


def write_like_kubelet(root: Path, data: dict[str, str]) -> None:
    """A ConfigMap volume as the kubelet writes it: a timestamped dir, `..data`, symlinks."""
    stamp = root / "..2025_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    for key, text in data.items():
        (stamp / key).write_text(text)
        (root / key).symlink_to(f"..data/{key}")
    (root / "..data").symlink_to(stamp.name)


# --- Helm -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {},
        BASE,
        merged(FULL),
        merged(SCENARIOS["queues declared inline"][0]),
    ],
    ids=["chart defaults", "with rules", "everything on", "queues"],
)
def test_lint_is_clean(helm: Any, values: dict[str, Any]) -> None:
    """`helm lint --strict` reports no warning and no error."""
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize(("overrides", "expected"), SCENARIOS.values(), ids=SCENARIOS.keys())
def test_rbac_grants_exactly_what_the_daemon_calls(
    render: Callable[..., Rendered], overrides: dict[str, Any], expected: set[Rule]
) -> None:
    """Roles and ClusterRoles grant exactly the verbs, resources and names the code uses."""
    assert render(overrides).grants() == expected


@pytest.mark.parametrize("overrides", [o for o, _ in SCENARIOS.values()], ids=SCENARIOS.keys())
def test_every_role_is_bound_to_the_service_account(
    render: Callable[..., Rendered], overrides: dict[str, Any]
) -> None:
    """Each Role and ClusterRole has one binding of the same name to the release's account."""
    rendered = render(overrides)
    for kind, binding_kind in (("Role", "RoleBinding"), ("ClusterRole", "ClusterRoleBinding")):
        roles = {
            (o["metadata"].get("namespace"), o["metadata"]["name"]) for o in rendered.all(kind)
        }
        bindings = {
            (o["metadata"].get("namespace"), o["metadata"]["name"]): o
            for o in rendered.all(binding_kind)
        }
        assert set(bindings) == roles
        for binding in bindings.values():
            assert binding["roleRef"] == {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": kind,
                "name": binding["metadata"]["name"],
            }
            assert binding["subjects"] == [
                {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
            ]
    rendered.get("ServiceAccount", FULLNAME)


@pytest.mark.parametrize(
    ("overrides", "leader"),
    [
        ({}, True),
        ({"replicas": 1}, False),
        ({"replicas": 1, "leader": {"enabled": True}}, True),
        ({"replicas": 3, "leader": {"enabled": False}}, False),
    ],
    ids=["2 replicas", "1 replica", "1 replica, forced on", "3 replicas, forced off"],
)
def test_leader_election_follows_replicas(
    render: Callable[..., Rendered], tmp_path: Path, overrides: dict[str, Any], leader: bool
) -> None:
    """Leader election is on with more than one replica unless leader.enabled says otherwise."""
    rendered = render(overrides)
    settings = rendered.settings(tmp_path)
    assert settings.leader.enabled is leader
    assert (settings.leader.lease_name, settings.leader.namespace) == (FULLNAME, NAMESPACE)
    assert bool(LEASE & rendered.grants()) is leader


@pytest.mark.parametrize(("overrides", "_"), SCENARIOS.values(), ids=SCENARIOS.keys())
def test_config_is_a_valid_daemon_configuration(
    render: Callable[..., Rendered], tmp_path: Path, overrides: dict[str, Any], _: object
) -> None:
    """The rendered config.yaml loads with trigger's own settings loader."""
    settings = render(overrides).settings(tmp_path)
    assert settings.listen == "0.0.0.0:8080"
    assert settings.sink == overrides.get("sink", "kubernetes")
    assert settings.dead_letter == "file:/var/lib/trigger/dead-letters.jsonl"
    assert settings.rules == ("/etc/trigger/rules",)


@pytest.mark.parametrize(
    ("overrides", "spec"),
    [
        ({}, f"kubernetes:{NAMESPACE}/{FULLNAME}-state"),
        ({"stateConfigMap": "cron-marks"}, f"kubernetes:{NAMESPACE}/cron-marks"),
        ({"state": "kubernetes:ops/marks"}, "kubernetes:ops/marks"),
        ({"state": "file:/var/lib/trigger/state.json"}, "file:/var/lib/trigger/state.json"),
    ],
    ids=["default", "named", "other namespace", "file"],
)
def test_state_names_the_namespace_rbac_allows(
    render: Callable[..., Rendered], tmp_path: Path, overrides: dict[str, Any], spec: str
) -> None:
    """The state setting names the namespace whose ConfigMaps the state Role lets the daemon
    create, read and replace, whatever the per-key names turn out to be."""
    rendered = render(overrides)
    assert rendered.settings(tmp_path).state == spec
    if spec.startswith("kubernetes:"):
        namespace, _ = spec.removeprefix("kubernetes:").split("/")
        assert state(namespace) <= rendered.grants()


@pytest.mark.parametrize(
    ("overrides", "check", "namespaces"),
    [
        ({}, True, (NAMESPACE,)),
        ({"checkTemplates": False}, False, (NAMESPACE,)),
        (
            {"clusterWorkflowTemplates": True, "workflowNamespaces": ["ci", "data"]},
            True,
            ("ci", "data"),
        ),
    ],
    ids=["defaults", "checks off", "several namespaces"],
)
def test_template_checks_only_with_the_grants_they_need(
    render: Callable[..., Rendered],
    tmp_path: Path,
    overrides: dict[str, Any],
    check: bool,
    namespaces: tuple[str, ...],
) -> None:
    """Template checks are on by default and watch only the granted namespaces."""
    settings = render(overrides).settings(tmp_path)
    assert settings.submit.check_templates is check
    assert settings.submit.template_namespaces == namespaces


def test_extra_config_reaches_the_daemon_but_cannot_undo_rbac(
    render: Callable[..., Rendered], tmp_path: Path
) -> None:
    """`config` adds settings; the values that shape RBAC come from the chart's values."""
    config = {
        "log": {"level": "debug"},
        "leader": {"lease_duration": "30s"},
        "submit": {"max_in_flight": 8},
    }
    settings = render({"replicas": 1, "checkTemplates": False, "config": config}).settings(tmp_path)
    assert (settings.log.level, settings.leader.lease_duration, settings.submit.max_in_flight) == (
        "debug",
        30.0,
        8,
    )
    assert (settings.leader.enabled, settings.submit.check_templates, settings.sink) == (
        False,
        False,
        "kubernetes",
    )


@pytest.mark.parametrize(
    ("overrides", "strict"),
    [({}, True), ({"strict": False}, False)],
    ids=["default", "turned off"],
)
def test_strict_mode_is_on_unless_the_values_say_otherwise(
    render: Callable[..., Rendered], tmp_path: Path, overrides: dict[str, Any], strict: bool
) -> None:
    """The chart runs the daemon in strict mode: an idle rule (its Kafka cluster or secret
    missing) stops a rollout at start instead of serving nothing quietly."""
    assert render(overrides).settings(tmp_path).strict is strict


def test_rules_configmap_loads_from_its_mount(
    render: Callable[..., Rendered], tmp_path: Path
) -> None:
    """The rules ConfigMap, laid out as the kubelet mounts it, loads from the configured path."""
    rendered = render()
    data = rendered.get("ConfigMap", f"{FULLNAME}-rules")["data"]
    mount = tmp_path / "etc" / "trigger" / "rules"
    write_like_kubelet(mount, data)
    paths = [p.replace("/etc/trigger/rules", str(mount)) for p in rendered.settings(tmp_path).rules]
    assert {rule.name for rule in load_rules(paths).rules} == {"nightly-report", "deploy-on-push"}


def test_existing_rules_configmap_is_mounted_not_rendered(render: Callable[..., Rendered]) -> None:
    """With rules.existingConfigMap the chart mounts that ConfigMap and renders none."""
    rendered = render({"rules": {"existingConfigMap": "team-rules"}}, base=False)
    assert [o["metadata"]["name"] for o in rendered.all("ConfigMap")] == [f"{FULLNAME}-config"]
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert volumes["rules"]["configMap"] == {"name": "team-rules"}


def test_security_context_is_locked_down(render: Callable[..., Rendered]) -> None:
    """Non-root numeric user, read-only root, no privilege escalation, no capabilities, seccomp."""
    rendered = render()
    pod, container = rendered.pod["securityContext"], rendered.container["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["runAsNonRoot"] is True and container["runAsUser"] == 10001
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["runAsUser"] == dockerfile_user()


def test_probes_and_service_use_the_http_port(render: Callable[..., Rendered]) -> None:
    """Liveness on /healthz and readiness on /readyz at the port the Service targets (8080)."""
    rendered = render()
    container = rendered.container
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    service = rendered.get("Service", FULLNAME)
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]
    assert (
        service["spec"]["selector"]
        == rendered.get("Deployment", FULLNAME)["spec"]["selector"]["matchLabels"]
    )


def test_mounts_match_the_image_and_the_settings(
    render: Callable[..., Rendered], tmp_path: Path
) -> None:
    """Settings at the image's --config path, rules beside them, writable state and /tmp."""
    rendered = render()
    mounts = {m["mountPath"]: m for m in rendered.container["volumeMounts"]}
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    config_path = dockerfile_instruction("CMD")[-1]
    assert rendered.container["args"] == dockerfile_instruction("CMD")
    assert mounts[config_path] == {
        "name": "config",
        "mountPath": config_path,
        "subPath": "config.yaml",
        "readOnly": True,
    }
    assert volumes["config"]["configMap"] == {"name": f"{FULLNAME}-config"}
    assert mounts["/etc/trigger/rules"] == {
        "name": "rules",
        "mountPath": "/etc/trigger/rules",
        "readOnly": True,
    }
    assert "subPath" not in mounts["/etc/trigger/rules"]  # a subPath mount never sees updates
    assert volumes[mounts["/var/lib/trigger"]["name"]]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    dead_letters = rendered.settings(tmp_path).dead_letter.removeprefix("file:")
    assert Path(dead_letters).parent == Path("/var/lib/trigger")


def test_file_state_can_use_a_claim(render: Callable[..., Rendered]) -> None:
    """persistence.existingClaim puts /var/lib/trigger on that claim."""
    rendered = render(
        {
            "state": "file:/var/lib/trigger/state.json",
            "replicas": 1,
            "persistence": {"existingClaim": "trigger-data"},
        }
    )
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    assert volumes["data"] == {
        "name": "data",
        "persistentVolumeClaim": {"claimName": "trigger-data"},
    }
    assert "WARNING" not in rendered.notes


def test_grace_period_outlasts_the_shutdown_deadline(
    render: Callable[..., Rendered], tmp_path: Path
) -> None:
    """Kubernetes waits longer than the daemon drains before it kills the pod."""
    rendered = render()
    assert rendered.pod["terminationGracePeriodSeconds"] == 30
    assert (
        rendered.pod["terminationGracePeriodSeconds"]
        > rendered.settings(tmp_path).shutdown_deadline
    )


def test_secrets_come_from_references(render: Callable[..., Rendered]) -> None:
    """extraEnvFrom and extraEnv reach the container as Secret references, verbatim."""
    env_from = [{"secretRef": {"name": "trigger-secrets"}}]
    env = [
        {
            "name": "KAFKA_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "kafka", "key": "password"}},
        }
    ]
    container = render({"extraEnvFrom": env_from, "extraEnv": env}).container
    assert (container["envFrom"], container["env"]) == (env_from, env)


def test_default_values_hold_no_secret() -> None:
    """No key of values.yaml that looks like a credential has a default value."""
    suspicious = re.compile(r"password|passwd|secret|token|apikey|api_key|credential|private", re.I)

    def walk(node: Any, path: str) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, f"{path}[{index}]")
        elif node not in (None, "", False) and suspicious.search(path):
            yield path

    assert list(walk(yaml.safe_load((CHART / "values.yaml").read_text()), "")) == []


@pytest.mark.parametrize(("replicas", "rendered_pdb"), [(1, False), (2, True), (5, True)])
def test_disruption_budget_only_with_replicas_to_spare(
    render: Callable[..., Rendered], replicas: int, rendered_pdb: bool
) -> None:
    """A PodDisruptionBudget (maxUnavailable 1) exists only with more than one replica."""
    budgets = render({"replicas": replicas}).all("PodDisruptionBudget")
    assert [b["spec"]["maxUnavailable"] for b in budgets] == ([1] if rendered_pdb else [])


@pytest.mark.parametrize("enabled", [False, True])
def test_service_monitor_is_optional(render: Callable[..., Rendered], enabled: bool) -> None:
    """serviceMonitor.enabled adds a ServiceMonitor scraping /metrics on the http port."""
    monitors = render({"serviceMonitor": {"enabled": enabled}}).all("ServiceMonitor")
    assert [m["spec"]["endpoints"][0]["path"] for m in monitors] == (
        ["/metrics"] if enabled else []
    )
    if enabled:
        assert monitors[0]["spec"]["endpoints"][0]["port"] == "http"


def test_settings_change_restarts_pods_rules_change_does_not(
    render: Callable[..., Rendered],
) -> None:
    """The pod's config checksum follows the settings, not the rules (they hot-reload)."""

    def checksum(overrides: dict[str, Any]) -> str:
        annotations = render(overrides).get("Deployment", FULLNAME)["spec"]["template"]["metadata"][
            "annotations"
        ]
        return str(annotations["checksum/config"])

    base = checksum({})
    assert checksum({"config": {"log": {"level": "debug"}}}) != base
    assert checksum({"rules": {"files": {"other.yaml": CRON_RULE}}}) == base


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "no rules"),
        ({**BASE, "rules": {"files": {"rules.json": CRON_RULE}}}, "end in .yaml or .yml"),
        (
            {
                **BASE,
                "sink": "argo-server:https://argo:2746",
                "state": "file:/var/lib/trigger/s.json",
            },
            "leader election uses the kubernetes sink",
        ),
        (
            {**BASE, "sink": "argo-server:https://argo:2746", "replicas": 1},
            "state: kubernetes uses the kubernetes sink",
        ),
        ({**BASE, "state": "redis:host"}, "expected kubernetes"),
        ({**BASE, "state": "kubernetes:just-a-name"}, "expected kubernetes"),
        ({**BASE, "networkPolicy": {"enabled": True}}, "networkPolicy.apiServer.cidrs"),
    ],
    ids=[
        "no rules",
        "bad rule file name",
        "leader without cluster",
        "state without cluster",
        "unknown state",
        "state without namespace",
        "network policy without the API server",
    ],
)
def test_impossible_values_fail_to_render(
    helm: Any, render: Callable[..., Rendered], values: dict[str, Any], message: str
) -> None:
    """Values the daemon would refuse at start fail at install with a message saying why."""
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values, base=False)


def test_notes_explain_the_reload_delay(render: Callable[..., Rendered]) -> None:
    """NOTES say that ConfigMap edits reach the pods only after the kubelet's sync delay."""
    notes = render().notes
    assert "hot-reloads" in notes and "kubelet" in notes and f"{FULLNAME}-rules" in notes
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes


@pytest.mark.parametrize(("overrides", "_"), SCENARIOS.values(), ids=SCENARIOS.keys())
def test_objects_are_valid_kubernetes(
    render: Callable[..., Rendered], overrides: dict[str, Any], _: object
) -> None:
    """Every object survives a lossless round trip through the Kubernetes API models."""
    from kubernetes_asyncio import client

    objects = [o for o in render(overrides).objects if o["kind"] != "ServiceMonitor"]

    async def round_trip() -> list[tuple[str, Any]]:
        async with client.ApiClient() as api:
            deserialize = api._ApiClient__deserialize  # the generated models' own parser
            return [
                (o["kind"], api.sanitize_for_serialization(deserialize(o, f"V1{o['kind']}")))
                for o in objects
            ]

    for original, (kind, back) in zip(objects, asyncio.run(round_trip()), strict=True):
        assert back == original, f"{kind} {original['metadata']['name']} changed in a round trip"


@pytest.mark.skipif(not ARGO_SCHEMA.exists(), reason="../shared/argo/schema.json is absent")
def test_pod_parts_match_the_schema(render: Callable[..., Rendered]) -> None:
    """Container, volumes, security contexts and metadata validate against the io.k8s schema."""
    # Not the PodDisruptionBudgetSpec: Argo's schema types IntOrString as a string only, and
    # the API server (and the round-trip test above) take maxUnavailable: 1.
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    definitions = json.loads(ARGO_SCHEMA.read_text())["definitions"]
    rendered = render(FULL)
    pod = rendered.pod
    (test_pod,) = rendered.all("Pod")
    parts: list[tuple[str, Any]] = [
        ("io.k8s.api.core.v1.Container", rendered.container),
        *(("io.k8s.api.core.v1.Container", c) for c in test_pod["spec"]["containers"]),
        ("io.k8s.api.core.v1.PodSecurityContext", test_pod["spec"]["securityContext"]),
        ("io.k8s.api.core.v1.PodSecurityContext", pod["securityContext"]),
        *(("io.k8s.api.core.v1.Volume", v) for v in pod["volumes"]),
        *(
            ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", o["metadata"])
            for o in rendered.objects
        ),
        *(
            ("io.k8s.api.core.v1.ServicePort", p)
            for o in rendered.all("Service")
            for p in o["spec"]["ports"]
        ),
    ]
    for definition, part in parts:
        validator = Draft202012Validator(
            {"$ref": f"#/definitions/{definition}", "definitions": definitions}
        )
        errors = [f"{definition} {list(e.path)}: {e.message}" for e in validator.iter_errors(part)]
        assert not errors, errors


# --- Values schema ------------------------------------------------------------------------

SCHEMA = CHART / "values.schema.json"
# Daemon settings the chart sets from its own values; `config` may not name them.
OWNED_SETTINGS = {"rules", "listen", "sink", "state", "dead_letter", "strict"}
OWNED_SUBSETTINGS = {
    "leader": {"enabled", "lease_name", "namespace"},
    "submit": {"check_templates", "template_namespaces"},
}

BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "replicas not a number": ({"replicas": "two"}, "at '/replicas': got string, want integer"),
    "replicas negative": ({"replicas": -1}, "at '/replicas': minimum: got -1, want 0"),
    "unknown key": ({"replica": 3}, "at '': additional properties 'replica' not allowed"),
    "unknown nested key": (
        {"image": {"repository": "trigger", "pullpolicy": "Always"}},
        "at '/image': additional properties 'pullpolicy' not allowed",
    ),
    "bad pull policy": (
        {"image": {"pullPolicy": "Sometimes"}},
        "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
    ),
    "bad service type": (
        {"service": {"type": "Ingress"}},
        "at '/service/type': value must be one of 'ClusterIP', 'NodePort', 'LoadBalancer'",
    ),
    "sink the chart cannot run": (
        {"sink": "local:./workflows"},
        "at '/sink': 'local:./workflows' does not match",
    ),
    "strict not a boolean": ({"strict": "yes"}, "at '/strict': got string, want boolean"),
    "port out of range": (
        {"containerPort": 70000},
        "at '/containerPort': maximum: got 70,000, want 65,535",
    ),
    "namespace not a DNS label": (
        {"workflowNamespaces": ["Data_Team"]},
        "at '/workflowNamespaces/0': 'Data_Team' does not match",
    ),
    "namespaces not a list": (
        {"workflowSource": {"namespaces": "*"}},
        "at '/workflowSource/namespaces': got string, want array",
    ),
    "leader.enabled not a boolean": (
        {"leader": {"enabled": "auto"}},
        "at '/leader/enabled': got string, want null or boolean",
    ),
    "dead letters not a file": (
        {"deadLetter": "/var/lib/x"},
        "at '/deadLetter': '/var/lib/x' does not match",
    ),
    "rule file not text": (
        {"rules": {"files": {"a.yaml": {"kind": "Rule"}}}},
        "at '/rules/files/a.yaml': got object, want string",
    ),
    "env without a name": (
        {"extraEnv": [{"value": "x"}]},
        "at '/extraEnv/0': missing property 'name'",
    ),
    "config: strict is the chart's": (
        {"config": {"strict": False}},
        "at '/config': additional properties 'strict' not allowed",
    ),
    "config: sink is the chart's": (
        {"config": {"sink": "stdout"}},
        "at '/config': additional properties 'sink' not allowed",
    ),
    "config: leader.enabled is the chart's": (
        {"config": {"leader": {"enabled": True}}},
        "at '/config/leader': additional properties 'enabled' not allowed",
    ),
    "config: check_templates is the chart's": (
        {"config": {"submit": {"check_templates": False}}},
        "at '/config/submit': additional properties 'check_templates' not allowed",
    ),
    "config: misspelt section": (
        {"config": {"kafak": {}}},
        "at '/config': additional properties 'kafak' not allowed",
    ),
    "config: bad log level": (
        {"config": {"log": {"level": "verbose"}}},
        "at '/config/log/level': value must be one of 'debug', 'info', 'warning', 'error', 'critical'",
    ),
    "ingress: bad path type": (
        {"ingress": {"paths": [{"path": "/hooks", "pathType": "Regex"}]}},
        "at '/ingress/paths/0/pathType': value must be one of 'Exact', 'Prefix', 'ImplementationSpecific'",
    ),
    "ingress: relative path": (
        {"ingress": {"paths": [{"path": "oss/mns"}]}},
        "at '/ingress/paths/0/path': 'oss/mns' does not match pattern '^/'",
    ),
    "network policy: CIDRs not a list": (
        {"networkPolicy": {"kafka": {"cidrs": "10.0.0.0/8"}}},
        "at '/networkPolicy/kafka/cidrs': got string, want array",
    ),
    "network policy: address without prefix": (
        {"networkPolicy": {"oss": {"cidrs": ["0.0.0.0"]}}},
        "at '/networkPolicy/oss/cidrs/0': '0.0.0.0' does not match",
    ),
    "size not a quantity": (
        {"persistence": {"sizeLimit": "lots"}},
        "at '/persistence/sizeLimit': 'lots' does not match",
    ),
    "budget not a number or percentage": (
        {"podDisruptionBudget": {"maxUnavailable": "half"}},
        "'half' does not match pattern '^[0-9]+%$'",
    ),
}


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_schema_refuses_bad_values(
    helm: Any, render: Callable[..., Rendered], overrides: dict[str, Any], message: str
) -> None:
    """`helm install/template` refuses a wrong type, an unknown key or a bad enum value,
    naming where it is and what was expected."""
    with pytest.raises(helm.HelmValuesError) as raised:
        render(overrides)
    assert "values don't meet the specifications of the schema" in str(raised.value)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "values", [{}, BASE, merged(FULL)], ids=["defaults", "with rules", "everything on"]
)
def test_schema_accepts_the_documented_values(helm: Any, values: dict[str, Any]) -> None:
    """The chart's defaults and a full production set of values pass the schema."""
    helm.Chart.load(CHART).validate_schema(values)


def test_schema_declares_every_default_value() -> None:
    """Every key of values.yaml is declared in values.schema.json, and the schema closes
    every object the chart owns (an unknown key is an error, not ignored)."""
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def walk(node: Any, part: dict[str, Any], path: str) -> Iterator[str]:
        if isinstance(node, dict) and "properties" in part:
            if part.get("additionalProperties") is not False:
                yield f"{path}: not closed"
            for key, value in node.items():
                if key not in part["properties"]:
                    yield f"{path}.{key}: not in the schema"
                else:
                    yield from walk(value, part["properties"][key], f"{path}.{key}")

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert list(walk(defaults, schema, "")) == []
    assert set(schema["properties"]) - {"global"} == set(defaults)


def test_schema_config_follows_the_daemon_settings() -> None:
    """`config` takes every daemon setting except those the chart sets from its values."""
    config = json.loads(SCHEMA.read_text())["properties"]["config"]
    assert set(config["properties"]) == set(Settings.model_fields) - OWNED_SETTINGS
    for section, owned in OWNED_SUBSETTINGS.items():
        model = Settings.model_fields[section].annotation
        assert model is not None and hasattr(model, "model_fields")
        assert set(config["properties"][section]["properties"]) == set(model.model_fields) - owned


# --- Ingress, NetworkPolicy, helm test -----------------------------------------------------


def test_ingress_routes_only_the_receivers(render: Callable[..., Rendered]) -> None:
    """The Ingress sends the listed receiver paths to the Service's http port, with the
    class, TLS and annotations given; /metrics, /status and the probes are not routed."""
    assert render().all("Ingress") == []
    rendered = render(FULL)
    assert "only: /oss/eventbridge /oss/mns /hooks" in rendered.notes
    ingress = rendered.get("Ingress", FULLNAME)
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == FULL["ingress"]["tls"]
    assert ingress["metadata"]["annotations"] == FULL["ingress"]["annotations"]
    (rule,) = spec["rules"]
    assert rule["host"] == "trigger.example.com"
    routed = [(p["path"], p["pathType"]) for p in rule["http"]["paths"]]
    assert routed == [("/oss/eventbridge", "Exact"), ("/oss/mns", "Exact"), ("/hooks", "Prefix")]
    backends = {json.dumps(p["backend"], sort_keys=True) for p in rule["http"]["paths"]}
    assert backends == {
        json.dumps({"service": {"name": FULLNAME, "port": {"name": "http"}}}, sort_keys=True)
    }


def test_ingress_defaults_to_the_oss_push_endpoints_on_any_host(
    render: Callable[..., Rendered],
) -> None:
    """With no hosts the Ingress takes any host; the default paths are the two OSS pushes."""
    (rule,) = render({"ingress": {"enabled": True}}).get("Ingress", FULLNAME)["spec"]["rules"]
    assert "host" not in rule
    assert [p["path"] for p in rule["http"]["paths"]] == ["/oss/eventbridge", "/oss/mns"]


def test_network_policy_allows_the_http_port_in_and_the_listed_peers_out(
    render: Callable[..., Rendered],
) -> None:
    """Ingress only to the http port (from the peers given); egress only to DNS, the API
    server, Kafka, OSS and the extra rules, each at the CIDRs and ports given."""
    assert render().all("NetworkPolicy") == []
    rendered = render(FULL)
    policy = rendered.get("NetworkPolicy", FULLNAME)["spec"]
    assert policy["podSelector"] == rendered.get("Deployment", FULLNAME)["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [
        {
            "ports": [{"port": "http", "protocol": "TCP"}],
            "from": FULL["networkPolicy"]["ingressFrom"],
        }
    ]
    assert [p["name"] for p in rendered.container["ports"]] == ["http"]
    assert policy["egress"] == [
        {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
        {
            "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
            "ports": [{"port": 6443, "protocol": "TCP"}],
        },
        {
            "to": [{"ipBlock": {"cidr": "10.1.0.0/16"}}],
            "ports": [{"port": 9093, "protocol": "TCP"}],
        },
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443, "protocol": "TCP"}]},
        *FULL["networkPolicy"]["extraEgress"],
    ]


def test_network_policy_without_kafka_or_oss_allows_neither(
    render: Callable[..., Rendered],
) -> None:
    """Peers with no CIDRs get no egress rule: the policy allows nothing it was not told."""
    policy = render(
        {
            "networkPolicy": {
                "enabled": True,
                "apiServer": {"cidrs": ["10.0.0.1/32"]},
                "dns": {"enabled": False},
            }
        }
    ).get("NetworkPolicy", FULLNAME)["spec"]
    assert policy["egress"] == [
        {
            "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
            "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
        }
    ]
    assert "from" not in policy["ingress"][0]


def test_helm_test_pod_asks_the_service_for_readiness(render: Callable[..., Rendered]) -> None:
    """The `helm test` hook curls the Service's /readyz as a non-root user on a read-only
    root filesystem, with resources, and no selector of the release picks it up."""
    rendered = render(FULL)
    pod = rendered.get("Pod", f"{FULLNAME}-test-readyz")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["curl"]
    assert container["args"][-1] == f"http://{FULLNAME}.{NAMESPACE}.svc:8080/readyz"
    assert "--fail-with-body" in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["limits"] and container["resources"]["requests"]
    labels = pod["metadata"]["labels"]
    selectors = [
        rendered.get("Service", FULLNAME)["spec"]["selector"],
        rendered.get("PodDisruptionBudget", FULLNAME)["spec"]["selector"]["matchLabels"],
        rendered.get("NetworkPolicy", FULLNAME)["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selectors:
        assert not selector.items() <= labels.items(), selector


# --- Dockerfile -------------------------------------------------------------------------


def dockerfile_lines() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            instruction, _, rest = stripped.partition(" ")
            result.append((instruction.upper(), rest.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    lines = dockerfile_lines()
    last_from = max(i for i, (instruction, _) in enumerate(lines) if instruction == "FROM")
    return lines[last_from:]


def dockerfile_instruction(name: str) -> list[str]:
    (value,) = [rest for instruction, rest in final_stage() if instruction == name][-1:]
    parsed = json.loads(value)  # exec form: a JSON array, so no shell sits in between
    assert isinstance(parsed, list)
    return [str(p) for p in parsed]


def dockerfile_user() -> int:
    users = [rest for instruction, rest in final_stage() if instruction == "USER"]
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and (not group or group.isdigit()), f"USER {users[-1]} is not numeric"
    return int(user)


def test_image_builds_in_two_stages_on_python_311_slim() -> None:
    """A build stage makes the wheel; the runtime stage starts again from Python 3.11 slim."""
    lines = dockerfile_lines()
    args = dict(
        rest.split("=", 1) for instruction, rest in lines if instruction == "ARG" and "=" in rest
    )
    stages = [
        rest.replace("${PYTHON_IMAGE}", args.get("PYTHON_IMAGE", ""))
        for instruction, rest in lines
        if instruction == "FROM"
    ]
    assert len(stages) >= 2
    assert all(s.startswith("python:3.11-slim") for s in stages), stages
    assert any("pip wheel" in rest for instruction, rest in lines if instruction == "RUN")
    assert any(
        rest.startswith("--from=build ")
        for instruction, rest in final_stage()
        if instruction == "COPY"
    )


def test_image_runs_as_a_numeric_non_root_user() -> None:
    """The runtime stage ends as a numeric, non-zero USER, after its last RUN."""
    stage = final_stage()
    assert dockerfile_user() >= 1000
    last_user = max(i for i, (instruction, _) in enumerate(stage) if instruction == "USER")
    assert all(instruction != "RUN" for instruction, _ in stage[last_user:])


def test_image_entrypoint_runs_the_daemon() -> None:
    """ENTRYPOINT is `trigger`, CMD runs it with the mounted settings, port 8080 is exposed."""
    assert dockerfile_instruction("ENTRYPOINT") == ["trigger"]
    assert dockerfile_instruction("CMD") == ["run", "--config", "/etc/trigger/config.yaml"]
    assert ("EXPOSE", "8080") in final_stage()


def test_image_prepares_a_writable_state_directory() -> None:
    """/var/lib/trigger exists and belongs to the runtime user (the root stays read-only)."""
    runs = " ".join(rest for instruction, rest in final_stage() if instruction == "RUN")
    assert "/var/lib/trigger" in runs
    assert f"chown {dockerfile_user()}:" in runs


def test_image_holds_no_secret() -> None:
    """No ENV or ARG sets a credential, and the build context leaves secrets out."""
    suspicious = re.compile(r"password|secret|token|credential|access_?key", re.I)
    settings = [rest for instruction, rest in dockerfile_lines() if instruction in {"ENV", "ARG"}]
    assert [s for s in settings if suspicious.search(s)] == []
    assert not any(
        instruction == "COPY" and re.search(r"\.env|kubeconfig|\.pem|\.key", rest)
        for instruction, rest in dockerfile_lines()
    )
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".git", ".venv", ".env", "tests"} <= ignored


def test_image_copies_only_what_the_wheel_needs() -> None:
    """The build stage copies pyproject.toml, README.md and the package, not the whole tree."""
    sources = {
        source
        for instruction, rest in dockerfile_lines()
        if instruction == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    }
    assert sources == {"pyproject.toml", "README.md", "trigger"}
    assert all((REPO / source).exists() for source in sources)
