"""The daemon run as a subprocess: webhooks, health, metrics, reload and graceful stop."""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import DaemonProcess, running, wait_for

SECRET = "s3cret-value"
HOOK_RULE = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: hook}
spec:
  source:
    webhook: {path: /hooks/build, auth: {hmacSecretEnv: HOOK_SECRET}}
  workflow:
    template: build
    namespace: ci
    parameters: {repo: "{{ event.body.repo }}"}
  idempotencyKey: "{{ event.body.id }}"
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: bearer}
spec:
  source:
    webhook: {path: /hooks/bearer, auth: {bearerTokenEnv: HOOK_TOKEN}}
  workflow: {template: build, namespace: ci}
"""


def sign(body: bytes) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={digest}"}


def delivery(n: int) -> bytes:
    return json.dumps({"id": f"delivery-{n}", "repo": f"acme/repo-{n}"}).encode()


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "hooks.yaml").write_text(HOOK_RULE)
    return rules


@pytest.fixture
def daemon(tmp_path: Path, rules_dir: Path) -> Iterator[DaemonProcess]:
    with running(tmp_path, rules_dir, env={"HOOK_SECRET": SECRET, "HOOK_TOKEN": "tok"}) as d:
        yield d


def metric(d: DaemonProcess, name: str, **labels: str) -> float:
    text = d.get("/metrics").body.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_signed_delivery_creates_one_workflow(daemon: DaemonProcess) -> None:
    """A correctly signed delivery answers 200 after its Workflow exists; a redelivery is a duplicate."""
    body = delivery(1)
    first = daemon.post("/hooks/build", body, sign(body))
    assert first.status == 200, first.body
    (outcome,) = first.json()["events"][0]["workflows"]
    assert outcome["outcome"] == "created"
    files = daemon.workflow_files()
    assert [f.stem for f in files] == [outcome["workflow"]]
    workflow = yaml.safe_load(files[0].read_text())
    assert workflow["spec"]["arguments"]["parameters"] == [{"name": "repo", "value": "acme/repo-1"}]
    again = daemon.post("/hooks/build", body, sign(body))
    assert again.json()["events"][0]["workflows"][0]["outcome"] == "duplicate"
    assert len(daemon.workflow_files()) == 1


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/hooks/build", {"Content-Type": "application/json"}, 401),
        ("/hooks/build", {"X-Hub-Signature-256": "sha256=" + "0" * 64}, 403),
        ("/hooks/bearer", {}, 401),
        ("/hooks/bearer", {"Authorization": "Bearer wrong"}, 403),
        ("/hooks/bearer", {"Authorization": "Bearer tok"}, 200),
        ("/hooks/nowhere", {}, 404),
    ],
)
def test_authentication_and_routing(
    daemon: DaemonProcess, path: str, headers: dict[str, str], status: int
) -> None:
    """Missing credentials are 401, wrong ones 403, unknown paths 404; nothing is created on failure."""
    response = daemon.post(path, delivery(2), headers)
    assert response.status == status, response.body
    assert len(daemon.workflow_files()) == (1 if status == 200 else 0)


def test_oversized_body_is_413(daemon: DaemonProcess) -> None:
    """A body over the limit is refused with 413."""
    body = b"x" * (11 * 1024 * 1024)
    assert daemon.post("/hooks/build", body, sign(body)).status == 413


def test_undecodable_body_is_400(daemon: DaemonProcess) -> None:
    """A signed body that is not the JSON it claims to be is 400."""
    body = b"{not json"
    response = daemon.post("/hooks/build", body, sign(body))
    assert response.status == 400
    assert "json" in response.json()["error"].lower()


def test_render_error_is_dead_lettered_and_acknowledged(daemon: DaemonProcess) -> None:
    """A delivery whose template fails is answered 200, dead-lettered with its reason, counted."""
    body = json.dumps({"id": "x"}).encode()  # no "repo": the parameter cannot render
    response = daemon.post("/hooks/build", body, sign(body))
    assert response.status == 200
    assert response.json()["events"][0]["workflows"][0]["outcome"] == "dead-lettered"
    (record,) = [json.loads(line) for line in daemon.dead_letters.read_text().splitlines()]
    assert record["rule"] == "hook" and record["error"] == "RenderError"
    assert metric(daemon, "trigger_dead_letters_total", rule="hook", error="RenderError") == 1


def test_metrics_count_known_events(daemon: DaemonProcess) -> None:
    """After 3 deliveries (one repeated) and 1 refused, the counters say so."""
    for n in (1, 2, 2):
        body = delivery(n)
        assert daemon.post("/hooks/build", body, sign(body)).status == 200
    daemon.post("/hooks/build", delivery(9), {})
    assert metric(daemon, "trigger_events_received_total", source="webhook") == 3
    assert metric(daemon, "trigger_events_matched_total", rule="hook") == 3
    assert metric(daemon, "trigger_workflows_total", rule="hook", outcome="created") == 2
    assert metric(daemon, "trigger_workflows_total", rule="hook", outcome="duplicate") == 1
    assert metric(daemon, "trigger_events_rejected_total", source="webhook", reason="auth") == 1
    assert metric(daemon, "trigger_rules_loaded") == 2


def test_status_shows_per_rule_activity(daemon: DaemonProcess) -> None:
    """/status lists rules with their last event, last Workflow and counters."""
    body = delivery(5)
    created = daemon.post("/hooks/build", body, sign(body)).json()["events"][0]["workflows"][0]
    status = daemon.get("/status").json()
    hook = status["rules"]["hook"]
    assert hook["created"] == 1 and hook["matched"] == 1
    assert hook["last_workflow"] == created["workflow"]
    assert status["rules"]["bearer"]["source"] == "webhook"


def test_healthz_and_readyz(daemon: DaemonProcess) -> None:
    """/healthz is alive; /readyz reports rules loaded and the sink reachable."""
    assert daemon.get("/healthz").json() == {"status": "alive"}
    ready = daemon.get("/readyz").json()
    assert ready["ready"] is True
    assert ready["rules"] == {"loaded": True, "count": 2, "active": 2, "idle": {}}


def test_bad_rules_at_start_exit_1(tmp_path: Path) -> None:
    """A daemon started on a broken rule file logs file:line:column and exits 1."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text("apiVersion: trigger/v1\nkind: Rule\nmetadata: {name: Bad}\n")
    daemon = DaemonProcess(tmp_path, rules).start(ready=False)
    assert daemon.wait() == 1
    assert f"{rules / 'bad.yaml'}:3:18: rule Bad: metadata.name:" in daemon.log()


def test_bad_config_exit_2(tmp_path: Path, rules_dir: Path) -> None:
    """An invalid configuration is one clear error and exit 2."""
    config = tmp_path / "config.yaml"
    config.write_text("submit: {max_in_flight: 0}\n")
    daemon = DaemonProcess(tmp_path, rules_dir, extra_args=["--config", str(config)]).start(
        ready=False
    )
    assert daemon.wait() == 2
    assert "invalid configuration" in daemon.log() and "submit.max_in_flight" in daemon.log()


def test_reload_good_change(daemon: DaemonProcess, rules_dir: Path) -> None:
    """A new rule file is picked up by the watcher; its path starts taking deliveries."""
    (rules_dir / "more.yaml").write_text(
        HOOK_RULE.replace("name: hook", "name: hook2")
        .replace("/hooks/build", "/hooks/other")
        .split("---")[0]
    )
    wait_for(
        lambda: daemon.post("/hooks/other", delivery(3), sign(delivery(3))).status == 200,
        what="new rule",
    )
    assert metric(daemon, "trigger_rule_reloads_total", result="ok") >= 1


def test_reload_broken_file_keeps_old_rules(daemon: DaemonProcess, rules_dir: Path) -> None:
    """A broken file keeps the previous rules working and shows the error in /readyz and /status."""
    (rules_dir / "broken.yaml").write_text(
        "apiVersion: trigger/v1\nkind: Rule\nmetadata: {name: x}\nspec: {}\n"
    )
    wait_for(
        lambda: metric(daemon, "trigger_rule_reloads_total", result="error") >= 1,
        what="failed reload",
    )
    body = delivery(4)
    assert daemon.post("/hooks/build", body, sign(body)).status == 200
    detail = daemon.get("/readyz").json()["rules"]["lastReloadError"]
    assert any("broken.yaml:4:1: rule x: source: required field is missing" in p for p in detail), (
        detail
    )
    assert daemon.get("/status").json()["lastReloadError"]


def test_sighup_reloads(tmp_path: Path, rules_dir: Path) -> None:
    """With the watcher off, SIGHUP reloads the rules."""
    env = {"HOOK_SECRET": SECRET, "HOOK_TOKEN": "tok", "TRIGGER_RELOAD": "false"}
    with running(tmp_path, rules_dir, env=env) as daemon:
        (rules_dir / "hooks.yaml").write_text(HOOK_RULE.replace("/hooks/bearer", "/hooks/bearer2"))
        assert daemon.post("/hooks/bearer2", b"", {"Authorization": "Bearer tok"}).status == 404
        daemon.signal(signal.SIGHUP)
        wait_for(
            lambda: (
                daemon.post("/hooks/bearer2", b"", {"Authorization": "Bearer tok"}).status == 200
            ),
            what="SIGHUP reload",
        )


def test_sigterm_during_a_burst_loses_nothing(daemon: DaemonProcess) -> None:
    """SIGTERM during a burst: every delivery answered 2xx has its Workflow, and the exit is 0."""

    def send(n: int) -> tuple[int, str | None]:
        body = delivery(n)
        response = daemon.post("/hooks/build", body, sign(body))
        if response.status != 200:
            return response.status, None
        return 200, response.json()["events"][0]["workflows"][0]["workflow"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(send, n) for n in range(300)]
        wait_for(lambda: sum(f.done() for f in futures) >= 30, what="some deliveries")
        daemon.signal(signal.SIGTERM)
        results = [f.result() for f in futures]
    assert daemon.wait() == 0, daemon.log()[-3000:]
    accepted = {name for status, name in results if status == 200}
    assert accepted, "no delivery was accepted before the stop"
    on_disk = {f.stem for f in daemon.workflow_files()}
    assert accepted <= on_disk
    assert '"stopped cleanly"' in daemon.log()


@pytest.mark.parametrize("strict", [False, True], ids=["idle", "strict"])
def test_reload_adding_a_rule_its_source_cannot_serve(
    tmp_path: Path, rules_dir: Path, strict: bool
) -> None:
    """A reload adding a rule the stdout sink cannot serve (cron Forbid) makes it idle, with
    the reason in /status; in strict mode the reload is refused and the old rules stay."""
    env = {"HOOK_SECRET": SECRET, "HOOK_TOKEN": "tok"}
    args = ["--sink", "stdout", *(["--strict"] if strict else [])]
    with running(tmp_path, rules_dir, env=env, extra_args=args) as daemon:
        (rules_dir / "cron.yaml").write_text(
            "apiVersion: trigger/v1\nkind: Rule\nmetadata: {name: nightly}\nspec:\n"
            "  source: {cron: {schedules: ['0 2 * * *'], concurrencyPolicy: Forbid}}\n"
            "  workflow: {template: t}\n"
        )
        result = "error" if strict else "ok"
        wait_for(
            lambda: metric(daemon, "trigger_rule_reloads_total", result=result) >= 1,
            what="the reload",
        )
        assert daemon.process is not None and daemon.process.poll() is None
        detail = daemon.get("/readyz").json()["rules"]
        if strict:
            assert detail["count"] == 2
            assert any("Forbid" in p for p in detail["lastReloadError"]), detail
        else:
            assert "Forbid" in detail["idle"]["nightly"]
            assert daemon.get("/status").json()["rules"]["nightly"]["verdict"] == "idle"


def test_signal_delivered_twice_is_one_stop(daemon: DaemonProcess) -> None:
    """SIGTERM sent to the process and its group at once stops cleanly (exit 0), not forced."""
    daemon.signal(signal.SIGTERM)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert "second signal" not in daemon.log()


def test_match_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """`trigger match ... | head` ends without a traceback."""
    import subprocess
    import sys

    from tests.conftest import EXAMPLE_EVENTS, EXAMPLE_RULES

    command = [
        sys.executable,
        "-m",
        "trigger.cli",
        "match",
        "--rules",
        str(EXAMPLE_RULES),
        *map(str, sorted(EXAMPLE_EVENTS.iterdir())),
    ]
    producer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert producer.stdout is not None
    producer.stdout.read(10)
    producer.stdout.close()
    _, err = producer.communicate(timeout=60)
    assert b"Traceback" not in err


def test_metrics_on_their_own_port(tmp_path: Path, rules_dir: Path) -> None:
    """With metrics_listen, /metrics is served there and not on the main port."""
    from tests.daemon import free_port

    port = free_port()
    env = {
        "HOOK_SECRET": SECRET,
        "HOOK_TOKEN": "tok",
        "TRIGGER_METRICS_LISTEN": f"127.0.0.1:{port}",
    }
    with running(tmp_path, rules_dir, env=env) as daemon:
        assert daemon.get("/metrics").status == 404
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert b"trigger_rules_loaded 2.0" in response.read()


METHOD_RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: on-post}
spec:
  source: {webhook: {path: /hooks/item, methods: [POST]}}
  workflow: {template: created, namespace: ci}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: on-put}
spec:
  source: {webhook: {path: /hooks/item, methods: [PUT]}}
  workflow: {template: updated, namespace: ci}
"""


def test_webhook_methods_per_rule(tmp_path: Path) -> None:
    """Two rules on one path: POST fires only the POST rule, PUT only the PUT rule, DELETE is 405."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "item.yaml").write_text(METHOD_RULES)
    with running(tmp_path, rules) as daemon:
        for method, rule in (("POST", "on-post"), ("PUT", "on-put")):
            response = daemon.request(method, "/hooks/item", b'{"n": 1}')
            assert response.status == 200, response.body
            outcomes = response.json()["events"][0]["workflows"]
            assert [(o["rule"], o["outcome"]) for o in outcomes] == [(rule, "created")]
        templates = sorted(
            yaml.safe_load(f.read_text())["spec"]["workflowTemplateRef"]["name"]
            for f in daemon.workflow_files()
        )
        assert templates == ["created", "updated"]
        refused = daemon.request("DELETE", "/hooks/item", b"")
        assert refused.status == 405
        assert refused.headers["Allow"] == "POST, PUT"
        assert len(daemon.workflow_files()) == 2


def test_clean_stop_is_quiet_and_ends_with_a_summary(tmp_path: Path, rules_dir: Path) -> None:
    """SIGTERM on a daemon running cron and webhook rules logs no warning, exits 0, and its
    last line sums up the run: events, Workflows created and duplicate, dead letters, uptime."""
    (rules_dir / "cron.yaml").write_text(
        "apiVersion: trigger/v1\nkind: Rule\nmetadata: {name: tick}\nspec:\n"
        "  source: {cron: {schedules: ['0 2 * * *']}}\n"
        "  workflow: {template: t, namespace: default}\n"
    )
    with running(tmp_path, rules_dir, env={"HOOK_SECRET": SECRET, "HOOK_TOKEN": "tok"}) as d:
        body = delivery(1)
        assert d.post("/hooks/build", body, sign(body)).status == 200
        assert d.post("/hooks/build", body, sign(body)).status == 200
        stopping = len(d.log_events())
        d.signal(signal.SIGTERM)
        assert d.wait() == 0
        after = d.log_events()[stopping:]
    assert [e for e in after if e["level"] not in ("info", "debug")] == []
    summary = after[-1]
    assert summary["event"] == "stopped cleanly"
    assert (summary["events"], summary["created"], summary["duplicates"]) == (2, 1, 1)
    assert summary["dead_letters"] == 0
    assert summary["uptime"] > 0
