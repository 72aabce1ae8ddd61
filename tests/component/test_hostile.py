"""Hostile inputs, one table row each: every way in takes it with its own clear outcome.

One `trigger run` subprocess serves the whole table: webhooks signed with HMAC and with a
bearer token, EventBridge with a token and its RSA signature, MNS with RSA signatures (both
certificates from a loopback host), Kafka through tansu, and a cron rule; rule files go
through the CLI (`validate`, `match`, `fire`, `schedule`). Each row names its input and
its expected outcome — an HTTP status and the rejection metric that moves, a dead letter
and the log line naming the event, a Workflow with exactly the value sent, a CLI exit
code with its `file:line:column` — and after every row a valid signed delivery still
becomes its Workflow, the daemon is alive, and its log holds no traceback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import itertools
import json
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import DaemonProcess, Response, certificate_host, wait_for
from tests.unit.test_oss_signatures import eventbridge_headers, make_key_and_cert, mns_headers
from trigger.cli import main
from trigger.testing.kafka import KafkaBroker
from trigger.testing.ossserver import build_eventbridge_event, build_mns_message, build_oss_record

SECRET, BEARER, EB_TOKEN = "hook-s3cret", "bearer-t0ken", "eb-t0ken"
TOPIC = "hostile"
LIMIT = 10 * 1024 * 1024  # http.max_body_bytes' default
MIB = 1024 * 1024
RULES = f"""
apiVersion: trigger/v1
kind: Rule
metadata: {{name: hook-hmac}}
spec:
  source: {{webhook: {{path: /hooks/hmac, auth: {{hmacSecretEnv: HOOK_SECRET}}}}}}
  workflow: {{template: build, namespace: ci, parameters: {{repo: "{{{{ event.body.repo }}}}"}}}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: hook-bearer}}
spec:
  source: {{webhook: {{path: /hooks/bearer, auth: {{bearerTokenEnv: HOOK_TOKEN}}}}}}
  workflow: {{template: build, namespace: ci}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: hook-values}}
spec:
  source: {{webhook: {{path: /hooks/values, auth: {{hmacSecretEnv: HOOK_SECRET}}}}}}
  workflow: {{template: build, namespace: ci, parameters: {{v: "{{{{ event.body.v }}}}"}}}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: hook-header}}
spec:
  source: {{webhook: {{path: /hooks/header, auth: {{hmacSecretEnv: HOOK_SECRET}}}}}}
  workflow:
    template: build
    namespace: ci
    parameters: {{tag: "{{{{ event.headers['x-tag'] }}}}", q: "{{{{ event.query.q }}}}"}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: hook-render}}
spec:
  source: {{webhook: {{path: /hooks/render, auth: {{hmacSecretEnv: HOOK_SECRET}}}}}}
  workflow:
    template: build
    namespace: ci
    parameters: {{out: "{{{{ event.body.s * event.body.n }}}}"}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: hook-regex}}
spec:
  source: {{webhook: {{path: /hooks/regex, auth: {{hmacSecretEnv: HOOK_SECRET}}}}}}
  workflow:
    template: build
    namespace: ci
    parameters: {{out: "{{{{ event.body.s | regex_replace(event.body.p, '-') }}}}"}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: hook-cel}}
spec:
  source: {{webhook: {{path: /hooks/cel, auth: {{hmacSecretEnv: HOOK_SECRET}}}}}}
  filter: {{expr: "event.body.n / event.body.d >= 1 && event.body.l.exists(x, x == 'needle')"}}
  workflow: {{template: build, namespace: ci, parameters: {{n: "{{{{ event.body.n }}}}"}}}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: hook-nested}}
spec:
  source: {{webhook: {{path: /hooks/nested, auth: {{hmacSecretEnv: HOOK_SECRET}}}}}}
  filter: {{expr: "event.body.l.all(x, event.body.l.all(y, x + y >= 0))"}}
  workflow: {{template: build, namespace: ci, parameters: {{n: "{{{{ event.body.l | length }}}}"}}}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: oss-any}}
spec:
  source: {{oss: {{bucket: example-bucket, events: ["*"]}}}}
  workflow:
    template: ingest
    namespace: data
    parameters: {{key: "{{{{ event.key }}}}"}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: kafka-json}}
spec:
  source: {{kafka: {{topics: [{TOPIC}], format: json}}}}
  workflow: {{template: process, namespace: ci, parameters: {{n: "{{{{ event.value.n }}}}"}}}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: kafka-text}}
spec:
  source: {{kafka: {{topics: [{TOPIC}], format: text}}}}
  workflow:
    template: process
    namespace: ci
    parameters:
      key: "{{{{ event.key | default('no-key', true) }}}}"
      headers: "{{{{ event.headers | tojson }}}}"
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: every-second}}
spec:
  source: {{cron: {{schedules: ["* * * * * *"], catchUp: none}}}}
  workflow: {{template: tick, namespace: ci}}
"""


# --- the daemon and what the rows use of it -----------------------------------------------


@dataclass
class Hostile:
    """The daemon under attack, its certificate host, and the broker it consumes from."""

    daemon: DaemonProcess
    key: rsa.RSAPrivateKey
    cert_url: str
    bootstrap: str
    tmp: Path
    _seen: dict[Path, dict[str, Any]]
    _count: Iterator[int]
    log_mark: int = 0  # where in the log the current row's lines begin

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> Response:
        return self.daemon.post(path, body, headers or {})

    def metric(self, name: str, **labels: str) -> float:
        text = self.daemon.get("/metrics").body.decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def workflows(self) -> dict[Path, dict[str, Any]]:
        """Every Workflow the local sink holds, each file parsed once."""
        for path in self.daemon.workflow_files():
            if path not in self._seen:
                self._seen[path] = yaml.safe_load(path.read_text())
        return self._seen

    def workflow(self, name: str) -> dict[str, Any]:
        (found,) = [w for p, w in self.workflows().items() if p.stem == name]
        return found

    def of_event(self, event_id: str) -> list[dict[str, Any]]:
        return [
            w
            for w in self.workflows().values()
            if w["metadata"]["annotations"]["trigger.dev/event-id"] == event_id
        ]

    def dead_letters(self, event_id: str) -> list[dict[str, Any]]:
        if not self.daemon.dead_letters.exists():
            return []
        lines = self.daemon.dead_letters.read_text().splitlines()
        return [x for x in map(json.loads, lines) if x["event_id"] == event_id]

    def logged(self, **fields: Any) -> list[dict[str, Any]]:
        return [
            e for e in self.daemon.log_events() if all(e.get(k) == v for k, v in fields.items())
        ]

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{next(self._count)}"

    def neighbour_still_works(self) -> None:
        """A valid signed delivery becomes its Workflow; the daemon is alive and its log
        has no traceback and no line that is not JSON."""
        repo = self.unique("acme/valid")
        body = json.dumps({"repo": repo}).encode()
        reply = self.post("/hooks/hmac", body, signed(body))
        assert reply.status == 200, reply.body[:300]
        (outcome,) = reply.json()["events"][0]["workflows"]
        assert outcome["outcome"] == "created", outcome
        assert params(self.workflow(outcome["workflow"])) == {"repo": repo}
        assert self.daemon.process is not None and self.daemon.process.poll() is None
        lines = [line for line in self.daemon.log()[self.log_mark :].splitlines() if line.strip()]
        assert all(line.startswith("{") for line in lines), [
            line for line in lines if not line.startswith("{")
        ][:3]
        events = [json.loads(line) for line in lines]
        tracebacks = [e for e in events if "exception" in e or "exc_info" in e]
        assert not tracebacks, tracebacks[:2]


def params(workflow: dict[str, Any]) -> dict[str, str]:
    arguments = workflow["spec"].get("arguments", {})
    return {p["name"]: p["value"] for p in arguments.get("parameters", [])}


def signed(body: bytes, content_type: str = "application/json", **extra: str) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": content_type, "X-Hub-Signature-256": f"sha256={digest}", **extra}


@pytest.fixture(scope="module")
def hostile(broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """One daemon for the whole table, every source it can take configured."""
    tmp = tmp_path_factory.mktemp("hostile")
    asyncio.run(broker.create_topics({TOPIC: 1}))
    key, pem = make_key_and_cert()
    with certificate_host(pem) as cert_url:
        rules = tmp / "rules"
        rules.mkdir()
        (rules / "hostile.yaml").write_text(RULES)
        config = {
            "http": {"request_timeout": "2s"},
            "oss": {
                "push": {
                    "eventbridge_token_env": "EB_TOKEN",
                    "eventbridge_verify_signature": True,
                    "eventbridge_cert_hosts": ["127.0.0.1"],
                    "mns_cert_hosts": ["127.0.0.1"],
                }
            },
            "kafka": {
                "clusters": {
                    "default": {
                        "bootstrap_servers": broker.bootstrap,
                        "group": "hostile",
                        "auto_offset_reset": "earliest",
                        "session_timeout": "1s",
                        "heartbeat_interval": "200ms",
                    }
                }
            },
        }
        (tmp / "config.yaml").write_text(json.dumps(config))
        env = {"HOOK_SECRET": SECRET, "HOOK_TOKEN": BEARER, "EB_TOKEN": EB_TOKEN}
        daemon = DaemonProcess(
            tmp, rules, extra_args=["--config", str(tmp / "config.yaml")], env=env
        )
        try:
            daemon.start()
            wait_for(
                lambda: any(
                    e.get("event") == "kafka partitions assigned" for e in daemon.log_events()
                ),
                what="the Kafka partition assigned",
            )
            yield Hostile(daemon, key, cert_url, broker.bootstrap, tmp, {}, itertools.count())
        finally:
            daemon.stop()


# --- kinds of row ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile input and the check of its expected outcome."""

    id: str
    run: Callable[[Hostile], None]


def http(
    id: str,
    path: str,
    body: bytes | Callable[[Hostile], bytes],
    headers: dict[str, str] | Callable[[bytes], dict[str, str]] | None = None,
    *,
    status: int,
    reason: str | None = None,
    source: str = "webhook",
    outcome: Callable[[Hostile, Response], None] | None = None,
) -> Case:
    """A request; its status, the `trigger_events_rejected_total{source,reason}` it moves,
    and (for 200) what became of it."""

    def run(h: Hostile) -> None:
        data = body(h) if callable(body) else body
        sent = headers(data) if callable(headers) else (headers or {})
        before = h.metric("trigger_events_rejected_total", source=source, reason=reason or "")
        reply = h.post(path, data, sent)
        assert reply.status == status, reply.body[:300]
        if status >= 400:
            assert reply.json()["error"], reply.body
        if reason is not None:
            after = h.metric("trigger_events_rejected_total", source=source, reason=reason)
            assert after == before + 1, (before, after)
        if outcome is not None:
            outcome(h, reply)

    return Case(id, run)


def exchange(h: Hostile, request: bytes, *, read_all: bool = True) -> bytes:
    """Send raw bytes on one connection; what comes back until the response is complete."""
    with socket.create_connection(("127.0.0.1", h.daemon.port), timeout=30) as sock:
        sock.sendall(request)
        stream = sock.makefile("rb")
        head = b"".join(iter(stream.readline, b"\r\n")) + b"\r\n"
        lengths = [
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ]
        return head + (stream.read(lengths[0] if lengths else -1) if read_all else b"")


def raw(
    id: str,
    request: bytes | Callable[[Hostile], bytes],
    *,
    status: int,
    reason: str | None = None,
    source: str = "webhook",
) -> Case:
    """Bytes on a socket, as no well-behaved client would send them; the status line back."""

    def run(h: Hostile) -> None:
        data = request(h) if callable(request) else request
        before = h.metric("trigger_events_rejected_total", source=source, reason=reason or "")
        answer = exchange(h, data)
        assert answer.split(b" ", 2)[1] == str(status).encode(), answer[:300]
        if reason is not None:
            after = h.metric("trigger_events_rejected_total", source=source, reason=reason)
            assert after == before + 1, (before, after)

    return Case(id, run)


def run_cli(where: Path, argv: list[str]) -> tuple[int, str]:
    """`trigger.cli.main(argv)` in this process from `where`: its exit code and output.
    (A subprocess would spend a second a run importing.) One-shot commands route the
    root logger to stderr at ERROR; it is given back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out, err = io.StringIO(), io.StringIO()
    try:
        with (
            contextlib.chdir(where),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            code = main(argv)
    finally:
        root.handlers[:], root.level = handlers, level
    return code, out.getvalue() + err.getvalue()


def cli(
    id: str,
    command: str,
    files: dict[str, str | bytes | Callable[[], str]],
    *args: str,
    exit: int,
    says: tuple[str, ...] = (),
    then: Callable[[Path], None] | None = None,
) -> Case:
    """`trigger COMMAND` on rule files written for the row; its exit code and what it says
    (each of `says` in stdout or stderr). A traceback would fail the row as an exception."""

    def run(h: Hostile) -> None:
        where = h.tmp / h.unique("cli")
        where.mkdir()
        for name, text in files.items():
            content = text() if callable(text) else text
            data = content if isinstance(content, bytes) else content.encode()
            (where / name).write_bytes(data)
        code, output = run_cli(where, [command, *args])
        assert code == exit, output[-2000:]
        for text in says:
            assert text in output, output[-2000:]
        assert "Traceback" not in output, output[-2000:]
        if then is not None:
            then(where)

    return Case(id, run)


POISON_LINES = {"dead-lettered", "event is poison for rule"}
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]  # key, value, headers


async def _produce(bootstrap: str, records: list[Record]) -> list[int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 << 20)
    await producer.start()
    try:
        offsets = []
        for key, value, headers in records:
            sent = await producer.send_and_wait(TOPIC, value, key=key, partition=0, headers=headers)
            offsets.append(sent.offset)
        return offsets
    finally:
        await producer.stop()


def kafka(
    id: str,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None = None,
    *,
    json_rule: str | dict[str, str],
    text_rule: str | dict[str, str],
) -> Case:
    """One record, then a valid one behind it on the same partition. Each rule's expected
    outcome for the record: the parameters of its Workflow, or the error class of its dead
    letter (then a `dead-lettered` log line names the event)."""

    def run(h: Hostile) -> None:
        marker = h.unique("kafka-valid")
        valid: Record = (b"k", json.dumps({"n": marker}).encode(), [])
        offset, _ = asyncio.run(_produce(h.bootstrap, [(key, value, headers or []), valid]))
        wait_for(
            lambda: any(params(w) == {"n": marker} for w in h.workflows().values()),
            what="the valid record's Workflow",
        )
        event_id = f"{TOPIC}/0/{offset}"
        # Records of one partition are worked on concurrently: the valid one may be done
        # first, so each rule's outcome for the record is waited for too.
        for rule, expected in (("kafka-json", json_rule), ("kafka-text", text_rule)):
            if isinstance(expected, dict):
                made = wait_for(
                    lambda rule=rule: [w for w in h.of_event(event_id) if rule_of(w) == rule],
                    what=f"the Workflow of {rule}",
                )
                assert [params(w) for w in made] == [expected], made
                continue
            assert not [w for w in h.of_event(event_id) if rule_of(w) == rule]
            letters = wait_for(
                lambda rule=rule: [x for x in h.dead_letters(event_id) if x["rule"] == rule],
                what=f"the dead letter of {rule}",
            )
            assert [x["error"] for x in letters] == [expected], letters
            wait_for(
                lambda rule=rule: (
                    {e["event"] for e in h.logged(event_id=event_id, rule=rule)} & POISON_LINES
                ),
                what=f"the log line naming the event and {rule}",
            )

    return Case(id, run)


def rule_of(workflow: dict[str, Any]) -> str:
    return str(workflow["metadata"]["labels"]["trigger.dev/rule"])


def created(expected: dict[str, str] | None = None) -> Callable[[Hostile, Response], None]:
    """A 200 whose one Workflow was created, with these parameters."""

    def check(h: Hostile, reply: Response) -> None:
        (outcome,) = reply.json()["events"][0]["workflows"]
        assert outcome["outcome"] == "created", outcome
        if expected is not None:
            assert params(h.workflow(outcome["workflow"])) == expected

    return check


def dead_lettered(error: str, says: str) -> Callable[[Hostile, Response], None]:
    """A 200 whose one rule failed for good: the outcome names the error, a dead letter
    holds it, a `dead-lettered` log line names the event."""

    def check(h: Hostile, reply: Response) -> None:
        (event,) = reply.json()["events"]
        (outcome,) = event["workflows"]
        assert outcome["outcome"] == "dead-lettered", outcome
        assert outcome["error"].startswith(error) and says in outcome["error"], outcome
        (letter,) = h.dead_letters(event["id"])
        assert letter["error"] == error and says in letter["message"], letter
        assert h.logged(event="dead-lettered", event_id=event["id"])

    return check


def nothing(h: Hostile, reply: Response) -> None:
    """A 200 for a delivery no rule took."""
    assert [e["workflows"] for e in reply.json()["events"]] == [[]]


def values_body(value: Any) -> Callable[[Hostile], bytes]:
    return lambda h: json.dumps({"v": value, "id": h.unique("v")}).encode()


def value_kept(value: str) -> Callable[[Hostile, Response], None]:
    return created({"v": value})


# --- bodies the rows send -------------------------------------------------------------------

NOW = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)


def repo_body(h: Hostile) -> bytes:
    return json.dumps({"repo": h.unique("acme/r")}).encode()


def deep(levels: int) -> bytes:
    return b'{"repo": "x", "d": ' + b"[" * levels + b"]" * levels + b"}"


def cloudevent(object_key: str, **fields: Any) -> Callable[[Hostile], bytes]:
    def body(h: Hostile) -> bytes:
        event_id = h.unique("EB")
        etag = hashlib.md5(event_id.encode()).hexdigest().upper()
        event = build_eventbridge_event(
            "example-bucket", object_key, 11, etag, "ObjectCreated:PutObject", "cn-hangzhou",
            "1234567890123456", NOW, event_id=event_id,
        )  # fmt: skip
        event["data"]["oss"]["object"].update(fields)
        return json.dumps(event).encode()

    return body


def cloudevents(count: int, bucket: str) -> Callable[[Hostile], bytes]:
    """A JSON array of `count` CloudEvents in one delivery."""

    def body(h: Hostile) -> bytes:
        events = []
        for _ in range(count):
            event = json.loads(cloudevent(h.unique("in/many"))(h))
            event["data"]["oss"]["bucket"]["name"] = bucket
            events.append(event)
        return json.dumps(events).encode()

    return body


def all_created(count: int) -> Callable[[Hostile, Response], None]:
    def check(h: Hostile, reply: Response) -> None:
        outcomes = [w["outcome"] for e in reply.json()["events"] for w in e["workflows"]]
        assert outcomes == ["created"] * count

    return check


def none_matched(count: int) -> Callable[[Hostile, Response], None]:
    def check(h: Hostile, reply: Response) -> None:
        assert [e["workflows"] for e in reply.json()["events"]] == [[]] * count

    return check


def mns_xml(message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<Notification xmlns="http://mns.aliyuncs.com/doc/v1/"><TopicOwner>1</TopicOwner>'
        "<TopicName>oss-events</TopicName><Subscriber>1</Subscriber>"
        "<SubscriptionName>trigger</SubscriptionName><MessageId>M1</MessageId>"
        f"<Message>{message}</Message><MessageMD5>X</MessageMD5><MessageTag></MessageTag>"
        "<PublishTime>1735877106000</PublishTime></Notification>"
    ).encode()


def mns_push(key: str) -> Callable[[Hostile], bytes]:
    """An MNS XML notification of one upload whose key is written as MNS writes it."""

    def body(h: Hostile) -> bytes:
        request_id = h.unique("MNS")
        etag = hashlib.md5(request_id.encode()).hexdigest().upper()
        record = build_oss_record(
            "example-bucket", key, 7, etag, "ObjectCreated:PutObject", "cn-beijing",
            "1234567890123456", NOW, request_id=request_id,
        )  # fmt: skip
        return mns_xml(build_mns_message([record]))

    return body


def mns_post(
    id: str,
    body: bytes | Callable[[Hostile], bytes],
    *,
    status: int,
    reason: str | None = None,
    outcome: Callable[[Hostile, Response], None] | None = None,
    cert_url: str | None = None,
    age: timedelta = timedelta(0),
    signer: rsa.RSAPrivateKey | None = None,
    unsigned: bool = False,
    tamper: dict[str, str] | None = None,
) -> Case:
    """An MNS push signed as MNS signs it (or as an attacker would)."""

    def run(h: Hostile) -> None:
        key = signer or h.key
        headers = mns_headers(key, "/oss/mns", cert_url or h.cert_url, now=datetime.now(UTC) - age)
        if unsigned:
            del headers["Authorization"]
        headers.update(tamper or {})
        http(
            id, "/oss/mns", body, headers, status=status, reason=reason, source="oss-push",
            outcome=outcome,
        ).run(h)  # fmt: skip

    return Case(id, run)


def eb(
    id: str,
    body: bytes | Callable[[Hostile], bytes],
    *,
    status: int,
    reason: str | None = None,
    outcome: Callable[[Hostile, Response], None] | None = None,
    headers: dict[str, str | None] | None = None,
    signer: rsa.RSAPrivateKey | None = None,
    age: timedelta = timedelta(0),
    cert_url: str | None = None,
    other_body: bool = False,
) -> Case:
    """An EventBridge push with its token and v2 RSA signature, as EventBridge sends it
    (or as an attacker would: `headers` replaces or, with None, drops headers)."""

    def run(h: Hostile) -> None:
        data = body(h) if callable(body) else body
        sent: dict[str, str | None] = {
            "Content-Type": "application/json",
            **eventbridge_headers(
                signer or h.key,
                f"{h.daemon.url}/oss/eventbridge",
                data + b" " if other_body else data,
                cert_url or h.cert_url,
                now=datetime.now(UTC) - age,
                token=EB_TOKEN,
            ),
            **(headers or {}),
        }
        final = {k: v for k, v in sent.items() if v is not None}
        http(
            id, "/oss/eventbridge", data, final, status=status, reason=reason,
            source="oss-push", outcome=outcome,
        ).run(h)  # fmt: skip

    return Case(id, run)


def replayed(path: str, headers: Callable[[bytes], dict[str, str]]) -> Case:
    """The same authenticated delivery twice: one Workflow, the replay a duplicate."""

    def run(h: Hostile) -> None:
        body = repo_body(h)
        first, again = (h.post(path, body, headers(body)) for _ in range(2))
        outcomes = [r.json()["events"][0]["workflows"][0] for r in (first, again)]
        assert [o["outcome"] for o in outcomes] == ["created", "duplicate"], outcomes
        assert outcomes[0]["workflow"] == outcomes[1]["workflow"]

    return Case(f"{path.rsplit('/', 1)[1]}-replayed-delivery-is-a-duplicate", run)


def chunked(body: bytes, chunks: int = 3) -> bytes:
    size = -(-len(body) // chunks)
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def request_head(path: str, headers: dict[str, str], extra: bytes = b"") -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST {path} HTTP/1.1\r\nHost: t\r\n{lines}".encode() + extra + b"\r\n"


def signed_chunked(h: Hostile) -> bytes:
    body = repo_body(h)
    head = request_head("/hooks/hmac", {**signed(body), "Transfer-Encoding": "chunked"})
    return head + chunked(body)


def signed_raw(path: str, extra: bytes = b"") -> Callable[[Hostile], bytes]:
    def request(h: Hostile) -> bytes:
        body = repo_body(h)
        head = request_head(path, {**signed(body), "Content-Length": str(len(body))}, extra)
        return head + body

    return request


def expect_continue(h: Hostile) -> None:
    """A sender that waits for `100 Continue` before its body, as curl does over 1 KiB."""
    body = repo_body(h)
    headers = {**signed(body), "Content-Length": str(len(body)), "Expect": "100-continue"}
    with socket.create_connection(("127.0.0.1", h.daemon.port), timeout=30) as sock:
        sock.sendall(request_head(HOOK, headers))
        stream = sock.makefile("rb")
        assert stream.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert stream.readline() == b"\r\n"
        sock.sendall(body)
        assert stream.readline().startswith(b"HTTP/1.1 200 ")


def cut(id: str, path: str, declared: int, sent: bytes, *, source: str) -> Case:
    """A body cut short: the client goes away after part of it."""

    def run(h: Hostile) -> None:
        before = h.metric("trigger_events_rejected_total", source=source, reason="disconnected")
        with socket.create_connection(("127.0.0.1", h.daemon.port), timeout=30) as sock:
            sock.sendall(request_head(path, {"Content-Length": str(declared)}) + sent)
        wait_for(
            lambda: (
                h.metric("trigger_events_rejected_total", source=source, reason="disconnected")
                == before + 1
            ),
            what="the cut-off delivery counted",
        )

    return Case(id, run)


def expression_error(says: str, rule: str = "hook-cel") -> Callable[[Hostile, Response], None]:
    """No match: the CEL error is logged with the event's id and what failed."""

    def check(h: Hostile, reply: Response) -> None:
        (event,) = reply.json()["events"]
        assert event["workflows"] == []
        lines = h.logged(event="filter.expr failed", event_id=event["id"], rule=rule)
        assert [says in line["error"] for line in lines] == [True], lines

    return check


# --- rule files the CLI rows write ----------------------------------------------------------


def rule_file(name: str = "r", *, source: str = "{webhook: {path: /h}}", **spec: str) -> str:
    """One rule in flow style; `spec` entries replace or add keys of its spec."""
    parts = {"source": source, "workflow": "{template: t, namespace: ci}", **spec}
    body = ", ".join(f"{k}: {v}" for k, v in parts.items())
    return f"apiVersion: trigger/v1\nkind: Rule\nmetadata: {{name: {name}}}\nspec: {{{body}}}\n"


def with_parameter(template: str) -> str:
    return rule_file(
        workflow=f"{{template: t, namespace: ci, parameters: {{p: {json.dumps(template)}}}}}"
    )


def cron_file(schedule: str) -> str:
    return rule_file("c", source=f"{{cron: {{schedules: [{json.dumps(schedule)}]}}}}")


def with_expr(expr: str) -> str:
    return rule_file(filter=f"{{expr: {json.dumps(expr)}}}")


BILLION_LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{b}: &{b} [" + ",".join([f"*{a}"] * 9) + "]"
            for a, b in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


def many_documents(count: int, document: str) -> Callable[[], str]:
    return lambda: "".join(f"---\n{document}" for _ in range(count))


def numbered_rules(count: int) -> Callable[[], str]:
    return lambda: "".join(
        f"---\n{rule_file(f'r{i}', source=f'{{webhook: {{path: /h{i}}}}}')}" for i in range(count)
    )


WEBHOOK_EVENT = json.dumps({"webhook": {"path": "/h", "body": {"x": 1}}})

FIRE = ("--rules", "rules.yaml", "--sink", "local:wf", "--dead-letter", "file:dl.jsonl")


def fired_with(value: str) -> Callable[[Path], None]:
    def check(where: Path) -> None:
        (path,) = (where / "wf").rglob("*.yaml")
        assert params(yaml.safe_load(path.read_text())) == {"p": value}

    return check


def cron_still_ticks(h: Hostile) -> None:
    """After all the rows above, the every-second rule still fires its next tick."""

    def ticks() -> int:
        return sum(1 for w in h.workflows().values() if rule_of(w) == "every-second")

    seen = ticks()
    wait_for(lambda: ticks() > seen, what="another cron tick's Workflow")


# --- the table ------------------------------------------------------------------------------

HOOK = "/hooks/hmac"
VALUES = "/hooks/values"
CASES = [
    # Bodies that are not what they claim to be.
    http("json-invalid", HOOK, b"{not json", signed, status=400, reason="undecodable"),
    http("json-truncated", HOOK, b'{"repo": "acme/x"', signed, status=400, reason="undecodable"),
    http("json-trailing-garbage", HOOK, b'{"repo": "a"} }', signed, status=400, reason="undecodable"),
    http("json-nan", HOOK, b'{"repo": NaN}', signed, status=400, reason="undecodable"),
    http("json-number-overflows-float", HOOK, b'{"repo": 1e400}', signed, status=400, reason="undecodable"),
    http("json-int-of-5000-digits", HOOK, b'{"repo": 1' + b"0" * 5000 + b"}", signed, status=400, reason="undecodable"),
    http("json-invalid-utf8", HOOK, b'{"repo": "\\xff\\xfe"}'.replace(b"\\xff\\xfe", b"\xff\xfe"), signed, status=400, reason="undecodable"),
    http("json-overlong-utf8-slash", HOOK, b'{"repo": "\xc0\xaf"}', signed, status=400, reason="undecodable"),
    http("json-utf16", HOOK, '{"repo": "x"}'.encode("utf-16"), signed, status=400, reason="undecodable"),
    http("json-unknown-charset", HOOK, b'{"repo": "x"}', lambda b: signed(b, "application/json; charset=x-evil"), status=400, reason="undecodable"),
    http("json-nested-101-levels", HOOK, deep(100), signed, status=400, reason="undecodable"),
    http("json-nested-100000-levels", HOOK, deep(100_000), signed, status=400, reason="undecodable"),
    http("json-lone-surrogate", VALUES, b'{"v": "a\\ud800b"}', signed, status=400, reason="undecodable"),
    http("json-array-not-object", HOOK, b"[1, 2]", signed, status=200, outcome=dead_lettered("RenderError", "'list object' has no attribute 'repo'")),
    http("json-empty-body", HOOK, b"", signed, status=200, outcome=dead_lettered("RenderError", "'None object' has no attribute 'repo'")),
    http("json-key-of-1-mib", HOOK, lambda h: json.dumps({"k" * MIB: 1, "repo": "acme/big-key"}).encode(), signed, status=200, outcome=created({"repo": "acme/big-key"})),
    http("text-invalid-utf8-is-base64", HOOK, b"\xff\xfe\x00", lambda b: signed(b, "text/plain"), status=200, outcome=dead_lettered("RenderError", "'str object' has no attribute 'repo'")),
    http("form-invalid-percent-utf8", HOOK, b"repo=%ff", lambda b: signed(b, "application/x-www-form-urlencoded"), status=400, reason="undecodable"),
    http("form-encoded-slash", HOOK, b"repo=acme%2Fform", lambda b: signed(b, "application/x-www-form-urlencoded"), status=200, outcome=created({"repo": "acme/form"})),
    # Signatures and tokens: wrong, absent, replayed.
    http("hmac-absent", HOOK, repo_body, {"Content-Type": "application/json"}, status=401, reason="auth"),
    http("hmac-empty", HOOK, repo_body, {"X-Hub-Signature-256": ""}, status=401, reason="auth"),
    http("hmac-wrong", HOOK, repo_body, {"X-Hub-Signature-256": "sha256=" + "0" * 64}, status=403, reason="auth"),
    http("hmac-of-another-body", HOOK, repo_body, lambda b: signed(b + b" "), status=403, reason="auth"),
    http("hmac-sha1-prefix", HOOK, repo_body, lambda b: {"X-Hub-Signature-256": "sha1=" + signed(b)["X-Hub-Signature-256"][7:]}, status=403, reason="auth"),
    http("hmac-truncated", HOOK, repo_body, lambda b: {"X-Hub-Signature-256": signed(b)["X-Hub-Signature-256"][:-2]}, status=403, reason="auth"),
    http("hmac-non-ascii", HOOK, repo_body, {"X-Hub-Signature-256": "sha256=\xe9" * 10}, status=403, reason="auth"),
    http("hmac-upper-case-hex-is-the-same", HOOK, repo_body, lambda b: {**signed(b), "X-Hub-Signature-256": signed(b)["X-Hub-Signature-256"].upper().replace("SHA256=", "sha256=")}, status=200, outcome=created()),
    replayed(HOOK, signed),
    http("bearer-absent", "/hooks/bearer", repo_body, {}, status=401, reason="auth"),
    http("bearer-wrong", "/hooks/bearer", repo_body, {"Authorization": "Bearer nope"}, status=403, reason="auth"),
    http("bearer-prefix-of-token", "/hooks/bearer", repo_body, {"Authorization": f"Bearer {BEARER[:-1]}"}, status=403, reason="auth"),
    http("bearer-basic-scheme", "/hooks/bearer", repo_body, {"Authorization": "Basic " + base64.b64encode(b"u:" + BEARER.encode()).decode()}, status=403, reason="auth"),
    http("bearer-non-ascii", "/hooks/bearer", repo_body, {"Authorization": "Bearer \xe9\xff"}, status=403, reason="auth"),
    http("bearer-8-kib-token", "/hooks/bearer", repo_body, {"Authorization": "Bearer " + "t" * 8000}, status=403, reason="auth"),
    replayed("/hooks/bearer", lambda b: {"Authorization": f"Bearer {BEARER}"}),
    # Declared, truncated and chunked bodies.
    raw("declared-10-mib-plus-1-nothing-sent", request_head(HOOK, {"Content-Length": str(LIMIT + 1)}), status=413, reason="too-large"),
    raw("declared-1-gib-nothing-sent", request_head(HOOK, {"Content-Length": str(1 << 30)}), status=413, reason="too-large"),
    raw("declared-1-gib-on-eventbridge", request_head("/oss/eventbridge", {"Content-Length": str(1 << 30)}), status=413, reason="too-large", source="oss-push"),
    raw("declared-1-gib-on-mns", request_head("/oss/mns", {"Content-Length": str(1 << 30)}), status=413, reason="too-large", source="oss-push"),
    raw("declared-10-mib-10-bytes-sent", request_head(HOOK, {"Content-Length": str(LIMIT)}) + b'{"repo": 1', status=408, reason="body-timeout"),
    http("sent-11-mib", HOOK, b"x" * (LIMIT + MIB), signed, status=413, reason="too-large"),
    cut("truncated-body-client-gone", HOOK, 100, b'{"re', source="webhook"),
    cut("truncated-eventbridge-client-gone", "/oss/eventbridge", 5000, b'{"specversion"', source="oss-push"),
    raw("expect-100-continue-with-1-gib-declared", request_head(HOOK, {"Content-Length": str(1 << 30), "Expect": "100-continue"}), status=413, reason="too-large"),
    raw("expect-100-continue-1-gib-on-eventbridge", request_head("/oss/eventbridge", {"Content-Length": str(1 << 30), "Expect": "100-continue"}), status=413, reason="too-large", source="oss-push"),
    Case("expect-100-continue-within-the-limit", expect_continue),
    raw("unknown-method-on-a-webhook-path", b"FROB /hooks/hmac HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", status=400),
    raw("get-on-a-webhook-path", b"GET /hooks/hmac HTTP/1.1\r\nHost: t\r\n\r\n", status=405),
    raw("chunked-signed-delivery", signed_chunked, status=200),
    raw("chunked-bad-chunk-size", request_head(HOOK, {"Transfer-Encoding": "chunked"}) + b"zz\r\nabc\r\n0\r\n\r\n", status=400),
    raw("chunked-over-the-limit", request_head(HOOK, {"Transfer-Encoding": "chunked"}) + b"".join(b"100000\r\n" + b"x" * MIB + b"\r\n" for _ in range(11)) + b"0\r\n\r\n", status=413, reason="too-large"),
    raw("chunked-and-content-length", request_head(HOOK, {"Transfer-Encoding": "chunked", "Content-Length": "5"}) + b"5\r\nhello\r\n0\r\n\r\n", status=400),
    raw("content-length-negative", request_head(HOOK, {"Content-Length": "-5"}), status=400),
    raw("content-length-not-a-number", request_head(HOOK, {"Content-Length": "12abc"}), status=400),
    raw("content-length-twice-differing", request_head(HOOK, {"Content-Length": "2"}, b"Content-Length: 3\r\n") + b"{}", status=400),
    # Huge keys and headers.
    raw("header-line-of-20-kib", request_head(HOOK, {"X-Big": "a" * 20_000}), status=400),
    raw("request-line-of-20-kib", b"POST /hooks/" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", status=400),
    raw("ten-thousand-headers", request_head(HOOK, {f"X-H{i}": "v" for i in range(10_000)}), status=400),
    raw("header-name-with-space", request_head(HOOK, {"X Bad": "v"}), status=400),
    raw("header-value-with-nul", request_head(HOOK, {"X-Nul": "a\x00b"}), status=400),
    raw("not-http-at-all", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n", status=400),
    raw("signed-delivery-with-8-kib-header", signed_raw(HOOK, b"X-Large: " + b"v" * 8000 + b"\r\n"), status=200),
    # URL-encoding tricks and dot segments.
    raw("path-dot-segments-are-not-another-path", signed_raw("/hooks/hmac/../bearer"), status=404),
    raw("path-encoded-dot-segments", signed_raw("/hooks/%2e%2e/hooks/bearer"), status=404),
    raw("path-encoded-slash", signed_raw("/hooks/hmac%2F..%2Fbearer"), status=404),
    raw("path-double-slash", signed_raw("//hooks/hmac"), status=404),
    raw("path-trailing-slash", signed_raw("/hooks/hmac/"), status=404),
    raw("path-upper-case", signed_raw("/hooks/HMAC"), status=404),
    raw("path-nul-byte", signed_raw("/hooks/hmac%00"), status=404),
    raw("path-percent-encoded-letter-is-the-path", signed_raw("/hooks/%68mac"), status=200),
    raw("query-invalid-utf8", signed_raw("/hooks/hmac?q=%ff%fe&q=2"), status=200),
    # OSS keys with ../ and encodings; EventBridge bodies.
    eb("eventbridge-key-dot-dot", cloudevent("../../etc/passwd"), status=200, outcome=created({"key": "../../etc/passwd"})),
    eb("eventbridge-key-percent-kept-verbatim", cloudevent("in%2F..%2Fx"), status=200, outcome=created({"key": "in%2F..%2Fx"})),
    eb("eventbridge-key-with-newline-and-nul", cloudevent("a\nb\x00c"), status=200, outcome=created({"key": "a\nb\x00c"})),
    eb("eventbridge-key-of-1-mib", cloudevent("k" * MIB), status=200, outcome=dead_lettered("RenderError", "over the limit of 65536 bytes")),
    eb("eventbridge-key-null", cloudevent("x", key=None), status=400, reason="undecodable"),
    eb("eventbridge-size-a-string", cloudevent("x", size="big"), status=400, reason="undecodable"),
    eb("eventbridge-invalid-json", b'{"specversion": ', status=400, reason="undecodable"),
    eb("eventbridge-empty-object", b"{}", status=400, reason="undecodable"),
    eb("eventbridge-xml-body", b"<Notification/>", status=400, reason="undecodable"),
    eb("eventbridge-nested-deep", b"[" * 50_000 + b"]" * 50_000, status=400, reason="undecodable"),
    eb("eventbridge-invalid-utf8", b'{"specversion": "\xff"}', status=400, reason="undecodable"),
    eb("eventbridge-10-mib-of-nothing", lambda h: b'{"x": "' + b"a" * (LIMIT - 100) + b'"}', status=400, reason="undecodable"),
    eb("eventbridge-array-of-8000-for-no-rule", cloudevents(8000, "nobody"), status=200, outcome=none_matched(8000)),
    eb("eventbridge-array-of-1000-all-created", cloudevents(1000, "example-bucket"), status=200, outcome=all_created(1000)),
    eb("eventbridge-token-absent", cloudevent("x"), status=401, reason="auth", headers={"x-eventbridge-signature-token": None}),
    eb("eventbridge-token-non-ascii", cloudevent("x"), status=401, reason="auth", headers={"x-eventbridge-signature-token": "\xe9t\xff"}),
    eb("eventbridge-token-wrong", cloudevent("x"), status=401, reason="auth", headers={"x-eventbridge-signature-token": "nope"}),
    eb("eventbridge-signature-absent", cloudevent("x"), status=401, reason="auth", headers={"x-eventbridge-signature-v2": None}),
    eb("eventbridge-signed-by-another-key", cloudevent("x"), status=401, reason="auth", signer=make_key_and_cert()[0]),
    eb("eventbridge-signature-of-another-body", cloudevent("x"), status=401, reason="auth", other_body=True),
    eb("eventbridge-signature-replayed-after-5-minutes", cloudevent("x"), status=401, reason="auth", age=timedelta(minutes=5)),
    eb("eventbridge-signature-from-the-future", cloudevent("x"), status=401, reason="auth", age=-timedelta(minutes=5)),
    eb("eventbridge-certificate-url-off-the-allow-list", cloudevent("x"), status=401, reason="auth", cert_url="https://evil.example/cert.pem"),
    eb("eventbridge-signature-not-base64", cloudevent("x"), status=401, reason="auth", headers={"x-eventbridge-signature-v2": "%%%"}),
    eb("eventbridge-timestamp-not-a-number", cloudevent("x"), status=401, reason="auth", headers={"x-eventbridge-signature-timestamp": "soon"}),
    # MNS: signatures, certificate URLs, dates, XML.
    mns_post("mns-key-encoded-dot-dot-decoded-once", mns_push("a%2F..%2F..%2Fetc%2Fpasswd"), status=200, outcome=created({"key": "a/../../etc/passwd"})),
    mns_post("mns-key-double-encoded-decoded-once", mns_push("in%252Fx"), status=200, outcome=created({"key": "in%2Fx"})),
    mns_post("mns-key-invalid-percent", mns_push("in%zz"), status=200, outcome=created({"key": "in%zz"})),
    mns_post("mns-key-percent-invalid-utf8", mns_push("in%ff%fe"), status=400, reason="undecodable"),
    mns_post("mns-certificate-url-off-the-allow-list", mns_push("x"), status=401, reason="auth", cert_url="https://evil.example/cert.pem"),
    mns_post("mns-certificate-url-userinfo-trick", mns_push("x"), status=401, reason="auth", cert_url="https://127.0.0.1@evil.example/cert.pem"),
    mns_post("mns-certificate-url-file-scheme", mns_push("x"), status=401, reason="auth", cert_url="file:///etc/passwd"),
    mns_post("mns-signed-by-another-key", mns_push("x"), status=401, reason="auth", signer=make_key_and_cert()[0]),
    mns_post("mns-signed-header-changed-to-non-ascii", mns_push("x"), status=401, reason="auth", tamper={"x-mns-topic-name": "\xe9v\xff"}),
    mns_post("mns-authorization-non-ascii", mns_push("x"), status=401, reason="auth", tamper={"Authorization": "\xe9" * 8}),
    mns_post("mns-signature-absent", mns_push("x"), status=401, reason="auth", unsigned=True),
    mns_post("mns-replayed-after-20-minutes", mns_push("x"), status=401, reason="auth", age=timedelta(minutes=20)),
    mns_post("mns-invalid-xml", b"<Notification><Message>", status=400, reason="undecodable"),
    mns_post("mns-xml-billion-laughs", b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;"><!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;"><!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;"><!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">]><Notification><Message>&h;</Message></Notification>', status=400, reason="undecodable"),
    mns_post("mns-xml-external-entity", b'<?xml version="1.0"?><!DOCTYPE n [<!ENTITY x SYSTEM "file:///etc/passwd">]><Notification><Message>&x;</Message></Notification>', status=400, reason="undecodable"),
    mns_post("mns-message-neither-base64-nor-json", mns_xml("%%%not-base64%%%"), status=400, reason="undecodable"),
    # Parameter values: newlines, quotes, template syntax, 1 MB.
    http("value-with-newlines", VALUES, values_body("a\nb\r\nc"), signed, status=200, outcome=value_kept("a\nb\r\nc")),
    http("value-with-quotes", VALUES, values_body("'\"`$(x)\\"), signed, status=200, outcome=value_kept("'\"`$(x)\\")),
    http("value-with-template-syntax-is-not-rendered", VALUES, values_body("{{ 7*7 }}{% raw %}"), signed, status=200, outcome=value_kept("{{ 7*7 }}{% raw %}")),
    http("value-with-argo-placeholder", VALUES, values_body("{{workflow.name}}"), signed, status=200, outcome=value_kept("{{workflow.name}}")),
    http("value-with-control-chars", VALUES, values_body("\x00\x1b[31m\u2028"), signed, status=200, outcome=value_kept("\x00\x1b[31m\u2028")),
    http("value-of-1-mb", VALUES, values_body("x" * 1_000_000), signed, status=200, outcome=dead_lettered("RenderError", "65536")),
    http("value-null", VALUES, values_body(None), signed, status=200, outcome=dead_lettered("RenderError", "is null")),
    http("value-object-is-compact-json", VALUES, values_body({"a": [1, "b"]}), signed, status=200, outcome=value_kept('{"a":[1,"b"]}')),
    http("header-value-not-utf8", "/hooks/header?q=1", repo_body, lambda b: signed(b, **{"X-Tag": "\xe9t\xe9"}), status=200, outcome=created({"tag": "\ufffdt\ufffd", "q": "1"})),
    http("header-value-latin1-utf8-mix", "/hooks/header?q=%C3%A9", repo_body, lambda b: signed(b, **{"X-Tag": "caf\xc3\xa9"}), status=200, outcome=created({"tag": "caf\u00e9", "q": "\u00e9"})),
    http("query-value-not-utf8", "/hooks/header?q=%ff", repo_body, lambda b: signed(b, **{"X-Tag": "t"}), status=200, outcome=created({"tag": "t", "q": "\ufffd"})),
    # Templates asked for huge outputs.
    http("template-repetition-of-a-billion", "/hooks/render", b'{"s": "x", "n": 1000000000}', signed, status=200, outcome=dead_lettered("RenderError", "repet")),
    http("template-repetition-small-is-fine", "/hooks/render", b'{"s": "ab", "n": 3}', signed, status=200, outcome=created({"out": "ababab"})),
    http("template-repetition-of-a-string-count", "/hooks/render", b'{"s": "x", "n": "3"}', signed, status=200, outcome=dead_lettered("RenderError", "")),
    http("template-regex-catastrophic-backtracking", "/hooks/regex", lambda h: json.dumps({"s": "a" * 64 + "!", "p": "(a|aa)+$", "id": h.unique("re")}).encode(), signed, status=200, outcome=dead_lettered("RenderError", "regex_replace: matching took longer than")),
    http("template-regex-from-the-event-is-fine", "/hooks/regex", lambda h: json.dumps({"s": "a.b.c", "p": "[.]", "id": h.unique("re")}).encode(), signed, status=200, outcome=created({"out": "a-b-c"})),
    http("template-regex-invalid-from-the-event", "/hooks/regex", b'{"s": "abc", "p": "(("}', signed, status=200, outcome=dead_lettered("RenderError", "bad pattern")),
    # CEL that errors or runs long.
    http("cel-division-by-zero", "/hooks/cel", b'{"n": 1, "d": 0, "l": ["needle"]}', signed, status=200, outcome=expression_error("division by zero")),
    http("cel-missing-field", "/hooks/cel", b'{"n": 1, "l": ["needle"]}', signed, status=200, outcome=expression_error("d")),
    http("cel-type-error", "/hooks/cel", b'{"n": "1", "d": 1, "l": ["needle"]}', signed, status=200, outcome=expression_error("")),
    http("cel-one-comprehension-over-a-million", "/hooks/cel", lambda h: json.dumps({"n": 2, "d": 1, "l": [0] * 1_000_000 + ["needle"]}).encode(), signed, status=200, outcome=created({"n": "2"})),
    http("cel-nested-comprehensions-over-10000", "/hooks/nested", lambda h: json.dumps({"l": list(range(10_000))}).encode(), signed, status=200, outcome=expression_error("not evaluated", "hook-nested")),
    http("cel-nested-comprehensions-over-a-few", "/hooks/nested", lambda h: json.dumps({"l": list(range(10)), "id": h.unique("n")}).encode(), signed, status=200, outcome=created({"n": "10"})),
    # Kafka records.
    kafka("kafka-null-key", None, b'{"n": "null-key"}', json_rule={"n": "null-key"}, text_rule={"key": "no-key", "headers": "{}"}),
    kafka("kafka-null-value", b"tomb", None, json_rule="RenderError", text_rule={"key": "tomb", "headers": "{}"}),
    kafka("kafka-null-value-with-headers", b"tomb", None, [("h", b"v")], json_rule="RenderError", text_rule={"key": "tomb", "headers": '{"h":"v"}'}),
    kafka("kafka-empty-value", b"e", b"", json_rule="DecodeError", text_rule={"key": "e", "headers": "{}"}),
    kafka("kafka-invalid-json", b"j", b"{nope", json_rule="DecodeError", text_rule={"key": "j", "headers": "{}"}),
    kafka("kafka-invalid-utf8", b"u", b'{"n": "\xff"}', json_rule="DecodeError", text_rule="DecodeError"),
    kafka("kafka-nested-10000-levels", b"d", b'{"n": 1, "d": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", json_rule="DecodeError", text_rule={"key": "d", "headers": "{}"}),
    kafka("kafka-binary-and-repeated-headers", b"h", b'{"n": "h"}', [("bin", b"\xff\x00"), ("dup", b"1"), ("dup", b"2"), ("", b"empty-name")], json_rule={"n": "h"}, text_rule={"key": "h", "headers": '{"bin":"/wA=","dup":"2","":"empty-name"}'}),
    kafka("kafka-a-thousand-headers", b"t", b'{"n": "t"}', [(f"h{i}", b"v") for i in range(1000)], json_rule={"n": "t"}, text_rule={"key": "t", "headers": json.dumps({f"h{i}": "v" for i in range(1000)}, separators=(",", ":"))}),
    kafka("kafka-key-of-100-kb", b"k" * 100_000, b'{"n": "big-key"}', json_rule={"n": "big-key"}, text_rule="RenderError"),
    kafka("kafka-key-not-utf8", b"\xff\xfek", b'{"n": "binary-key"}', json_rule={"n": "binary-key"}, text_rule={"key": "//5r", "headers": "{}"}),
    kafka("kafka-value-with-newlines-and-quotes", b"q", json.dumps({"n": "a\n\"b'"}).encode(), json_rule={"n": "a\n\"b'"}, text_rule={"key": "q", "headers": "{}"}),
    # Rule files: YAML bombs, 10,000 documents, sandbox escapes, CEL, cron, names.
    cli("yaml-billion-laughs", "validate", {"r.yaml": BILLION_LAUGHS}, "r.yaml", exit=1, says=("r.yaml:", "alias bomb")),
    cli("yaml-nested-1000-levels", "validate", {"r.yaml": "a: " + "[" * 1000 + "]" * 1000 + "\n"}, "r.yaml", exit=1, says=("r.yaml:1:", "exceeded maximum nesting depth")),
    cli("yaml-10000-documents-none-a-rule", "validate", {"r.yaml": many_documents(10_000, "{}\n")}, "r.yaml", exit=1, says=("r.yaml:20000:", "10000 problem(s)")),
    cli("yaml-10000-rules-over-1-mib", "validate", {"r.yaml": numbered_rules(10_000)}, "r.yaml", exit=1, says=("r.yaml:1:1: file is larger than 1048576 bytes",)),
    cli("yaml-python-object-tag", "validate", {"r.yaml": "!!python/object/apply:os.system [touch pwned]\n"}, "r.yaml", exit=1, says=("r.yaml:1:1",)),
    cli("yaml-invalid-utf8", "validate", {"r.yaml": b"apiVersion: trigger/v1\nkind: Rule\nmetadata: {name: \xff}\n"}, "r.yaml", exit=1, says=("r.yaml:",)),
    cli("template-sandbox-class-mro", "validate", {"r.yaml": with_parameter("{{ ''.__class__.__mro__[1].__subclasses__() }}")}, "r.yaml", exit=1, says=("r.yaml:4:", "workflow.parameters.p", "is not accessible (names starting with _ are private)")),
    cli("template-sandbox-private-name-after-attr", "match", {"r.yaml": with_parameter("{{ (event.body | attr('__class__')).__name__ }}"), "e.json": WEBHOOK_EVENT}, "--rules", "r.yaml", "e.json", exit=1, says=("workflow.parameters.p",)),
    cli("template-sandbox-attr-filter-at-render", "match", {"r.yaml": with_parameter("{{ event.body | attr('__class__') }}"), "e.json": WEBHOOK_EVENT}, "--rules", "r.yaml", "e.json", exit=1, says=("workflow.parameters.p",)),
    cli("template-sandbox-globals", "validate", {"r.yaml": with_parameter("{{ cycler.__init__.__globals__.os }}")}, "r.yaml", exit=1, says=("r.yaml:4:", "workflow.parameters.p")),
    cli("template-nested-loops", "validate", {"r.yaml": with_parameter("{% for i in range(9999) %}{% for j in range(9999) %}x{% endfor %}{% endfor %}")}, "r.yaml", exit=1, says=("r.yaml:4:", "workflow.parameters.p")),
    cli("template-huge-literal-output", "match", {"r.yaml": with_parameter("{{ 'x' * 1000000000 }}"), "e.json": WEBHOOK_EVENT}, "--rules", "r.yaml", "e.json", exit=1, says=("workflow.parameters.p",)),
    cli("template-huge-range", "match", {"r.yaml": with_parameter("{{ range(1000000000) | list | length }}"), "e.json": WEBHOOK_EVENT}, "--rules", "r.yaml", "e.json", exit=1, says=("range",)),
    cli("cel-syntax-error", "validate", {"r.yaml": with_expr("event.x ==")}, "r.yaml", exit=1, says=("r.yaml:4:", "filter.expr")),
    cli("cel-over-4096-characters", "validate", {"r.yaml": with_expr("true && " * 600 + "true")}, "r.yaml", exit=1, says=("r.yaml:4:", "4096")),
    cli("cel-comprehensions-bind-their-variables", "validate", {"r.yaml": with_expr("event.body.all(x, event.body.exists(y, x == y))")}, "r.yaml", exit=0, says=("ok: 1 rule(s)",)),
    cli("cel-unknown-variable-beside-a-comprehension", "validate", {"r.yaml": with_expr("event.body.all(x, x == z)")}, "r.yaml", exit=1, says=("r.yaml:4:", "unknown variable(s) z")),
    cli("cron-february-30-never-fires", "validate", {"r.yaml": cron_file("0 0 30 2 *")}, "r.yaml", exit=1, says=("r.yaml:4:", "source.cron.schedules[0]", "never")),
    cli("cron-april-31-never-fires", "validate", {"r.yaml": cron_file("0 12 31 4 *")}, "r.yaml", exit=1, says=("source.cron.schedules[0]", "never")),
    cli("cron-february-29-fires-in-leap-years", "schedule", {"r.yaml": cron_file("0 0 29 2 *")}, "c", "--rules", "r.yaml", "--from", "2025-01-01T00:00Z", "-n", "2", exit=0, says=("2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00")),
    cli("workflow-generate-name-over-43", "validate", {"r.yaml": rule_file(workflow="{template: t, generateName: " + "a" * 44 + "-}")}, "r.yaml", exit=1, says=("r.yaml:", "workflow.generateName")),
    cli("rule-name-of-300-characters", "validate", {"r.yaml": rule_file("a" * 300)}, "r.yaml", exit=1, says=("r.yaml:3:", "metadata.name")),
    cli("fire-value-with-newlines-and-quotes", "fire", {"rules.yaml": with_parameter("{{ event.body.x }}")}, "r", "-p", "p=a\n'\"b\"'\r\n{{ x }}", *FIRE, exit=0, then=fired_with("a\n'\"b\"'\r\n{{ x }}")),
    cli("fire-value-of-100-kb", "fire", {"rules.yaml": with_parameter("{{ event.body.x }}")}, "r", "-p", "p=" + "x" * 100_000, *FIRE, exit=0, then=fired_with("x" * 100_000)),
    cli("match-event-file-nested-deep", "match", {"r.yaml": rule_file(), "e.json": '{"webhook": {"path": "/h", "body": ' + "[" * 5000 + "]" * 5000 + "}}"}, "--rules", "r.yaml", "e.json", exit=1, says=("e.json",)),
    Case("cron-still-ticks-after-the-table", cron_still_ticks),
    cli("match-event-file-invalid-utf8", "match", {"r.yaml": rule_file(), "e.json": b'{"webhook": {"path": "/h\xff"}}'}, "--rules", "r.yaml", "e.json", exit=1, says=("e.json",)),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_input(hostile: Hostile, case: Case) -> None:
    """Each hostile input gets its own clear outcome; a valid delivery beside it still
    becomes its Workflow, and the daemon stays up with no traceback in its log."""
    hostile.log_mark = len(hostile.daemon.log())
    case.run(hostile)
    hostile.neighbour_still_works()


def test_the_table_is_at_least_80_rows() -> None:
    """The table covers at least 80 hostile inputs, each with its own test id."""
    assert len(CASES) >= 80
    assert len({case.id for case in CASES}) == len(CASES)
