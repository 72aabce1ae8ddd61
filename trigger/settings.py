"""The daemon's settings: one optional YAML file, `TRIGGER_…` environment overrides, flags.

Precedence, highest first: command-line flags, environment variables, the config file,
defaults. An environment variable names a field by its path, upper-cased, joined with
`__` and prefixed with `TRIGGER_`: `TRIGGER_SINK=kubernetes`, `TRIGGER_KUBERNETES__QPS=20`,
`TRIGGER_SUBMIT__MAX_IN_FLIGHT=128`. Values are read as YAML scalars (numbers, booleans).
Secrets are never settings: fields ending in `_env` or `_file` name where a secret is.
Every field below says its unit and default; the README lists them all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from trigger.errors import ConfigError
from trigger.rules.model import parse_duration

ENV_PREFIX = "TRIGGER_"
Seconds = Annotated[float, BeforeValidator(parse_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KubernetesSettings(_Section):
    """Connection of the `kubernetes` sink (and of leases and ConfigMap state)."""

    kubeconfig: str | None = None  # path; default: $KUBECONFIG or ~/.kube/config
    context: str | None = None  # kubeconfig context; default: the current one
    in_cluster: bool | None = None  # None: in-cluster when KUBERNETES_SERVICE_HOST is set
    server: str | None = None  # explicit API server URL (with token_* and ca_file)
    token_env: str | None = None  # environment variable holding a bearer token
    token_file: str | None = None  # file holding a bearer token (re-read when it changes)
    ca_file: str | None = None  # CA bundle for an explicit server
    insecure_skip_tls_verify: bool = False
    # A hard ceiling on the client's request rate, requests/s (None: none — the flow
    # controller finds what the server admits); with `burst` when set.
    qps: float | None = Field(default=None, gt=0)
    burst: int = Field(default=100, ge=1)  # client-side burst, requests (with qps)
    timeout: Seconds = 10.0  # per request
    trust_env: bool = False  # honour HTTPS_PROXY/NO_PROXY and ~/.netrc (re-read per request)


class ArgoServerSettings(_Section):
    """Connection of the `argo-server:URL` sink."""

    token_env: str | None = "ARGO_TOKEN"  # noqa: S105 - the variable's name, not a secret
    token_file: str | None = None  # or a file holding it (re-read when it changes)
    ca_file: str | None = None
    insecure_skip_tls_verify: bool = False
    timeout: Seconds = 10.0  # per request
    qps: float | None = Field(default=None, gt=0)  # hard ceiling, requests/s (None: none)
    burst: int = Field(default=100, ge=1)  # client-side burst, requests (with qps)


class FlowSettings(_Section):
    """The adaptive flow controller toward the kubernetes or argo-server backend."""

    enabled: bool = True  # off: creates go as fast as slots and qps allow, retries alone
    initial_rate: float = Field(default=50.0, gt=0)  # creates/s at start (then slow start)
    min_rate: float = Field(default=1.0, gt=0)  # creates/s the limit never goes below
    probe_max: Seconds = 1.0  # longest interval between probes of a failing backend
    probe_timeout: Seconds = 2.0  # a probe taking longer counts as failed


class SubmitSettings(_Section):
    max_in_flight: int = Field(default=64, ge=1)  # concurrent create calls
    push_deadline: Seconds = 10.0  # how long a pushed delivery waits before answering 503
    template_grace: Seconds = 300.0  # a missing WorkflowTemplate is retried this long
    check_templates: bool = True  # kubernetes sink: watch WorkflowTemplates, check rules
    template_namespaces: tuple[str, ...] | None = None  # None: the namespaces rules use
    # Larger Workflows (as JSON) are dead-lettered as WorkflowTooLarge before any create.
    max_workflow_bytes: int = Field(default=1024 * 1024, ge=4096, le=3 * 1024 * 1024)


class HttpSettings(_Section):
    """The HTTP server's limits (webhooks, OSS pushes, health, metrics)."""

    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)  # larger bodies get 413
    request_timeout: Seconds = 30.0  # reading a request body; then 408
    # From the connection's start (or the first byte of a later request on a kept-alive
    # connection) until the request's headers are complete; then 408 and the connection closes.
    header_timeout: Seconds = Field(default=10.0, gt=0)
    keepalive_timeout: Seconds = Field(default=75.0, gt=0)  # idle between requests; then closed
    # Open connections, every listener together. At the limit a new connection closes the one
    # waiting longest for a request; when every connection is inside a request, it gets 503.
    max_connections: int = Field(default=1000, ge=1)


class LeaderSettings(_Section):
    """Leader election for singleton sources (cron, OSS polling) with a Lease."""

    enabled: bool | None = None  # None: on with the kubernetes sink, off otherwise
    lease_name: str = "trigger"
    namespace: str | None = None  # default: the pod's namespace, else "default"
    lease_duration: Seconds = 15.0  # followers take a Lease seen unchanged this long
    renew_deadline: Seconds = 10.0  # the leader stops this long after its last renewal's send
    retry_period: Seconds = 2.0


class KafkaCluster(_Section):
    """One Kafka cluster that rules name with `source.kafka.cluster`."""

    bootstrap_servers: str  # HOST:PORT[,HOST:PORT...]
    client_id: str = "trigger"
    group: str = "trigger"  # consumer group of rules that name none
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password_env: str | None = None  # environment variable holding the password
    sasl_password_file: str | None = None  # or a file holding it
    ca_file: str | None = None  # CA bundle for SSL / SASL_SSL
    auto_offset_reset: Literal["latest", "earliest"] = "latest"  # for a group with no offset
    session_timeout: Seconds = 10.0
    heartbeat_interval: Seconds = 3.0
    max_in_flight_per_partition: int = Field(default=100, ge=1)  # then the partition pauses
    dead_letter_topic: str | None = None  # default: the file dead-letter sink


class KafkaSettings(_Section):
    clusters: dict[str, KafkaCluster] = Field(default_factory=dict)
    # Records taken from any partition of any cluster and not yet finished, at most; then
    # every partition pauses until a quarter of them are done. Bounds memory whatever the
    # number of partitions assigned. Default 8192: two full requests of the local sink's
    # writer; the kubernetes sink is kept busy by a few hundred (about 8 KB each).
    max_in_flight: int = Field(default=8192, ge=1)


class OssPushSettings(_Section):
    """The EventBridge and MNS HTTP receivers for OSS events."""

    eventbridge_path: str = "/oss/eventbridge"
    eventbridge_token_env: str | None = None  # shared x-eventbridge-signature-token
    eventbridge_token_file: str | None = None
    eventbridge_verify_signature: bool = False  # RSA signature (v2, SHA256)
    eventbridge_cert_hosts: tuple[str, ...] = ("*.oss-accelerate.aliyuncs.com",)
    eventbridge_max_skew: Seconds = 60.0
    mns_path: str = "/oss/mns"
    mns_verify_signature: bool = True  # RSA-SHA1 over the MNS string-to-sign
    mns_cert_hosts: tuple[str, ...] = ("mnstest.oss-cn-hangzhou.aliyuncs.com", "*.aliyuncs.com")
    mns_max_skew: Seconds = 900.0
    mns_reply_within: Seconds = 4.5  # MNS retries after 5 s: answer 5xx before that
    # The URL configured in the EventBridge target, as signed (it includes the query); default:
    # the URL of the request as received (wrong behind a proxy that rewrites host or path).
    eventbridge_target_url: str | None = None


class OssPollSettings(_Section):
    """The OSS bucket poller (rules with `source.oss.poll`)."""

    page_size: int = Field(default=1000, ge=1, le=1000)  # keys per ListObjectsV2 page
    # Objects are expected to appear in listings at most this long after their LastModified;
    # the checkpoint keeps the (key, ETag) digests of objects modified within it. Default 5m.
    lookback: Seconds = 300.0
    timeout: Seconds = 30.0  # per OSS request (oss2 connect_timeout covers connect and read)
    max_backoff: Seconds = 300.0  # longest wait between failed polls (doubles from 1 s)
    checkpoint_every: Seconds = 10.0  # save scan progress at most this often when nothing fired
    # Bytes a group's checkpoint may take (about 10.4 per object modified within
    # `lookback`): past it the lookback narrows (README "Polling a bucket"). At least 8 KiB
    # (a scan's position is a key of up to 1,023 bytes); at most 960 KiB, so it fits the
    # 1 MiB per state key with room to spare. Default 960 KiB, about 94,000 objects.
    checkpoint_max_bytes: int = Field(default=983_040, ge=8192, le=983_040)


class OssSettings(_Section):
    push: OssPushSettings = OssPushSettings()
    poll: OssPollSettings = OssPollSettings()


class GateSettings(_Section):
    """Gates (rules with `spec.gate`)."""

    # How often the leader times out gates past their window and retries what their
    # outboxes hold (on the daemon's clock). A gate ends at most this long after its window.
    sweep_interval: Seconds = Field(default=10.0, gt=0)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"  # auto: console on a terminal, else JSON


class DecisionSettings(_Section):
    """The ring of decision records: what happened with every rule for each recent event."""

    size: int = Field(default=1000, ge=0)  # records kept, newest first out (0: none)
    # An event whose raw payload is larger is kept clipped (texts and lists cut) for
    # `trigger why`; bytes.
    max_event_bytes: int = Field(default=4096, ge=256, le=1024 * 1024)


class UiSettings(_Section):
    """The status page at / and the /api/* JSON it shares its data with."""

    argo_url: str | None = None  # the Argo UI's base URL: Workflows link to it when set
    # A token that opens the page and the API to clients beyond loopback (Authorization:
    # Bearer, or the login form's cookie); without one they are served on loopback only.
    token_env: str | None = None  # environment variable holding the token
    token_file: str | None = None  # or a file holding it (re-read when it changes)
    refresh: Seconds = Field(default=5.0, ge=1)  # the page reloads itself this often


class Settings(_Section):
    """Everything `trigger run` reads. See the module docstring for precedence."""

    rules: tuple[str, ...] = ("rules/",)  # files or directories (comma-separated in env)
    reload: bool = True  # watch the rules and reload on change (SIGHUP always reloads)
    reload_debounce: Seconds = 0.5  # wait for changes to settle before reloading
    listen: str = "127.0.0.1:8080"  # HOST:PORT of the HTTP server (webhooks, health, metrics)
    metrics_listen: str | None = None  # HOST:PORT to serve /metrics on a separate port
    sink: str = "local:./workflows"  # local:DIR | stdout | kubernetes | argo-server:URL
    state: str = "file:./state/trigger-state.json"  # file:PATH | kubernetes[:NS/NAME]
    dead_letter: str = "file:./dead-letters.jsonl"  # file:PATH
    shutdown_deadline: Seconds = 25.0  # drain in-flight work on SIGTERM for at most this
    # Idle rules (their Kafka cluster is not configured, their secret is unset, …) are
    # errors: exit 1 at start, a reload with one is refused. Off: they are warnings.
    strict: bool = False
    kubernetes: KubernetesSettings = KubernetesSettings()
    argo_server: ArgoServerSettings = ArgoServerSettings()
    submit: SubmitSettings = SubmitSettings()
    flow: FlowSettings = FlowSettings()
    http: HttpSettings = HttpSettings()
    leader: LeaderSettings = LeaderSettings()
    kafka: KafkaSettings = KafkaSettings()
    oss: OssSettings = OssSettings()
    gates: GateSettings = GateSettings()
    log: LogSettings = LogSettings()
    decisions: DecisionSettings = DecisionSettings()
    ui: UiSettings = UiSettings()

    @field_validator("rules", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return [p for p in value.split(",") if p] if isinstance(value, str) else value

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) < 65536:
                raise ValueError(f"{value!r} is not HOST:PORT")
        return value

    @field_validator("sink")
    @classmethod
    def _sink(cls, value: str) -> str:
        kind = value.split(":", 1)[0]
        if kind not in {"local", "stdout", "kubernetes", "argo-server"}:
            raise ValueError(f"{value!r}: use local:DIR, stdout, kubernetes or argo-server:URL")
        return value


def load_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from file, environment and flags; raises ConfigError with one message."""
    data: dict[str, Any] = {}
    for _, layer in _layers(config, environ, flags):
        _merge(data, layer)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        where = f"{config}: " if config else ""
        raise ConfigError(f"invalid configuration: {where}{problems}") from exc


def origin(
    field: str,
    config: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> str:
    """Which layer gave the top-level `field` its value, as a user would name it: the flag
    (`--rules`), the variable (`TRIGGER_RULES`), the config file's path, or `default`."""
    found = "default"
    for name, layer in _layers(config, environ, flags):
        if field in layer:
            found = name
    if found == "flags":
        return "--" + field.replace("_", "-")
    if found == "environment":
        return ENV_PREFIX + field.upper()
    return found


def _layers(
    config: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None,
    flags: Mapping[str, Any] | None,
) -> list[tuple[str, dict[str, Any]]]:
    """The settings' sources, lowest precedence first: the file, the environment, flags."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if config is not None:
        layers.append((str(config), _read_config(Path(config))))
    env = os.environ if environ is None else environ
    layers.append(("environment", environment_overrides(env)))
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    bootstrap = given.pop("kafka_bootstrap", None)
    if bootstrap:
        given["kafka"] = {"clusters": {"default": {"bootstrap_servers": bootstrap}}}
    layers.append(("flags", given))
    return layers


def environment_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`TRIGGER_A__B=v` → {"a": {"b": v}}, values read as YAML scalars."""
    result: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or not raw:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if isinstance(value, dict | list) or value is None:
            value = raw  # only scalars come from the environment
        target = result
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return result


def _read_config(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid configuration {path}: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"invalid configuration {path}: the top level must be a mapping")
    return loaded


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
