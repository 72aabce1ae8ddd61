"""Pushed deliveries across SIGKILLs: EventBridge, MNS and webhook senders that retry as the
real ones do, a daemon killed while deliveries are in flight and restarted, and in the end
exactly one Workflow per (delivery, matching rule) in the Kubernetes API emulator and one
dead letter per delivery that cannot render. The kills come each time another 1/(kills+1)
of the deliveries has settled. Short form: 300 deliveries, 2 kills; `pytest --long`:
3,000 deliveries, 5 kills."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from functools import partial

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.daemon import DaemonProcess, certificate_host, until
from tests.e2e.harness import Emulator, Harness
from tests.e2e.senders import (
    EVENTBRIDGE_PATH,
    MNS_PATH,
    Backoff,
    Delivery,
    EventBridgeSender,
    MnsSender,
    Signer,
    WebhookSender,
    deliver_all,
)
from tests.unit.test_oss_signatures import make_key_and_cert

TOKEN, SECRET, HOOK = "eb-token", "hook-secret", "/hooks/push"
RULES = f"""
apiVersion: trigger/v1
kind: Rule
metadata: {{name: eb-in}}
spec:
  source: {{oss: {{bucket: eb-bucket, events: ["ObjectCreated:*"], key: {{prefix: in/}}}}}}
  workflow: {{template: ingest, parameters: {{key: "{{{{ event.key }}}}"}}}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: eb-csv}}
spec:
  source: {{oss: {{bucket: eb-bucket, events: ["ObjectCreated:*"], key: {{suffix: .csv}}}}}}
  workflow: {{template: ingest, parameters: {{key: "{{{{ event.key }}}}"}}}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: mns-drop}}
spec:
  source: {{oss: {{bucket: mns-bucket, events: ["ObjectCreated:*"], key: {{prefix: drop/}}}}}}
  workflow: {{template: ingest, parameters: {{key: "{{{{ event.key }}}}"}}}}
---
apiVersion: trigger/v1
kind: Rule
metadata: {{name: hook-main}}
spec:
  source:
    webhook: {{path: {HOOK}, auth: {{hmacSecretEnv: HOOK_SECRET}}}}
  filter: {{pattern: {{body: {{ref: [refs/heads/main]}}}}}}
  workflow: {{template: ingest, parameters: {{commit: "{{{{ event.body.after }}}}"}}}}
"""


@pytest.fixture(scope="module")
def keypair() -> tuple[rsa.RSAPrivateKey, bytes]:
    return make_key_and_cert()


@pytest.fixture
def cert_url(keypair: tuple[rsa.RSAPrivateKey, bytes]) -> Iterator[str]:
    with certificate_host(keypair[1]) as url:
        yield url


def push_daemon(harness: Harness, emulator: Emulator) -> DaemonProcess:
    """A daemon with the kubernetes sink, EventBridge checking token and signature, MNS
    checking signatures, certificates fetched from loopback."""
    emulator.add_template("ingest")
    push = {
        "eventbridge_token_env": "EB_TOKEN",
        "eventbridge_verify_signature": True,
        "eventbridge_cert_hosts": ["127.0.0.1"],
        "mns_cert_hosts": ["127.0.0.1"],
    }
    env = {"EB_TOKEN": TOKEN, "HOOK_SECRET": SECRET}
    return harness.daemon("push", RULES, emulator, env=env, oss={"push": push})


def deliveries(
    count: int, key: rsa.RSAPrivateKey, cert_url: str
) -> list[tuple[str, Delivery, Signer]]:
    """`count` deliveries, a third each EventBridge, MNS and webhook, interleaved; a third
    of each kind matches no rule, some EventBridge ones match two, a third of the webhook
    ones cannot render (dead letters)."""
    eventbridge, mns = EventBridgeSender(key, cert_url, TOKEN), MnsSender(key, cert_url)
    hook = WebhookSender(SECRET.encode())
    work: list[tuple[str, Delivery, Signer]] = []
    for i in range(count):
        kind, variant = i % 3, (i // 3) % 3
        if kind == 0:
            name = ["in/{}.csv", "in/{}.json", "out/{}.csv"][variant].format(i)
            rules = [
                r
                for r, ok in (("eb-in", name.startswith("in/")), ("eb-csv", name.endswith(".csv")))
                if ok
            ]
            work.append(
                (
                    EVENTBRIDGE_PATH,
                    eventbridge.delivery(f"EB{i:06d}", "eb-bucket", name, rules),
                    eventbridge,
                )
            )
        elif kind == 1:
            name = f"{'keep' if variant == 2 else 'drop'}/{i}.bin"
            rules = ["mns-drop"] if variant != 2 else []
            work.append((MNS_PATH, mns.delivery(f"MNS{i:06d}", "mns-bucket", name, rules), mns))
        else:  # main: a Workflow; main without `after`: a render error; dev: nothing
            ref = "refs/heads/dev" if variant == 2 else "refs/heads/main"
            body = {"ref": ref, "repository": {"full_name": "acme/x"}}
            if variant == 0:
                body["after"] = f"{i:040x}"
            rules, poison = (
                ([], ["hook-main"]) if variant == 1 else (["hook-main"] * (variant == 0), [])
            )
            work.append((HOOK, hook.delivery(f"delivery-{i:06d}", body, rules, poison), hook))
    return work  # fmt: skip


def settled_reach(work: list[tuple[str, Delivery, Signer]], threshold: int) -> bool:
    return sum(d.settled for _, d, _ in work) >= threshold


async def kill_at_progress(
    daemon: DaemonProcess, work: list[tuple[str, Delivery, Signer]], kills: int
) -> list[int]:
    """SIGKILL the daemon each time another 1/(kills+1) of the deliveries has settled, and
    start it again at once; return how many had settled at each kill."""
    at: list[int] = []
    for k in range(1, kills + 1):
        threshold = len(work) * k // (kills + 1)
        await until(partial(settled_reach, work, threshold), timeout=120, what="settled")
        at.append(sum(d.settled for _, d, _ in work))
        await asyncio.to_thread(Harness.restart, daemon)  # SIGKILL by PID, start again
    return at


async def test_pushes_across_kills_make_one_workflow_each(
    harness: Harness, keypair: tuple[rsa.RSAPrivateKey, bytes], cert_url: str, long_run: bool
) -> None:
    """EventBridge, MNS and webhook deliveries retried by their senders through SIGKILLs of
    the daemon: each (delivery, matching rule) has exactly one Workflow, none extra, and
    each delivery that cannot render exactly one dead letter."""
    count, kills = (3000, 5) if long_run else (300, 2)
    work = deliveries(count, keypair[0], cert_url)
    emulator = harness.emulator()
    daemon = await asyncio.to_thread(push_daemon, harness, emulator)
    sending = deliver_all(daemon.url, work, concurrency=32, backoff=Backoff())
    killed_at, _ = await asyncio.gather(kill_at_progress(daemon, work, kills), sending)
    found = await asyncio.to_thread(emulator.workflows)
    finals = Counter(d.final for _, d, _ in work)
    retried = sum(d.attempts > 1 for _, d, _ in work)
    print(f"\n{count} deliveries, kills after {killed_at} settled, {retried} retried, {finals}")
    assert finals == {200: count}, [(d.ident, d.statuses) for _, d, _ in work if d.final != 200]
    expected = Counter((rule, d.ident) for _, d, _ in work for rule in d.matches)
    assert found == expected, (found - expected, expected - found)
    letters = Counter(
        (letter["rule"], letter["event_id"])
        for line in daemon.dead_letters.read_text().splitlines()
        for letter in [json.loads(line)]
    )
    assert letters == Counter((rule, d.ident) for _, d, _ in work for rule in d.poison)
    assert retried > 0  # the kills did land while deliveries were in flight
