"""What HTTP clients see of the daemon, and what its log and /metrics say about them.

Wrong methods on the built-in paths, declared bodies over the limit, malformed requests and
clients that go away mid-body: each gets a clear answer and leaves one structured log
line, never a traceback. /metrics has no `_created` series and one label vocabulary.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.component.test_daemon import HOOK_RULE, SECRET, delivery, metric, sign
from tests.conftest import EXAMPLE_EVENTS
from tests.daemon import DaemonProcess, running, wait_for

EB_TOKEN = "eb-token"
CRON_RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: yearly}
spec:
  source: {cron: {schedules: ["0 0 1 1 *"]}}
  workflow: {template: yearly, namespace: ci}
"""
LIMIT = 10 * 1024 * 1024  # http.max_body_bytes' default
# The `source` label's values (README: Metrics); the supervisor's WorkflowTemplate watch is
# restarted like a source and labelled so.
SOURCES = {"webhook", "oss-push", "oss-poll", "kafka", "cron", "template-catalog"}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "hooks.yaml").write_text(HOOK_RULE)
    (rules / "cron.yaml").write_text(CRON_RULE)
    env = {
        "HOOK_SECRET": SECRET,
        "HOOK_TOKEN": "tok",
        "EB_TOKEN": EB_TOKEN,
        "TRIGGER_OSS__PUSH__EVENTBRIDGE_TOKEN_ENV": "EB_TOKEN",
        # A body that never comes would be answered 408 only after this: a 413 must not wait.
        "TRIGGER_HTTP__REQUEST_TIMEOUT": "10m",
    }
    with running(tmp_path, rules, env=env) as d:
        yield d


def exchange(daemon: DaemonProcess, request: bytes) -> bytes:
    """Send `request` on one connection and read what comes back until the server closes
    it or the response is complete."""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        sock.sendall(request)
        stream = sock.makefile("rb")
        head = b"".join(iter(stream.readline, b"\r\n")) + b"\r\n"
        lengths = [
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ]
        return head + stream.read(lengths[0] if lengths else -1)


def cut_off(daemon: DaemonProcess, path: str) -> None:
    """Declare a body of 100 bytes, send 3, and go away."""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(head.encode() + b'{"a')


def logged(daemon: DaemonProcess, **fields: Any) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if all(e.get(k) == v for k, v in fields.items())]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/oss/eventbridge", "POST"),
        ("GET", "/oss/mns", "POST"),
        ("PUT", "/oss/eventbridge", "POST"),
        ("POST", "/metrics", "GET, HEAD"),
        ("POST", "/readyz", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/status", "GET, HEAD"),
    ],
)
def test_wrong_method_on_a_builtin_path_is_405_with_allow(
    daemon: DaemonProcess, method: str, path: str, allow: str
) -> None:
    """A method a built-in path does not take is 405 naming the ones it does, not 404."""
    response = daemon.request(method, path, b"{}" if method != "GET" else None)
    assert response.status == 405, response.body
    assert response.headers["Allow"] == allow
    assert method in response.json()["error"] and path in response.json()["error"]


@pytest.mark.parametrize("path", ["/hooks/build", "/oss/eventbridge", "/oss/mns"])
def test_declared_body_over_the_limit_is_413_at_once(daemon: DaemonProcess, path: str) -> None:
    """A Content-Length over http.max_body_bytes is answered 413 before any body byte is sent, stating the limit."""
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {LIMIT + 1}\r\n\r\n"
    answer = exchange(daemon, head.encode())
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert f"{LIMIT + 1} bytes" in error and f"{LIMIT} bytes" in error
    assert "http.max_body_bytes" in error
    source = "webhook" if path.startswith("/hooks") else "oss-push"
    assert metric(daemon, "trigger_events_rejected_total", source=source, reason="too-large") == 1


def test_chunked_body_over_the_limit_is_413_stating_it(daemon: DaemonProcess) -> None:
    """A body without Content-Length is cut off at http.max_body_bytes with a 413 that says so."""
    chunk = b"x" * (1 << 20)
    head = b"POST /hooks/build HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(11)) + b"0\r\n\r\n"
    answer = exchange(daemon, head + body)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert error == f"request body is over the limit of {LIMIT} bytes (http.max_body_bytes)"


def test_client_errors_are_one_structured_line_each(daemon: DaemonProcess) -> None:
    """Over-long headers, a negative Content-Length and clients gone mid-body log one JSON line each, no traceback."""
    long_header = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    assert exchange(daemon, long_header).startswith(b"HTTP/1.0 400 ")
    negative = b"POST /hooks/build HTTP/1.1\r\nHost: t\r\nContent-Length: -5\r\n\r\n"
    assert exchange(daemon, negative).startswith(b"HTTP/1.0 400 ")
    cut_off(daemon, "/hooks/build")
    cut_off(daemon, "/oss/eventbridge")
    wait_for(
        lambda: (
            len(logged(daemon, event="bad request")) == 2
            and len(logged(daemon, event="delivery refused", reason="disconnected")) == 2
        ),
        what="a log line for each client error",
    )
    for line in logged(daemon, event="bad request"):
        assert line["client"] == "127.0.0.1" and line["level"] == "warning"
        assert line["error"] in {"LineTooLong", "BadHttpMessage"}, line
    sources = {e["source"] for e in logged(daemon, event="delivery refused")}
    assert sources == {"webhook", "oss-push"}
    lines = [line for line in daemon.log().splitlines() if line.strip()]
    assert all(line.startswith("{") for line in lines), [
        line for line in lines if not line.startswith("{")
    ][:5]
    assert not [e for e in daemon.log_events() if "exception" in e or "exc_info" in e]


def test_rejected_bodies_are_logged_with_reason_and_client(daemon: DaemonProcess) -> None:
    """A refused delivery is a warning naming the source, reason, path and client address."""
    body = b"{not json"
    assert daemon.post("/hooks/build", body, sign(body)).status == 400
    unsigned = delivery(1)
    assert daemon.post("/hooks/build", unsigned, {}).status == 401
    eventbridge = b'{"specversion": "1.0"}'
    headers = {"x-eventbridge-signature-token": EB_TOKEN}
    assert daemon.post("/oss/eventbridge", eventbridge, headers).status == 400
    wait_for(lambda: len(logged(daemon, event="delivery refused")) == 3, what="three refusal lines")
    seen = {(e["source"], e["reason"], e["path"]) for e in logged(daemon, event="delivery refused")}
    assert seen == {
        ("webhook", "undecodable", "/hooks/build"),
        ("webhook", "auth", "/hooks/build"),
        ("oss-push", "undecodable", "/oss/eventbridge"),
    }
    for line in logged(daemon, event="delivery refused"):
        assert line["level"] == "warning" and line["client"] == "127.0.0.1"
        assert line["detail"]


def samples(daemon: DaemonProcess) -> list[Any]:
    text = daemon.get("/metrics").body.decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def test_metrics_have_no_created_series(daemon: DaemonProcess) -> None:
    """/metrics exports no `_created` samples, which read like counts."""
    body = delivery(1)
    assert daemon.post("/hooks/build", body, sign(body)).status == 200
    names = {s.name for s in samples(daemon)}
    assert "trigger_events_received_total" in names
    assert not [n for n in names if n.endswith("_created")]


def test_metrics_name_each_source_the_same_way(daemon: DaemonProcess) -> None:
    """Every `source` label uses one vocabulary: oss-push for EventBridge, cron for the cron task."""
    body = delivery(1)
    assert daemon.post("/hooks/build", body, sign(body)).status == 200
    push = (EXAMPLE_EVENTS / "eventbridge-put-csv.json").read_bytes()
    headers = {"x-eventbridge-signature-token": EB_TOKEN, "Content-Type": "application/json"}
    assert daemon.post("/oss/eventbridge", push, headers).status == 200
    assert daemon.post("/oss/eventbridge", b"[", headers).status == 400
    labelled = [s for s in samples(daemon) if "source" in s.labels]
    assert {s.labels["source"] for s in labelled} <= SOURCES, labelled
    assert metric(daemon, "trigger_events_received_total", source="oss-push") == 1
    assert metric(daemon, "trigger_events_received_total", source="webhook") == 1
    assert (
        metric(daemon, "trigger_events_rejected_total", source="oss-push", reason="undecodable")
        == 1
    )
    assert metric(daemon, "trigger_source_running", source="cron") == 1
