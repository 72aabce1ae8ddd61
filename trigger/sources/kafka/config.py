"""Kafka clusters from settings: client options, their validation, and rule checks.

Everything here is load-time work and raises early with one clear message: a SASL
password variable that is not set, a CA file that does not exist, a SASL mechanism on a
plaintext listener (`ConfigError`, at daemon start). A rule naming a cluster that is not
configured is idle (`cluster_problem`; trigger.daemon.verdicts decides what that means).
Secrets are read from the environment or a file here and nowhere else. No Kafka client is
imported at module level: the daemon imports this module whether or not Kafka is used.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trigger.errors import ConfigError
from trigger.rules.rule import Rule
from trigger.settings import KafkaCluster, Settings
from trigger.submit.deadletter import DeadLetterSink
from trigger.submit.deadletter_kafka import KafkaDeadLetterSink, KafkaTopicWriter

_SSL = frozenset({"SSL", "SASL_SSL"})
_SASL = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


def client_options(name: str, cluster: KafkaCluster, environ: Mapping[str, str]) -> dict[str, Any]:
    """Connection keyword arguments for aiokafka clients of cluster `name`."""
    protocol = cluster.security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": cluster.bootstrap_servers,
        "client_id": cluster.client_id,
        "security_protocol": protocol,
    }
    if protocol in _SSL:
        options["ssl_context"] = _ssl_context(name, cluster)
    elif cluster.ca_file:
        raise ConfigError(
            f"kafka cluster {name!r}: ca_file is set but security_protocol is {protocol}; "
            "use SSL or SASL_SSL"
        )
    if protocol in _SASL:
        options.update(_sasl(name, cluster, environ))
    elif cluster.sasl_mechanism or cluster.sasl_username:
        raise ConfigError(
            f"kafka cluster {name!r}: SASL settings are given but security_protocol is "
            f"{protocol}; use SASL_PLAINTEXT or SASL_SSL"
        )
    return options


def _ssl_context(name: str, cluster: KafkaCluster) -> ssl.SSLContext:
    if cluster.ca_file is None:
        return ssl.create_default_context()  # the system's trusted CAs
    path = Path(cluster.ca_file)
    if not path.is_file():
        raise ConfigError(f"kafka cluster {name!r}: ca_file {path} does not exist")
    try:
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"kafka cluster {name!r}: ca_file {path}: {exc}") from exc


def _sasl(name: str, cluster: KafkaCluster, environ: Mapping[str, str]) -> dict[str, Any]:
    where = f"kafka cluster {name!r}"
    if cluster.sasl_mechanism is None:
        raise ConfigError(
            f"{where}: security_protocol {cluster.security_protocol} needs sasl_mechanism "
            "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
        )
    if not cluster.sasl_username:
        raise ConfigError(f"{where}: SASL needs sasl_username")
    return {
        "sasl_mechanism": cluster.sasl_mechanism,
        "sasl_plain_username": cluster.sasl_username,
        "sasl_plain_password": _password(where, cluster, environ),
    }


def _password(where: str, cluster: KafkaCluster, environ: Mapping[str, str]) -> str:
    if cluster.sasl_password_env:
        value = environ.get(cluster.sasl_password_env)
        if not value:
            raise ConfigError(
                f"{where}: the password variable {cluster.sasl_password_env} "
                "(sasl_password_env) is not set"
            )
        return value
    if cluster.sasl_password_file:
        path = Path(cluster.sasl_password_file)
        try:
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"{where}: cannot read sasl_password_file {path}: {exc.strerror}"
            ) from exc
        if not value:
            raise ConfigError(f"{where}: sasl_password_file {path} is empty")
        return value
    raise ConfigError(f"{where}: SASL needs sasl_password_env or sasl_password_file")


def validate_clusters(settings: Settings, environ: Mapping[str, str]) -> None:
    """Raise ConfigError for the first configured cluster whose options are invalid."""
    for name, cluster in settings.kafka.clusters.items():
        client_options(name, cluster, environ)


def cluster_problem(rule: Rule, settings: Settings) -> str | None:
    """Why a Kafka rule cannot consume: the cluster it names is not configured; or None."""
    configured = settings.kafka.clusters
    if rule.kafka.cluster in configured:
        return None
    known = ", ".join(sorted(configured)) or "none"
    return (
        f"Kafka cluster {rule.kafka.cluster!r} is not configured (configured: {known}); "
        "add it under kafka.clusters or pass --kafka-bootstrap"
    )


def group_of(cluster: KafkaCluster, group: str | None) -> str:
    """The consumer group of a rule: its own, else its cluster's default group."""
    return group or cluster.group


def dead_letter_sink(
    settings: Settings, fallback: DeadLetterSink, environ: Mapping[str, str]
) -> DeadLetterSink:
    """`fallback` (the file sink), fronted by each cluster's dead-letter topic if any.

    Validates every configured cluster's options first (ConfigError at daemon start).
    """
    validate_clusters(settings, environ)
    writers = {
        name: KafkaTopicWriter(cluster.dead_letter_topic, client_options(name, cluster, environ))
        for name, cluster in settings.kafka.clusters.items()
        if cluster.dead_letter_topic
    }
    return KafkaDeadLetterSink(fallback, writers) if writers else fallback
