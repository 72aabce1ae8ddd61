"""Kafka parts without a broker: cluster settings, rule checks, commit windows, dead-letter routing."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from trigger.errors import ConfigError
from trigger.rules.loader import load_rules
from trigger.settings import KafkaCluster, Settings
from trigger.sources.kafka.config import client_options, cluster_problem, dead_letter_sink
from trigger.sources.kafka.offsets import PartitionWindow
from trigger.sources.kafka.source import plan
from trigger.submit.deadletter import DeadLetter
from trigger.submit.deadletter_kafka import (
    KafkaDeadLetterSink,
    KafkaOrigin,
    dead_letter_headers,
    origin_scope,
)


def cluster(**fields: Any) -> KafkaCluster:
    return KafkaCluster(bootstrap_servers="127.0.0.1:9092", **fields)


# --- cluster settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "environ", "message"),
    [
        (
            {"security_protocol": "SSL", "ca_file": "/nonexistent/ca.pem"},
            {},
            "ca_file /nonexistent/ca.pem does not exist",
        ),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "u",
                "sasl_password_env": "KAFKA_PW",
                "ca_file": "/nonexistent/ca.pem",
            },
            {"KAFKA_PW": "x"},
            "does not exist",
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-256",
                "sasl_username": "u",
                "sasl_password_env": "KAFKA_PW",
            },
            {},
            "password variable KAFKA_PW (sasl_password_env) is not set",
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "u",
                "sasl_password_file": "/nonexistent/pw",
            },
            {},
            "cannot read sasl_password_file /nonexistent/pw",
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "u",
            },
            {},
            "needs sasl_password_env or sasl_password_file",
        ),
        (
            {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "u", "sasl_password_env": "P"},
            {"P": "x"},
            "needs sasl_mechanism",
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_password_env": "P",
            },
            {"P": "x"},
            "needs sasl_username",
        ),
        ({"sasl_mechanism": "PLAIN"}, {}, "security_protocol is PLAINTEXT"),
        ({"ca_file": "/etc/ssl/ca.pem"}, {}, "security_protocol is PLAINTEXT"),
    ],
)
def test_invalid_security_settings_are_config_errors(
    fields: dict[str, Any], environ: dict[str, str], message: str
) -> None:
    """Missing CA files, password variables or SASL parts fail with a clear ConfigError."""
    with pytest.raises(ConfigError) as error:
        client_options("prod", cluster(**fields), environ)
    assert message in str(error.value)
    assert "kafka cluster 'prod'" in str(error.value)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_password_comes_from_the_environment(mechanism: str) -> None:
    """SASL options carry the mechanism, user and the password read from the environment."""
    options = client_options(
        "c",
        cluster(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=mechanism,
            sasl_username="svc",
            sasl_password_env="PW",
        ),
        {"PW": "s3cret"},
    )
    assert (
        options["sasl_mechanism"],
        options["sasl_plain_username"],
        options["sasl_plain_password"],
    ) == (mechanism, "svc", "s3cret")


def test_sasl_password_file_is_read_without_its_newline(tmp_path: Path) -> None:
    """A password file's trailing newline is not part of the password."""
    (tmp_path / "pw").write_text("s3cret\n")
    options = client_options(
        "c",
        cluster(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="svc",
            sasl_password_file=str(tmp_path / "pw"),
        ),
        {},
    )
    assert options["sasl_plain_password"] == "s3cret"


def test_ssl_without_ca_file_trusts_the_system_store() -> None:
    """SSL with no ca_file builds a verifying context from the system's CAs."""
    options = client_options("c", cluster(security_protocol="SSL"), {})
    assert options["ssl_context"].check_hostname is True


def test_dead_letter_sink_validates_every_cluster() -> None:
    """Building the dead-letter sink at start rejects a cluster with a missing password."""
    settings = Settings(
        kafka={
            "clusters": {
                "default": {
                    "bootstrap_servers": "h:1",
                    "security_protocol": "SASL_SSL",
                    "sasl_mechanism": "PLAIN",
                    "sasl_username": "u",
                    "sasl_password_env": "MISSING_PW",
                }
            }
        }
    )
    with pytest.raises(ConfigError, match="MISSING_PW"):
        dead_letter_sink(settings, _Recorder(), {})


# --- rules and clusters -------------------------------------------------------------------


def rules_file(tmp_path: Path, *docs: dict[str, Any]) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def rule(name: str, topics: list[str], **kafka: Any) -> dict[str, Any]:
    return {
        "apiVersion": "trigger/v1",
        "kind": "Rule",
        "metadata": {"name": name},
        "spec": {
            "source": {"kafka": {"topics": topics, **kafka}},
            "workflow": {"template": "t", "namespace": "default", "generateName": f"{name}-"},
        },
    }


def test_rule_naming_an_unknown_cluster_says_which(tmp_path: Path) -> None:
    """A rule naming a cluster that is not configured gets the cluster and the known ones."""
    rules = load_rules([rules_file(tmp_path, rule("r", ["t"], cluster="prod"))])
    settings = Settings(kafka={"clusters": {"default": {"bootstrap_servers": "h:1"}}})
    problem = cluster_problem(rules.by_name["r"], settings)
    assert problem is not None
    assert "Kafka cluster 'prod' is not configured (configured: default)" in problem
    configured = Settings(kafka={"clusters": {"prod": {"bootstrap_servers": "h:1"}}})
    assert cluster_problem(rules.by_name["r"], configured) is None


def test_plan_groups_topics_per_cluster_and_group(tmp_path: Path) -> None:
    """Rules without a group share the cluster's group; an explicit group gets its own consumer."""
    rules = load_rules(
        [
            rules_file(
                tmp_path,
                rule("a", ["x"]),
                rule("b", ["y", "x"]),
                rule("c", ["z"], group="own"),
                rule("d", ["w"], cluster="prod"),
            )
        ]
    )
    clusters = {"default": cluster(group="main")}
    assert plan(rules, clusters) == {
        ("default", "main"): frozenset({"x", "y"}),
        ("default", "own"): frozenset({"z"}),
    }


def test_strict_daemon_refuses_to_start_with_an_unknown_cluster(tmp_path: Path) -> None:
    """`trigger run --strict` exits 1 naming the rule and the missing cluster (without
    strict mode the rule is idle: see tests/component/test_verdicts.py)."""
    rules_file(tmp_path, rule("orphan", ["t"], cluster="prod"))
    command = [
        sys.executable,
        "-m",
        "trigger.cli",
        "run",
        "--rules",
        str(tmp_path / "rules.yaml"),
        "--kafka-bootstrap",
        "127.0.0.1:1",
        "--sink",
        f"local:{tmp_path / 'wf'}",
        "--listen",
        "127.0.0.1:0",
        "--state",
        f"file:{tmp_path / 's.json'}",
        "--dead-letter",
        f"file:{tmp_path / 'dl.jsonl'}",
        "--strict",
    ]
    done = subprocess.run(
        command,
        check=False,
        capture_output=True,
        timeout=60,
        cwd=tmp_path,
        env={"TRIGGER_LOG__FORMAT": "json", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert "Kafka cluster 'prod' is not configured" in (done.stdout + done.stderr).decode()


# --- the commit window ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("taken", "finished", "commit_point", "in_flight"),
    [
        ([0, 1, 2], [], None, 3),
        ([0, 1, 2], [1, 2], None, 3),  # the head is unfinished: nothing may be committed
        ([0, 1, 2], [0], 1, 2),
        ([0, 1, 2], [2, 0], 1, 2),
        ([0, 1, 2], [2, 1, 0], 3, 0),
        ([5, 7, 9], [5, 7], 8, 1),  # gaps (compaction, transaction markers)
    ],
)
def test_commit_point_is_one_past_the_finished_prefix(
    taken: list[int], finished: list[int], commit_point: int | None, in_flight: int
) -> None:
    """Out-of-order completions commit only the finished prefix of the partition."""
    window = PartitionWindow(bound=10)
    for offset in taken:
        window.take(offset)
    for offset in finished:
        window.finish(offset)
    assert (window.commit_point, window.in_flight) == (commit_point, in_flight)


@pytest.mark.parametrize(
    ("taken", "finished", "full", "drained"),
    [
        (4, 0, True, False),
        (3, 0, False, False),
        (4, 2, False, True),
        (4, 1, False, False),
    ],
)
def test_window_is_full_at_the_bound_and_drains_at_half(
    taken: int, finished: int, full: bool, drained: bool
) -> None:
    """A window pauses at its bound and resumes once half of it has drained."""
    window = PartitionWindow(bound=4)
    for offset in range(taken):
        window.take(offset)
    for offset in range(finished):
        window.finish(offset)
    assert (window.full, window.drained) == (full, drained)


def test_commit_is_due_only_when_the_point_moved() -> None:
    """A commit point already written is not committed again."""
    window = PartitionWindow(bound=4)
    window.take(0)
    window.finish(0)
    assert window.to_commit() == 1
    window.committed = 1
    assert window.to_commit() is None


# --- dead-letter routing -------------------------------------------------------------------


class _Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.records: list[Any] = []
        self.fail = fail
        self.topic = "dlq"

    async def write(self, record: DeadLetter, origin: KafkaOrigin | None = None) -> None:
        if self.fail:
            raise OSError("broker away")
        self.records.append((record, origin))

    async def close(self) -> None:
        pass


ORIGIN = KafkaOrigin("default", "orders", 2, 41, b"k", b"\xff raw", (("h", b"v"),))


def letter(event_id: str | None = "orders/2/41") -> DeadLetter:
    return DeadLetter(
        rule="r",
        error="DecodeError",
        message="value: invalid JSON",
        time=datetime(2025, 1, 1, tzinfo=UTC),
        event_id=event_id,
        event_source="kafka",
    )


@pytest.mark.parametrize(
    ("cluster_topics", "in_scope", "fail", "to_kafka"),
    [
        ({"default"}, True, False, True),  # a Kafka event of a cluster with a topic
        ({"other"}, True, False, False),  # its cluster has no dead-letter topic: the file
        ({"default"}, False, False, False),  # not a Kafka record being handled: the file
        ({"default"}, True, True, False),  # the topic cannot be written: the file
    ],
)
async def test_dead_letters_route_to_the_clusters_topic_or_the_file(
    cluster_topics: set[str], in_scope: bool, fail: bool, to_kafka: bool
) -> None:
    """Kafka events' dead letters go to their cluster's topic when possible, else to the file."""
    fallback, writer = _Recorder(), _Recorder(fail=fail)
    sink = KafkaDeadLetterSink(fallback, {name: writer for name in cluster_topics})
    if in_scope:
        with origin_scope(ORIGIN):
            await sink.write(letter())
    else:
        await sink.write(letter())
    assert (len(writer.records), len(fallback.records)) == ((1, 0) if to_kafka else (0, 1))


def test_dead_letter_headers_keep_the_original_and_add_the_failure() -> None:
    """Headers are the record's own, then trigger's rule, error and origin headers."""
    headers = dead_letter_headers(letter(), ORIGIN)
    assert headers[0] == ("h", b"v")
    assert dict(headers[1:]) == {
        "trigger.rule": b"r",
        "trigger.error.class": b"DecodeError",
        "trigger.error.message": b"value: invalid JSON",
        "trigger.event.id": b"orders/2/41",
        "trigger.time": b"2025-01-01T00:00:00Z",
        "trigger.original.topic": b"orders",
        "trigger.original.partition": b"2",
        "trigger.original.offset": b"41",
    }
