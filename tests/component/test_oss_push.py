"""The OSS push receivers: EventBridge and MNS deliveries over real HTTP, authenticated."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import FIXTURES
from tests.daemon import DaemonProcess, certificate_host, free_port, running
from tests.unit.test_oss_signatures import (
    eventbridge_headers,
    make_key_and_cert,
    mns_headers,
)
from trigger.clock import SystemClock
from trigger.core.metrics import Metrics
from trigger.core.pipeline import MetricsHooks, Pipeline
from trigger.daemon.http import HttpContext, build_app
from trigger.daemon.verdicts import read_push_auth
from trigger.rules.loader import load_rules
from trigger.settings import OssPushSettings, Settings
from trigger.sources.oss.push import OssPush, PushAuth
from trigger.submit.deadletter import FileDeadLetterSink
from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink
from trigger.submit.local import LocalSink
from trigger.submit.submitter import Submitter
from trigger.testing.kubeapi import KubeEmulator
from trigger.testing.ossserver import build_eventbridge_event, build_mns_message, build_oss_record

TOKEN = "eb-s3cret"
EB, MNS = "/oss/eventbridge", "/oss/mns"
JSON_TYPE = {"Content-Type": "application/json;charset=utf-8"}
RULES = """
apiVersion: trigger/v1
kind: Rule
metadata: {name: all-events}
spec:
  source:
    oss: {bucket: example-bucket, events: ["*"]}
  workflow:
    template: ingest
    namespace: data
    parameters: {key: "{{ event.key }}", type: "{{ event.type }}", etag: "{{ event.etag }}"}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: lake-parts}
spec:
  source:
    oss: {bucket: lake-raw, events: ["oss:ObjectCreated:CompleteMultipartUpload"]}
  workflow:
    template: ingest
    namespace: data
    parameters: {key: "{{ event.key }}", type: "{{ event.type }}", etag: "{{ event.etag }}"}
  retry: {limit: 0}
---
apiVersion: trigger/v1
kind: Rule
metadata: {name: mns-drop}
spec:
  source:
    oss: {bucket: ingest, events: ["ObjectCreated:*"], key: {prefix: drop/}}
  workflow:
    template: ingest
    namespace: data
    parameters: {key: "{{ event.key }}", type: "{{ event.type }}", etag: "{{ event.etag }}"}
"""
GROUPS = [
    "ObjectCreated:PutObject",
    "ObjectCreated:PostObject",
    "ObjectCreated:CopyObject",
    "ObjectCreated:AppendObject",
    "ObjectCreated:CompleteMultipartUpload",
    "ObjectRemoved:DeleteObject",
    "ObjectRemoved:DeleteObjects",
    "ObjectModified:UpdateObjectMeta",
    "ObjectRestore:FinishRestore",
    "ObjectReplication:ObjectCreated",
]
NOW = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)


# --- payloads ----------------------------------------------------------------------------


def cloudevent(
    event_name: str = "ObjectCreated:PutObject", key: str = "in/a.csv", **kw: Any
) -> dict[str, Any]:
    # Distinct events are distinct uploads: each has its own content (ETag), since a
    # created object's content is what an OSS rule fires once for.
    default = "5EB63BBBE01EEED093CB22BB8F5ACDC3"
    if "event_id" in kw:
        default = hashlib.md5(kw["event_id"].encode()).hexdigest().upper()
    etag = kw.pop("etag", default)
    return build_eventbridge_event(
        "example-bucket", key, 11, etag, event_name, "cn-hangzhou", "1234567890123456", NOW, **kw
    )


def mns_record(key: str, request_id: str) -> dict[str, Any]:
    return build_oss_record(
        "ingest", key, 7, "9A0364B9E99BB480DD25E1F0284C8555", "ObjectCreated:PutObject",
        "cn-beijing", "1234567890123456", NOW, request_id=request_id,
    )  # fmt: skip


def mns_xml(message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<Notification xmlns="http://mns.aliyuncs.com/doc/v1/"><TopicOwner>1</TopicOwner>'
        "<TopicName>oss-events</TopicName><Subscriber>1</Subscriber>"
        "<SubscriptionName>trigger</SubscriptionName><MessageId>M1</MessageId>"
        f"<Message>{message}</Message><MessageMD5>X</MessageMD5><MessageTag></MessageTag>"
        "<PublishTime>1735877106000</PublishTime></Notification>"
    ).encode()


def params(reply_json: dict[str, Any], d: DaemonProcess) -> list[dict[str, str]]:
    """The parameters of every Workflow the reply names, read from the local sink."""
    found = []
    for event in reply_json["events"]:
        for outcome in event["workflows"]:
            path = next(d.workflows_dir.rglob(f"{outcome['workflow']}.yaml"))
            doc = yaml.safe_load(path.read_text())
            found.append({p["name"]: p["value"] for p in doc["spec"]["arguments"]["parameters"]})
    return found


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keypair() -> tuple[rsa.RSAPrivateKey, bytes]:
    return make_key_and_cert()


@pytest.fixture(scope="module")
def cert_url(keypair: tuple[rsa.RSAPrivateKey, bytes]) -> Iterator[str]:
    """The certificate served over HTTP from a thread (the daemon runs as a subprocess)."""
    with certificate_host(keypair[1]) as url:
        yield url


def start(tmp: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> DaemonProcess:
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "oss.yaml").write_text(RULES)
    (tmp / "config.yaml").write_text(json.dumps(config))
    return DaemonProcess(
        tmp, rules, extra_args=["--config", str(tmp / "config.yaml")], env=env or {}
    )


@pytest.fixture(scope="module")
def token_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """EventBridge with a shared token; MNS with signatures from a loopback certificate host."""
    config = {
        "http": {"max_body_bytes": 65536},
        "oss": {"push": {"eventbridge_token_env": "EB_TOKEN", "mns_cert_hosts": ["127.0.0.1"]}},
    }
    daemon = start(tmp_path_factory.mktemp("token"), config, {"EB_TOKEN": TOKEN})
    try:
        yield daemon.start()
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def signed_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """EventBridge with RSA signature verification only."""
    push = {"eventbridge_verify_signature": True, "eventbridge_cert_hosts": ["127.0.0.1"]}
    daemon = start(tmp_path_factory.mktemp("signed"), {"oss": {"push": push}})
    try:
        yield daemon.start()
    finally:
        daemon.stop()


def post_eb(d: DaemonProcess, body: Any, token: str | None = TOKEN) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = dict(JSON_TYPE)
    if token is not None:
        headers["x-eventbridge-signature-token"] = token
    return d.post(EB, raw, headers)


def post_mns(
    d: DaemonProcess, body: bytes, key: rsa.RSAPrivateKey, cert_url: str, **kw: Any
) -> Any:
    now = kw.pop("now", datetime.now(UTC))
    headers = mns_headers(key, MNS, cert_url, now=now, **kw)
    return d.post(MNS, body, headers)


# --- EventBridge, token ------------------------------------------------------------------


def test_eventbridge_fixture_creates_workflow(token_daemon: DaemonProcess) -> None:
    """The sample PutObject CloudEvent creates one Workflow, answered 200 when it exists."""
    reply = post_eb(token_daemon, (FIXTURES / "oss" / "eventbridge-putobject.json").read_bytes())
    assert reply.status == 200, reply.body
    (event,) = reply.json()["events"]
    assert event["id"] == "66F2A1B3C4D5E6F7A8B9C0D1"
    assert [w["outcome"] for w in event["workflows"]] == ["created"]
    assert params(reply.json(), token_daemon) == [
        {
            "key": "incoming/report.csv",
            "type": "ObjectCreated:PutObject",
            "etag": "5EB63BBBE01EEED093CB22BB8F5ACDC3",
        }
    ]


def test_eventbridge_redelivery_is_duplicate(token_daemon: DaemonProcess) -> None:
    """The same CloudEvent delivered twice gives one Workflow, the second a duplicate."""
    body = cloudevent(key="in/redelivered.csv", event_id="REDELIVERED1")
    outcomes = [post_eb(token_daemon, body).json()["events"][0]["workflows"][0] for _ in range(2)]
    assert [o["outcome"] for o in outcomes] == ["created", "duplicate"]
    assert outcomes[0]["workflow"] == outcomes[1]["workflow"]


def test_identical_content_is_one_workflow_new_content_another(
    token_daemon: DaemonProcess,
) -> None:
    """Two notifications of one object's content (a re-upload of the same bytes, a
    retried PUT) are one Workflow, as polling sees them; new content is a new one."""
    key = "in/same-content.csv"

    def outcome(event_id: str, etag: str) -> tuple[str, str]:
        body = cloudevent(key=key, event_id=event_id, etag=etag)
        found = post_eb(token_daemon, body).json()["events"][0]["workflows"][0]
        return found["outcome"], found["workflow"]

    first = outcome("UPLOAD-1", "AAAA0000AAAA0000AAAA0000AAAA0000")
    again = outcome("UPLOAD-2", '"aaaa0000aaaa0000aaaa0000aaaa0000"')
    changed = outcome("UPLOAD-3", "BBBB1111BBBB1111BBBB1111BBBB1111")
    assert first[0] == "created"
    assert again == ("duplicate", first[1])
    assert changed[0] == "created" and changed[1] != first[1]


def test_eventbridge_array_body(token_daemon: DaemonProcess) -> None:
    """A JSON array of CloudEvents becomes one event each, all answered together."""
    body = [cloudevent(key=f"in/batch-{i}.csv", event_id=f"BATCH{i}") for i in range(3)]
    reply = post_eb(token_daemon, body)
    assert reply.status == 200, reply.body
    assert [e["id"] for e in reply.json()["events"]] == ["BATCH0", "BATCH1", "BATCH2"]
    assert [p["key"] for p in params(reply.json(), token_daemon)] == [
        "in/batch-0.csv", "in/batch-1.csv", "in/batch-2.csv"
    ]  # fmt: skip


def test_eventbridge_multipart_etag(token_daemon: DaemonProcess) -> None:
    """A CompleteMultipartUpload keeps its multipart ETag (`-<parts>`) and its type."""
    reply = post_eb(
        token_daemon, (FIXTURES / "oss" / "eventbridge-multipart-complete.json").read_bytes()
    )
    assert reply.status == 200, reply.body
    assert params(reply.json(), token_daemon) == [
        {
            "key": "dt=2025-01-02/part-0001.parquet",
            "type": "ObjectCreated:CompleteMultipartUpload",
            "etag": "0F7230CAA4BE94CCBDC99C5500000000-56",
        }
    ]


@pytest.mark.parametrize("event_name", GROUPS)
def test_eventbridge_event_name_groups(token_daemon: DaemonProcess, event_name: str) -> None:
    """Every OSS event name group reaches a rule taking `*`, typed without the `oss:` prefix."""
    body = cloudevent(event_name, key=f"groups/{event_name}", event_id=f"G-{event_name}")
    reply = post_eb(token_daemon, body)
    assert reply.status == 200, reply.body
    assert [p["type"] for p in params(reply.json(), token_daemon)] == [event_name]


def test_eventbridge_key_is_taken_verbatim(token_daemon: DaemonProcess) -> None:
    """EventBridge keys are not percent-decoded (they arrive plain)."""
    body = cloudevent(key="in/a b+c%20d.csv", event_id="VERBATIM")
    reply = post_eb(token_daemon, body)
    assert [p["key"] for p in params(reply.json(), token_daemon)] == ["in/a b+c%20d.csv"]


def test_eventbridge_unmatched_bucket_is_acknowledged(token_daemon: DaemonProcess) -> None:
    """A push for a bucket no rule takes is answered 200 with no Workflows."""
    body = cloudevent(event_id="NOBODY")
    body["data"]["oss"]["bucket"]["name"] = "unknown-bucket"
    reply = post_eb(token_daemon, body)
    assert reply.status == 200
    assert reply.json()["events"][0]["workflows"] == []


@pytest.mark.parametrize("token", ["wrong", "", None])
def test_eventbridge_bad_token_is_401(token_daemon: DaemonProcess, token: str | None) -> None:
    """A wrong, empty or missing token is refused with 401 and creates nothing."""
    reply = post_eb(token_daemon, cloudevent(event_id=f"BADTOKEN-{token}"), token=token)
    assert reply.status == 401
    assert not list(token_daemon.workflows_dir.rglob("*")) or all(
        "BADTOKEN" not in p.read_text() for p in token_daemon.workflow_files()
    )


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"specversion":"1.0","id":"x","source":"acs.ecs","type":"t","data":{}}',
        b"[1]",
    ],
)
def test_eventbridge_undecodable_is_400(token_daemon: DaemonProcess, body: bytes) -> None:
    """Malformed JSON or a CloudEvent that is not an OSS event is answered 400."""
    assert post_eb(token_daemon, body).status == 400


def test_eventbridge_oversized_is_413(token_daemon: DaemonProcess) -> None:
    """A body over http.max_body_bytes is refused with 413."""
    body = json.dumps([cloudevent(event_id=f"BIG{i}") for i in range(200)]).encode()
    assert len(body) > 65536
    assert post_eb(token_daemon, body).status == 413


# --- EventBridge, signatures ---------------------------------------------------------------


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_eventbridge_signed_push_accepted(
    signed_daemon: DaemonProcess,
    keypair: tuple[rsa.RSAPrivateKey, bytes],
    cert_url: str,
    trailing_newline: bool,
) -> None:
    """A push signed (v2, SHA256) over the target URL, headers and body is accepted."""
    body = json.dumps(cloudevent(event_id=f"SIGNED-{trailing_newline}")).encode()
    headers = eventbridge_headers(
        keypair[0], signed_daemon.url + EB, body, cert_url,
        now=datetime.now(UTC), trailing_newline=trailing_newline,
    )  # fmt: skip
    reply = signed_daemon.post(EB, body, {**JSON_TYPE, **headers})
    assert reply.status == 200, reply.body
    assert reply.json()["events"][0]["workflows"][0]["outcome"] == "created"


@pytest.mark.parametrize(
    "problem", ["expired-timestamp", "certificate-off-allow-list", "forged-body"]
)
def test_eventbridge_bad_signature_is_401(
    signed_daemon: DaemonProcess,
    keypair: tuple[rsa.RSAPrivateKey, bytes],
    cert_url: str,
    problem: str,
) -> None:
    """Expired timestamps, certificates off the allow-list and forged bodies get 401."""
    body = json.dumps(cloudevent(event_id="BADSIG")).encode()
    age = timedelta(minutes=5) if problem == "expired-timestamp" else timedelta(0)
    url = cert_url.replace("127.0.0.1", "localhost") if "allow-list" in problem else cert_url
    headers = eventbridge_headers(
        keypair[0], signed_daemon.url + EB, body, url, now=datetime.now(UTC) - age
    )
    sent = body.replace(b"in/a.csv", b"in/b.csv") if problem == "forged-body" else body
    assert signed_daemon.post(EB, sent, {**JSON_TYPE, **headers}).status == 401


def test_eventbridge_token_alone_fails_signature_receiver(signed_daemon: DaemonProcess) -> None:
    """A receiver checking signatures refuses an unsigned push."""
    assert post_eb(signed_daemon, cloudevent(event_id="UNSIGNED")).status == 401


# --- EventBridge, fail closed ----------------------------------------------------------------


def test_eventbridge_without_auth_beyond_loopback_refuses_and_says_why(tmp_path: Path) -> None:
    """Listening beyond loopback with no token and no signature check, every push gets 401
    and the start log says why."""
    port = free_port()
    with running(tmp_path, _rules(tmp_path), port=port, extra_args=["--listen", f"0.0.0.0:{port}"]) as d:  # fmt: skip
        assert post_eb(d, cloudevent(event_id="OPEN"), token=None).status == 401
        refused = [
            e
            for e in d.log_events()
            if e.get("event") == "endpoint refuses every delivery"
            and e["receiver"] == "oss-eventbridge"
        ]
    assert refused and "neither a token" in refused[0]["reason"]


def test_eventbridge_on_loopback_accepts_unauthenticated(tmp_path: Path) -> None:
    """On a loopback listener with nothing configured, unauthenticated pushes are taken."""
    with running(tmp_path, _rules(tmp_path)) as d:
        reply = post_eb(d, cloudevent(event_id="DEMO"), token=None)
    assert reply.status == 200, reply.body


@pytest.mark.parametrize(("listen", "allowed"), [("127.0.0.1:8080", True), ("[::1]:8080", True),
                                                 ("localhost:8080", True), ("0.0.0.0:8080", False),
                                                 ("10.0.0.5:8080", False), ("[::]:8080", False)])  # fmt: skip
def test_unauthenticated_pushes_need_a_loopback_listener(listen: str, allowed: bool) -> None:
    """With nothing to check, EventBridge and MNS take pushes only on a loopback-only listener."""
    settings = Settings(listen=listen, oss={"push": {"mns_verify_signature": False}})
    auth = read_push_auth(settings, {})
    assert (auth.eventbridge.refuses_everything is None) is allowed
    assert (auth.mns.refuses_everything is None) is allowed


def _rules(tmp: Path) -> Path:
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "oss.yaml").write_text(RULES)
    return rules


# --- MNS -------------------------------------------------------------------------------------


def test_mns_xml_fixture_decodes_key(
    token_daemon: DaemonProcess, keypair: tuple[rsa.RSAPrivateKey, bytes], cert_url: str
) -> None:
    """The XML notification sample is verified, decoded (key percent-decoded) and submitted."""
    body = (FIXTURES / "oss" / "mns-http-push.xml").read_bytes()
    reply = post_mns(token_daemon, body, keypair[0], cert_url)
    assert reply.status == 200, reply.body
    assert params(reply.json(), token_daemon) == [
        {"key": "drop/2025/01/03/orders 1.json", "type": "ObjectCreated:PutObject",
         "etag": "9A0364B9E99BB480DD25E1F0284C8555"}
    ]  # fmt: skip


@pytest.mark.parametrize("form", ["xml", "json", "simplified-base64", "simplified-plain"])
def test_mns_formats_each_entry_becomes_event(
    token_daemon: DaemonProcess, keypair: tuple[rsa.RSAPrivateKey, bytes], cert_url: str, form: str
) -> None:
    """XML, JSON and SIMPLIFIED bodies (base64 or plain) give one event per `events` entry."""
    records = [mns_record(f"drop/{form}/file%2B{i}.csv", f"REQ-{form}") for i in range(2)]
    message = build_mns_message(records)
    bodies = {
        "xml": (mns_xml(message), "text/xml;charset=utf-8"),
        "json": (json.dumps({"MessageId": "M", "Message": message}).encode(), "application/json"),
        "simplified-base64": (message.encode(), "text/plain;charset=utf-8"),
        "simplified-plain": (base64.b64decode(message), "text/plain;charset=utf-8"),
    }
    body, content_type = bodies[form]
    reply = post_mns(token_daemon, body, keypair[0], cert_url, content_type=content_type)
    assert reply.status == 200, reply.body
    assert sorted(p["key"] for p in params(reply.json(), token_daemon)) == [
        f"drop/{form}/file+0.csv", f"drop/{form}/file+1.csv"
    ]  # fmt: skip


@pytest.mark.parametrize("problem", ["forged", "expired", "off-allow-list", "unsigned"])
def test_mns_bad_signature_is_401(
    token_daemon: DaemonProcess,
    keypair: tuple[rsa.RSAPrivateKey, bytes],
    cert_url: str,
    problem: str,
) -> None:
    """Forged, stale, off-list and unsigned MNS pushes are refused with 401."""
    body = mns_xml(build_mns_message([mns_record("drop/refused.csv", f"REQ-{problem}")]))
    now = datetime.now(UTC) - (timedelta(minutes=20) if problem == "expired" else timedelta(0))
    url = cert_url.replace("127.0.0.1", "localhost") if problem == "off-allow-list" else cert_url
    headers = mns_headers(keypair[0], MNS, url, now=now)
    if problem == "forged":
        headers["x-mns-topic-name"] = "another-topic"
    if problem == "unsigned":
        del headers["Authorization"]
    assert token_daemon.post(MNS, body, headers).status == 401


def test_mns_undecodable_is_400(
    token_daemon: DaemonProcess, keypair: tuple[rsa.RSAPrivateKey, bytes], cert_url: str
) -> None:
    """A signed body that is not an MNS notification is answered 400."""
    reply = post_mns(token_daemon, b"<Other/>", keypair[0], cert_url)
    assert reply.status == 400


# --- in-process: retries against the Kubernetes API, and MNS's reply window --------------------


class _App:
    """The daemon's HTTP app with the OSS receivers, on a loopback port, in this process."""

    def __init__(self, ctx: HttpContext, push: OssPush) -> None:
        self.ctx, self.push = ctx, push
        ctx.extra_routes.extend(push.routes())
        self.runner = web.AppRunner(build_app(ctx, max_body=1 << 20))
        self.url = ""

    async def __aenter__(self) -> _App:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()
        await self.push.close()


def _app(tmp_path: Path, sink: Any, settings: OssPushSettings, env: dict[str, str]) -> _App:
    rules_file = tmp_path / "oss.yaml"
    rules_file.write_text(RULES)
    rules = load_rules([str(rules_file)])
    clock, metrics = SystemClock(), Metrics()
    dead = FileDeadLetterSink(tmp_path / "dead.jsonl")
    submitter = Submitter(sink, dead, clock, hooks=MetricsHooks(metrics, clock))
    pipeline = Pipeline(rules, submitter, dead, metrics, clock)
    ctx = HttpContext(pipeline, metrics, push_deadline=10.0, request_timeout=10.0)
    return _App(ctx, OssPush.create(ctx, settings, PushAuth.read(settings, env, open_ok=True)))


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with KubeEmulator(namespaces=["default", "data"]) as emulator:
        yield emulator


async def test_kubernetes_failure_is_503_then_retry_creates_exactly_one(
    tmp_path: Path, kube: KubeEmulator
) -> None:
    """While the API fails the push gets 503; the redelivery after recovery creates one Workflow."""
    sink = await KubernetesSink.connect(KubernetesOptions(server=kube.url))
    settings = OssPushSettings(eventbridge_token_env="EB_TOKEN")
    body = (FIXTURES / "oss" / "eventbridge-multipart-complete.json").read_bytes()
    headers = {**JSON_TYPE, "x-eventbridge-signature-token": TOKEN}
    injection = kube.inject(500, count=1000, method="POST", path_contains="/workflows")
    try:
        async with (
            _app(tmp_path, sink, settings, {"EB_TOKEN": TOKEN}) as app,
            aiohttp.ClientSession() as http,
        ):
            async with http.post(app.url + EB, data=body, headers=headers) as first:
                assert first.status == 503
                assert first.headers.get("Retry-After")
            injection.remaining = 0
            statuses = []
            for _ in range(2):
                async with http.post(app.url + EB, data=body, headers=headers) as reply:
                    statuses.append(reply.status)
    finally:
        await sink.close()
    assert statuses == [200, 200]
    assert len(kube.objects("argoproj.io", "v1alpha1", "workflows", "data")) == 1


async def test_mns_answers_503_within_reply_window_then_retry_succeeds(
    tmp_path: Path, keypair: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    """A submission still running at mns_reply_within is answered 503; the retry creates one Workflow."""
    gate = asyncio.Event()
    local = LocalSink(tmp_path / "workflows")

    class Slow(LocalSink):
        async def create(self, workflow: dict[str, Any]) -> Any:
            await gate.wait()
            return await local.create(workflow)

    pem = keypair[1]

    async def cert(_: web.Request) -> web.Response:
        return web.Response(body=pem)

    cert_app = web.Application()
    cert_app.add_routes([web.get("/cert.pem", cert)])
    cert_runner = web.AppRunner(cert_app)
    await cert_runner.setup()
    await web.TCPSite(cert_runner, "127.0.0.1", 0).start()
    cert_url = f"http://127.0.0.1:{cert_runner.addresses[0][1]}/cert.pem"
    settings = OssPushSettings(mns_cert_hosts=("127.0.0.1",), mns_reply_within=0.5)
    body = (FIXTURES / "oss" / "mns-http-push.xml").read_bytes()
    try:
        async with (
            _app(tmp_path, Slow(tmp_path / "unused"), settings, {}) as app,
            aiohttp.ClientSession() as http,
        ):
            async with http.post(
                app.url + MNS,
                data=body,
                headers=mns_headers(keypair[0], MNS, cert_url, now=datetime.now(UTC)),
            ) as first:
                assert first.status == 503
            gate.set()
            async with http.post(
                app.url + MNS,
                data=body,
                headers=mns_headers(keypair[0], MNS, cert_url, now=datetime.now(UTC)),
            ) as second:
                assert second.status == 200, await second.text()
    finally:
        await cert_runner.cleanup()
        await local.close()
    assert len(list((tmp_path / "workflows").rglob("*.yaml"))) == 1
