"""EventBridge and MNS push authentication: strings-to-sign, RSA checks, certificate URLs and cache."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from trigger.clock import VirtualClock
from trigger.sources.oss.signatures import (
    AuthError,
    CertificateCache,
    CertificateUnavailable,
    EventBridgeAuth,
    MnsAuth,
    check_cert_url,
    eventbridge_strings_to_sign,
    load_public_key,
    mns_string_to_sign,
    verify_rsa,
)

NOW = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
TARGET = "http://127.0.0.1:8080/oss/eventbridge"

# A real MNS push (public test vector from cnryb/verify-signature): 512-bit, expired 2016.
MNS_CERT = b"""-----BEGIN CERTIFICATE-----
MIICiDCCAjKgAwIBAgIJAL+acWZrTrlfMA0GCSqGSIb3DQEBBQUAMGMxCzAJBgNV
BAYTAjg2MREwDwYDVQQIEwhaaGVqaWFuZzERMA8GA1UEBxMISGFuZ3pob3UxDzAN
BgNVBAoTBkFsaXl1bjEMMAoGA1UECxMDTW5zMQ8wDQYDVQQDEwZub3RpZnkwHhcN
MTUwNzAyMDIwNjE2WhcNMTYwNzAxMDIwNjE2WjBjMQswCQYDVQQGEwI4NjERMA8G
A1UECBMIWmhlamlhbmcxETAPBgNVBAcTCEhhbmd6aG91MQ8wDQYDVQQKEwZBbGl5
dW4xDDAKBgNVBAsTA01uczEPMA0GA1UEAxMGbm90aWZ5MFwwDQYJKoZIhvcNAQEB
BQADSwAwSAJBALX0sFVowct1NAQjDyYSUf0rp1rOHLkz4kp0zNWcDyXMXa5PzsPU
UwJXaLwhvNCDLLWuiLK6Oh5elmOmL8Gy/5MCAwEAAaOByDCBxTAdBgNVHQ4EFgQU
kEah2o9HpCUCxhN/fY3kUtPkP4owgZUGA1UdIwSBjTCBioAUkEah2o9HpCUCxhN/
fY3kUtPkP4qhZ6RlMGMxCzAJBgNVBAYTAjg2MREwDwYDVQQIEwhaaGVqaWFuZzER
MA8GA1UEBxMISGFuZ3pob3UxDzANBgNVBAoTBkFsaXl1bjEMMAoGA1UECxMDTW5z
MQ8wDQYDVQQDEwZub3RpZnmCCQC/mnFma065XzAMBgNVHRMEBTADAQH/MA0GCSqG
SIb3DQEBBQUAA0EAluPg+k0Fc7WRcpP78+eLptYD8an7YOapUdNUmT2/SQC5BZ+t
cyWFit5pAEipngFL105d7AuW2AtwqG0FgV0ipw==
-----END CERTIFICATE-----
"""
MNS_HEADERS = {
    "Content-MD5": "4CCBAD7AF2D23C2D00DDECCA59323A8C",
    "Content-Type": "text/plain;charset=utf-8",
    "Date": "Wed, 29 Mar 2023 08:41:27 GMT",
    "x-mns-version": "2015-06-06",
    "x-mns-message-id": "250EB49D5F8D737A391C93C6ED165396",
    "x-mns-publish-time": "1680079287576",
    "x-mns-request-id": "6423F9B7BF94313030AF5EA0",
    "x-mns-signing-cert-url": "aHR0cHM6Ly9tbnN0ZXN0Lm9zcy1jbi1oYW5nemhvdS5hbGl5dW5jcy5jb20veDUwOV9wdWJsaWNfY2VydGlmaWNhdGUucGVt",
    "x-mns-subscriber": "1321669497458181",
    "x-mns-subscription-name": "mns-en-subs-oss-fecdn-internal-pre-1-22849529855680",
    "x-mns-topic-name": "mns-en-topics-oss-fecdn-internal-pre-22849529792243",
    "x-mns-topic-owner": "1321669497458181",
    "Authorization": "LP3cxoTCbhsiLJi0KQdEiRaufaxMfWUdLH064yoVoKl8xNcY+299itGmGsirVMY8vDpuZ1VwS0Uw7R5dNduSXg==",
}


# --- test keys and signers (shared with the component tests) -------------------------


def make_key_and_cert(common_name: str = "trigger-test") -> tuple[rsa.RSAPrivateKey, bytes]:
    """A fresh RSA key and a self-signed PEM certificate for it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def eventbridge_headers(
    key: rsa.RSAPrivateKey,
    url: str,
    body: bytes,
    cert_url: str,
    *,
    now: datetime = NOW,
    token: str | None = None,
    trailing_newline: bool = True,
) -> dict[str, str]:
    """The headers EventBridge sends with a v2-signed push."""
    headers = {
        "x-eventbridge-signature-timestamp": str(int(now.timestamp() * 1000)),
        "x-eventbridge-hash-method": "SHA256",
        "x-eventbridge-signature-version": "1.0",
        "x-eventbridge-signature-url": cert_url,
    }
    if token is not None:
        headers["x-eventbridge-signature-token"] = token
    lines = "".join(f"{k}: {v}\n" for k, v in headers.items())
    message = f"{url}\n{lines}".encode() + body + (b"\n" if trailing_newline else b"")
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return {**headers, "x-eventbridge-signature-v2": base64.b64encode(signature).decode()}


def mns_headers(
    key: rsa.RSAPrivateKey,
    path: str,
    cert_url: str,
    *,
    now: datetime = NOW,
    content_type: str = "text/xml;charset=utf-8",
) -> dict[str, str]:
    """The headers MNS sends with a signed HTTP-endpoint push."""
    headers = {
        "Content-Type": content_type,
        "Content-MD5": "720BD486CEF46FB15ADDF141BF84D708",
        "Date": now.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "x-mns-version": "2015-06-06",
        "x-mns-request-id": "5F1B2C3D4E5F60718293A4B5",
        "x-mns-signing-cert-url": base64.b64encode(cert_url.encode()).decode(),
        "x-mns-topic-name": "oss-events",
    }
    message = mns_string_to_sign("POST", headers, path)
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA1())
    return {**headers, "Authorization": base64.b64encode(signature).decode()}


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keypair() -> tuple[rsa.RSAPrivateKey, bytes]:
    return make_key_and_cert()


@pytest.fixture
async def cert_server(keypair: tuple[rsa.RSAPrivateKey, bytes]) -> AsyncIterator[dict[str, Any]]:
    """A loopback server for the certificate; `hits` counts downloads, `status` can be set."""
    state: dict[str, Any] = {"hits": 0, "status": 200}

    async def cert(request: web.Request) -> web.Response:
        state["hits"] += 1
        body = b"not a certificate" if request.match_info["name"] == "garbage" else keypair[1]
        return web.Response(body=body, status=state["status"])

    app = web.Application()
    app.add_routes([web.get("/{name}.pem", cert)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state["url"] = f"http://127.0.0.1:{port}/cert.pem"
    state["base"] = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


@pytest.fixture
async def certs() -> AsyncIterator[CertificateCache]:
    cache = CertificateCache(VirtualClock(NOW))
    yield cache
    await cache.close()


# --- strings to sign and RSA -----------------------------------------------------------


def test_mns_string_to_sign_matches_real_push() -> None:
    """The MNS string-to-sign of a real push verifies with MNS's real certificate."""
    message = mns_string_to_sign("POST", MNS_HEADERS, "/notifications")
    signature = base64.b64decode(MNS_HEADERS["Authorization"])
    assert verify_rsa(load_public_key(MNS_CERT), signature, [message], hashes.SHA1())


def test_mns_string_to_sign_ignores_header_case_and_order() -> None:
    """Header names are lower-cased and the x-mns-* headers sorted before signing."""
    shuffled = {k.upper(): v for k, v in reversed(list(MNS_HEADERS.items()))}
    assert mns_string_to_sign("POST", shuffled, "/n") == mns_string_to_sign(
        "POST", MNS_HEADERS, "/n"
    )


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_eventbridge_signature_verifies_with_and_without_final_newline(
    keypair: tuple[rsa.RSAPrivateKey, bytes], trailing_newline: bool
) -> None:
    """Both readings of the unverified trailing newline are accepted."""
    body = b'{"id":"1"}'
    headers = eventbridge_headers(
        keypair[0], TARGET, body, "http://127.0.0.1/c.pem", trailing_newline=trailing_newline
    )
    signature = base64.b64decode(headers["x-eventbridge-signature-v2"])
    candidates = eventbridge_strings_to_sign(TARGET, headers, body)
    assert verify_rsa(load_public_key(keypair[1]), signature, candidates, hashes.SHA256())


def test_eventbridge_signature_fails_for_another_body(
    keypair: tuple[rsa.RSAPrivateKey, bytes],
) -> None:
    """A signature over one body does not verify another."""
    headers = eventbridge_headers(keypair[0], TARGET, b"{}", "http://127.0.0.1/c.pem")
    signature = base64.b64decode(headers["x-eventbridge-signature-v2"])
    candidates = eventbridge_strings_to_sign(TARGET, headers, b"{ }")
    assert not verify_rsa(load_public_key(keypair[1]), signature, candidates, hashes.SHA256())


# --- certificate URLs ------------------------------------------------------------------

HOSTS = ("*.oss-accelerate.aliyuncs.com", "mnstest.oss-cn-hangzhou.aliyuncs.com", "127.0.0.1")


@pytest.mark.parametrize(
    "url",
    [
        "https://cn-hangzhou-eventbridge.oss-accelerate.aliyuncs.com/x509/cert.pem",
        "https://MNSTEST.oss-cn-hangzhou.aliyuncs.com/x509_public_certificate.pem",
        "http://127.0.0.1:9999/cert.pem",
    ],
)
def test_certificate_url_allowed(url: str) -> None:
    """HTTPS URLs on allowed hosts, and plain HTTP on an allowed loopback host, pass."""
    assert check_cert_url(url, HOSTS) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/cert.pem",
        "https://oss-accelerate.aliyuncs.com.evil.example/cert.pem",
        "http://cn-hangzhou-eventbridge.oss-accelerate.aliyuncs.com/cert.pem",
        "https://user:pw@mnstest.oss-cn-hangzhou.aliyuncs.com/c.pem",
        "ftp://127.0.0.1/cert.pem",
        "not a url",
    ],
)
def test_certificate_url_refused(url: str) -> None:
    """Hosts off the allow-list, plain HTTP off loopback, credentials and odd schemes fail."""
    with pytest.raises(AuthError):
        check_cert_url(url, HOSTS)


# --- EventBridge authentication ------------------------------------------------------------

EB = EventBridgeAuth(token=None, verify_signature=True, cert_hosts=("127.0.0.1",), max_skew=60.0)


async def test_eventbridge_accepts_good_signature(
    keypair: tuple[rsa.RSAPrivateKey, bytes], cert_server: dict[str, Any], certs: CertificateCache
) -> None:
    """A correctly signed, fresh push passes."""
    headers = eventbridge_headers(keypair[0], TARGET, b"{}", cert_server["url"])
    await EB.check(headers, b"{}", [TARGET], NOW, certs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: {**h, "x-eventbridge-signature-timestamp": "1"}, "away from now"),
        (lambda h: {**h, "x-eventbridge-hash-method": "SHA1"}, "unsupported"),
        (
            lambda h: {**h, "x-eventbridge-signature-v2": base64.b64encode(b"x" * 256).decode()},
            "does not verify",
        ),
        (lambda h: {k: v for k, v in h.items() if k != "x-eventbridge-signature-v2"}, "missing"),
        (
            lambda h: {**h, "x-eventbridge-signature-url": "https://evil.example/c.pem"},
            "allow-list",
        ),
    ],
)
async def test_eventbridge_refuses_bad_signature(
    keypair: tuple[rsa.RSAPrivateKey, bytes],
    cert_server: dict[str, Any],
    certs: CertificateCache,
    change: Callable[[dict[str, str]], dict[str, str]],
    message: str,
) -> None:
    """Expired, unsupported, forged, missing or off-list signatures are refused."""
    headers = change(eventbridge_headers(keypair[0], TARGET, b"{}", cert_server["url"]))
    with pytest.raises(AuthError, match=message):
        await EB.check(headers, b"{}", [TARGET], NOW, certs)


async def test_eventbridge_refuses_signature_for_another_url(
    keypair: tuple[rsa.RSAPrivateKey, bytes], cert_server: dict[str, Any], certs: CertificateCache
) -> None:
    """A push signed for another target URL is refused."""
    headers = eventbridge_headers(keypair[0], "http://elsewhere/hook", b"{}", cert_server["url"])
    with pytest.raises(AuthError, match="does not verify"):
        await EB.check(headers, b"{}", [TARGET], NOW, certs)


@pytest.mark.parametrize(
    ("given", "accepted"),
    [
        ({"x-eventbridge-signature-token": "s3cret"}, True),
        ({"X-EventBridge-Signature-Token": "s3cret"}, True),
        ({"x-eventbridge-signature-token": "s3cre"}, False),
        ({}, False),
    ],
)
async def test_eventbridge_token(
    given: dict[str, str], accepted: bool, certs: CertificateCache
) -> None:
    """Only the configured token passes a token-only receiver."""
    auth = replace(EB, token=b"s3cret", verify_signature=False)
    if accepted:
        await auth.check(given, b"{}", [TARGET], NOW, certs)
    else:
        with pytest.raises(AuthError):
            await auth.check(given, b"{}", [TARGET], NOW, certs)


async def test_eventbridge_without_any_auth_refuses(certs: CertificateCache) -> None:
    """With neither token nor signature checks configured, every push is refused."""
    auth = replace(EB, verify_signature=False)
    assert auth.refuses_everything is not None
    with pytest.raises(AuthError, match="refuses every push"):
        await auth.check({}, b"{}", [TARGET], NOW, certs)


async def test_eventbridge_loopback_demo_accepts_unauthenticated(certs: CertificateCache) -> None:
    """The loopback demo switch accepts pushes without any authentication."""
    auth = replace(EB, verify_signature=False, allow_unauthenticated=True)
    await auth.check({}, b"{}", [TARGET], NOW, certs)


# --- MNS authentication ------------------------------------------------------------------

MNS = MnsAuth(verify_signature=True, cert_hosts=("127.0.0.1",), max_skew=900.0)


async def test_mns_accepts_good_signature(
    keypair: tuple[rsa.RSAPrivateKey, bytes], cert_server: dict[str, Any], certs: CertificateCache
) -> None:
    """A correctly signed, fresh MNS push passes."""
    headers = mns_headers(keypair[0], "/oss/mns", cert_server["url"])
    await MNS.check("POST", "/oss/mns", headers, NOW, certs)


OFF_LIST = base64.b64encode(b"https://evil.example/c").decode()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (("/oss/mns", NOW + timedelta(minutes=16), None), "away from now"),
        (("/oss/other", NOW, None), "does not verify"),
        (("/oss/mns", NOW, ("Date", "yesterday")), "invalid Date"),
        (("/oss/mns", NOW, ("x-mns-signing-cert-url", OFF_LIST)), "allow-list"),
        (("/oss/mns", NOW, ("x-mns-topic-name", "forged")), "does not verify"),
        (("/oss/mns", NOW, ("Authorization", "")), "missing"),
    ],
)
async def test_mns_refuses(
    keypair: tuple[rsa.RSAPrivateKey, bytes],
    cert_server: dict[str, Any],
    certs: CertificateCache,
    case: tuple[str, datetime, tuple[str, str] | None],
    message: str,
) -> None:
    """Stale dates, other paths, forged headers and off-list certificates are refused."""
    path, now, change = case
    headers = mns_headers(keypair[0], "/oss/mns", cert_server["url"])
    if change is not None:
        headers[change[0]] = change[1]
    with pytest.raises(AuthError, match=message):
        await MNS.check("POST", path, headers, now, certs)


async def test_mns_check_can_be_turned_off_on_loopback(certs: CertificateCache) -> None:
    """With verification off, unsigned MNS pushes pass on loopback and are refused beyond."""
    off = replace(MNS, verify_signature=False)
    await replace(off, allow_unauthenticated=True).check("POST", "/oss/mns", {}, NOW, certs)
    with pytest.raises(AuthError, match="beyond loopback"):
        await off.check("POST", "/oss/mns", {}, NOW, certs)


# --- the certificate cache -----------------------------------------------------------------


async def test_certificate_is_fetched_once(
    cert_server: dict[str, Any], certs: CertificateCache
) -> None:
    """Repeated and concurrent lookups of one URL download the certificate once."""
    keys = await asyncio.gather(*(certs.public_key(cert_server["url"]) for _ in range(5)))
    await certs.public_key(cert_server["url"])
    assert cert_server["hits"] == 1
    assert len({k.public_numbers() for k in keys}) == 1


async def test_certificate_cache_is_bounded(cert_server: dict[str, Any]) -> None:
    """Beyond its size the least recently used certificate is dropped and fetched again."""
    cache = CertificateCache(VirtualClock(NOW), size=1)
    try:
        for name in ("a", "b", "a"):
            await cache.public_key(f"{cert_server['base']}/{name}.pem")
    finally:
        await cache.close()
    assert cert_server["hits"] == 3


async def test_certificate_expires_after_ttl(cert_server: dict[str, Any]) -> None:
    """A cached certificate is fetched again once its TTL has passed."""
    clock = VirtualClock(NOW)
    cache = CertificateCache(clock, ttl=60.0)
    try:
        await cache.public_key(cert_server["url"])
        await clock.advance(61)
        await cache.public_key(cert_server["url"])
    finally:
        await cache.close()
    assert cert_server["hits"] == 2


@pytest.mark.parametrize(("status", "error"), [(404, AuthError), (503, CertificateUnavailable)])
async def test_certificate_fetch_failures(
    cert_server: dict[str, Any], certs: CertificateCache, status: int, error: type[Exception]
) -> None:
    """A missing certificate is an auth failure; a server error is temporary."""
    cert_server["status"] = status
    with pytest.raises(error):
        await certs.public_key(cert_server["url"])


async def test_certificate_unreachable_is_temporary(certs: CertificateCache) -> None:
    """A certificate host that refuses connections is a temporary failure."""
    with pytest.raises(CertificateUnavailable):
        await certs.public_key("http://127.0.0.1:1/cert.pem")


async def test_certificate_garbage_is_refused(
    cert_server: dict[str, Any], certs: CertificateCache
) -> None:
    """A body that is not a certificate is an auth failure and is not cached."""
    for _ in range(2):
        with pytest.raises(AuthError, match="cannot be read"):
            await certs.public_key(cert_server["base"] + "/garbage.pem")
    assert cert_server["hits"] == 2
