"""Test senders that push to the daemon the way EventBridge, MNS and a webhook sender do.

Each delivery is POSTed with a per-attempt timeout and retried with exponential backoff on
5xx, timeouts and connection errors, until a 2xx (delivered) or a 4xx (refused, never
retried) — the behaviour of EventBridge's and MNS's `EXPONENTIAL_DECAY_RETRY` (1, 2, 4 …
512 s, `../shared/reference/oss-wire-formats.md`), scaled down in time so a test can
outlast a daemon's restart. Every attempt is signed afresh, as the real senders sign each
push: EventBridge v2 (RSA-SHA256) plus its token, MNS (RSA-SHA1 over the `x-mns-*`
headers, certificate from a URL), the webhook with GitHub's `X-Hub-Signature-256` and a
delivery id that stays the same across retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.unit.test_oss_signatures import eventbridge_headers, mns_headers
from trigger.testing.ossserver import build_eventbridge_event, build_mns_message, build_oss_record

ACCOUNT, REGION = "1234567890123456", "cn-hangzhou"
EVENTBRIDGE_PATH, MNS_PATH = "/oss/eventbridge", "/oss/mns"


@dataclass(frozen=True)
class Backoff:
    """When a sender tries again: `initial` doubling to `max_delay`, with up to 50 % jitter
    (many senders retrying together do not arrive in step), each attempt cut off after
    `timeout`, and no attempt started after `give_up` seconds."""

    timeout: float = 10.0
    initial: float = 0.05
    max_delay: float = 1.0
    give_up: float = 120.0

    def delay(self, attempt: int) -> float:
        base = min(self.max_delay, self.initial * 2.0 ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)


@dataclass
class Delivery:
    """One event a sender delivers, and what became of it."""

    kind: str  # eventbridge | mns | webhook
    ident: str  # the event's id as the daemon sees it
    matches: tuple[str, ...]  # the rules it should become a Workflow for
    body: bytes
    poison: tuple[str, ...] = ()  # the rules it should be dead-lettered for
    attempts: int = 0
    statuses: list[int] = field(default_factory=list)  # 0: timeout or connection error

    @property
    def final(self) -> int | None:
        return self.statuses[-1] if self.statuses else None

    @property
    def settled(self) -> bool:
        return self.final is not None and 200 <= self.final < 500


class Signer(Protocol):
    def __call__(self, delivery: Delivery, url: str) -> dict[str, str]: ...


async def deliver(
    session: aiohttp.ClientSession,
    url: str,
    delivery: Delivery,
    sign: Signer,
    backoff: Backoff,
) -> None:
    """POST `delivery` until it is answered 2xx or 4xx, or the sender gives up."""
    loop = asyncio.get_running_loop()
    end = loop.time() + backoff.give_up
    while True:
        delivery.attempts += 1
        try:
            timeout = aiohttp.ClientTimeout(total=backoff.timeout)
            headers = sign(delivery, url)
            async with session.post(url, data=delivery.body, headers=headers, timeout=timeout) as r:
                await r.read()
                delivery.statuses.append(r.status)
        except (aiohttp.ClientError, TimeoutError):
            delivery.statuses.append(0)
        if delivery.settled or loop.time() > end:
            return
        await asyncio.sleep(backoff.delay(delivery.attempts))  # the sender's backoff


async def deliver_all(
    base_url: str,
    work: Sequence[tuple[str, Delivery, Signer]],
    *,
    concurrency: int,
    backoff: Backoff,
) -> None:
    """Deliver every (path, delivery, signer) with at most `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(path: str, delivery: Delivery, sign: Signer) -> None:
            async with gate:
                await deliver(session, base_url + path, delivery, sign, backoff)

        async with asyncio.TaskGroup() as group:
            for path, delivery, sign in work:
                group.create_task(one(path, delivery, sign))


# --- the three senders ---------------------------------------------------------------------


def _etag(ident: str) -> str:
    return hashlib.md5(ident.encode()).hexdigest().upper()


@dataclass(frozen=True)
class EventBridgeSender:
    """An EventBridge HTTP target with a token and v2 signatures (Complete Event bodies)."""

    key: rsa.RSAPrivateKey
    cert_url: str
    token: str

    def delivery(self, ident: str, bucket: str, key: str, matches: Sequence[str]) -> Delivery:
        event = build_eventbridge_event(
            bucket, key, 11, _etag(ident), "ObjectCreated:PutObject", REGION, ACCOUNT,
            datetime.now(UTC), event_id=ident,
        )  # fmt: skip
        return Delivery("eventbridge", ident, tuple(matches), json.dumps(event).encode())

    def __call__(self, delivery: Delivery, url: str) -> dict[str, str]:
        signed = eventbridge_headers(
            self.key, url, delivery.body, self.cert_url, now=datetime.now(UTC), token=self.token
        )
        return {"Content-Type": "application/json;charset=utf-8", **signed}


@dataclass(frozen=True)
class MnsSender:
    """An MNS topic's HTTP endpoint subscription (XML format), signed with RSA-SHA1."""

    key: rsa.RSAPrivateKey
    cert_url: str

    def delivery(self, ident: str, bucket: str, key: str, matches: Sequence[str]) -> Delivery:
        record = build_oss_record(
            bucket, key, 7, _etag(ident), "ObjectCreated:PutObject", REGION, ACCOUNT,
            datetime.now(UTC), request_id=ident,
        )  # fmt: skip
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            '<Notification xmlns="http://mns.aliyuncs.com/doc/v1/">'
            f"<TopicOwner>{ACCOUNT}</TopicOwner><TopicName>oss-events</TopicName>"
            f"<Subscriber>{ACCOUNT}</Subscriber><SubscriptionName>trigger</SubscriptionName>"
            f"<MessageId>{ident}</MessageId><Message>{build_mns_message([record])}</Message>"
            "<MessageMD5>X</MessageMD5><MessageTag></MessageTag>"
            "<PublishTime>1735877106000</PublishTime></Notification>"
        )
        # The daemon names an MNS event by its request id, name and object.
        event_id = f"mns:{ident}:ObjectCreated:PutObject:{bucket}/{key}"
        return Delivery("mns", event_id, tuple(matches), body.encode())

    def __call__(self, delivery: Delivery, url: str) -> dict[str, str]:
        return mns_headers(self.key, MNS_PATH, self.cert_url, now=datetime.now(UTC))


@dataclass(frozen=True)
class WebhookSender:
    """A generic webhook sender, signing as GitHub does, one delivery id across retries."""

    secret: bytes

    def delivery(
        self, ident: str, body: dict[str, Any], matches: Sequence[str], poison: Sequence[str] = ()
    ) -> Delivery:
        raw = json.dumps(body).encode()
        return Delivery("webhook", ident, tuple(matches), raw, tuple(poison))

    def __call__(self, delivery: Delivery, url: str) -> dict[str, str]:
        digest = hmac.new(self.secret, delivery.body, hashlib.sha256).hexdigest()
        return {
            "Content-Type": "application/json",
            "X-GitHub-Delivery": delivery.ident,
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": f"sha256={digest}",
        }


# --- where the signing certificate lives -------------------------------------------------
