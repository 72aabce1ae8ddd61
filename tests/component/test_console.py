"""The decision API (/api/events, /api/events/ID, /api/rules), the status page's HTML, its
access rule, and `trigger events` / `trigger why` against a running daemon."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import DaemonProcess
from tests.statuspage import RULES, post, seeded
from trigger.daemon.console import _loopback


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with seeded(tmp_path_factory.mktemp("console")) as running:
        yield running


def api(daemon: DaemonProcess, path: str) -> dict:  # type: ignore[type-arg]
    answer = daemon.get(path)
    assert answer.status == 200, answer.body
    return answer.json()  # type: ignore[no-any-return]


def outcomes(daemon: DaemonProcess, **query: str) -> list[tuple[str, str]]:
    found = api(daemon, "/api/events?" + urllib.parse.urlencode(query))["events"]
    return [(e["id"], r["outcome"]) for e in found for r in e["rules"]]


def trigger(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trigger.cli", *args, "--server", daemon.url],
        capture_output=True, text=True, timeout=30, check=False,
    )


def test_the_api_lists_every_kind_of_decision(daemon: DaemonProcess) -> None:
    """Created, duplicate, filtered and dead-lettered records, oldest first, filterable."""
    assert outcomes(daemon) == [
        ("order-1", "created"),
        ("order-1", "duplicate"),
        ("order-2", "filtered"),
        ("broken-1", "dead-lettered"),
        ("order-xss", "filtered"),
    ]
    assert outcomes(daemon, outcome="filtered", rule="big-orders") == [
        ("order-2", "filtered"),
        ("order-xss", "filtered"),
    ]
    assert outcomes(daemon, limit="1") == [("order-xss", "filtered")]
    assert daemon.get("/api/events?outcome=nonsense").status == 400


def test_one_event_is_explained_down_to_the_field(daemon: DaemonProcess) -> None:
    """/api/events/ID names the failing check, the field and the value; 404 when unknown."""
    found = api(daemon, "/api/events/order-2")
    (entry,) = found["rules"]
    assert entry["rule"] == "big-orders" and entry["outcome"] == "filtered"
    pattern = entry["steps"][-1]
    assert pattern["check"] == "filter.pattern" and not pattern["ok"]
    assert "event.body.amount is 5" in pattern["misses"][0]
    assert {"reason": "rule takes cron events, not webhook events", "rules": ["nightly"]} in (
        found["otherRuleReasons"]
    )
    assert daemon.get("/api/events/no-such-event").status == 404


def test_the_rules_api_shows_verdicts_counters_and_next_fires(daemon: DaemonProcess) -> None:
    """/api/rules: source, verdict, counters, last Workflow, next cron fire times."""
    rules = {r["name"]: r for r in api(daemon, "/api/rules")["rules"]}
    orders = rules["big-orders"]
    assert (orders["source"], orders["verdict"], orders["created"], orders["duplicates"]) == (
        "webhook", "active", 1, 1,
    )
    assert orders["last_workflow"].startswith("big-orders-")
    assert rules["broken"]["last_error"].startswith("RenderError")
    assert len(rules["nightly"]["nextFires"]) == 3


def test_the_page_escapes_what_came_from_an_event(daemon: DaemonProcess) -> None:
    """An object key with <script> is HTML-escaped on the detail page."""
    page = daemon.get("/events/order-xss")
    assert page.status == 200
    assert b"<script>document" not in page.body
    assert b"&lt;script&gt;document.title=" in page.body


def test_the_page_shows_the_queues(daemon: DaemonProcess) -> None:
    """The page's Queues table: each declared queue with its limit, namespaces and counts
    (the local sink: one unfinished manifest waiting, nothing runs it, said in a note)."""
    import re

    page = daemon.get("/").body.decode()
    assert "<h2>Queues</h2>" in page
    row = re.search(r"<tr><td>fraud-checks</td>(.*?)</tr>", page, re.S)
    assert row is not None, page
    cells = re.findall(r"<td>(.*?)</td>", row.group(1), re.S)
    assert cells[:4] == ["3", "shop", "0", "1"]
    assert "the limit is not enforced" in cells[4], cells


def test_trigger_why_says_which_check_failed(daemon: DaemonProcess) -> None:
    """`trigger why` prints each rule's outcome and the failing check; exit 1 if unknown."""
    done = trigger(daemon, "why", "order-2", "-o", "table")
    assert done.returncode == 0, done.stderr
    assert "rule big-orders: filtered" in done.stdout
    assert "FAIL filter.pattern" in done.stdout and "event.body.amount is 5" in done.stdout
    assert "not for this event: rule takes cron events" in done.stdout
    assert trigger(daemon, "why", "nope").returncode == 1


def test_trigger_events_lists_and_filters(daemon: DaemonProcess) -> None:
    """`trigger events` prints a table, or JSON lines with -o json; --outcome filters."""
    table = trigger(daemon, "events", "-o", "table")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["TIME", "SOURCE", "EVENT", "RULES"]
    assert "big-orders=duplicate" in table.stdout
    lines = trigger(daemon, "events", "--outcome", "dead-lettered", "-o", "json").stdout
    assert [json.loads(line)["id"] for line in lines.splitlines()] == ["broken-1"]


def test_trigger_events_says_when_the_daemon_is_away(closed_port: int) -> None:
    """Exit 2 with the reason when nothing answers at --server."""
    done = subprocess.run(
        [sys.executable, "-m", "trigger.cli", "events", "--server", f"http://127.0.0.1:{closed_port}"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 2 and "cannot reach the daemon" in done.stderr


def test_with_a_token_every_client_must_present_it(tmp_path: Path) -> None:
    """With ui.token_env set: the API answers 401 without the bearer token, the page sends
    to the login form, whose cookie then opens it; a wrong token is refused."""
    env = {"TRIGGER_UI__TOKEN_ENV": "UI_TOKEN", "UI_TOKEN": "s3cret"}
    with seeded(tmp_path, env) as daemon:
        assert daemon.get("/api/events").status == 401
        bearer = {"Authorization": "Bearer s3cret"}
        assert daemon.request("GET", "/api/events", headers=bearer).status == 200
        assert daemon.request("GET", "/", headers={"Authorization": "Bearer nope"}).status == 200
        # (urllib follows the redirect to the login form, which is served to anyone)
        assert b'name="token"' in daemon.get("/").body
        wrong = daemon.request("POST", "/login", b"token=nope",
                               {"Content-Type": "application/x-www-form-urlencoded"})
        assert wrong.status == 401
        done = trigger(daemon, "events", "-o", "json")
        assert done.returncode == 2 and "401" in done.stderr


def test_only_loopback_clients_are_served_without_a_token() -> None:
    """The access rule's address test: loopback v4 and v6 are in, others out."""
    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback(None)
    assert not _loopback("10.0.0.7") and not _loopback("192.168.1.2") and not _loopback("x")


def test_trigger_events_follow_prints_new_decisions(tmp_path: Path) -> None:
    """`trigger events -f` prints what is there, then each new record as it comes."""
    with seeded(tmp_path) as daemon:
        follower = subprocess.Popen(
            [sys.executable, "-m", "trigger.cli", "events", "-f", "-o", "json",
             "--server", daemon.url],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            assert follower.stdout is not None
            seen = [json.loads(follower.stdout.readline())["id"] for _ in range(5)]
            assert seen[-1] == "order-xss"
            assert post(daemon, "/orders", "order-late", {"amount": 500}) == 200
            late = json.loads(follower.stdout.readline())
            assert (late["id"], late["rules"][0]["outcome"]) == ("order-late", "created")
        finally:
            follower.kill()
            follower.wait()


def routable_address() -> str | None:
    """This host's address on its default route, if it has one (not loopback)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))  # no packet is sent: it picks the route only
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if _loopback(address) else address


def test_beyond_loopback_the_page_needs_a_token(tmp_path: Path) -> None:
    """Listening on 0.0.0.0 without a token, a client on a routable address gets 403 from
    the page and the API; with a token it gets 401 without it and 200 with it."""
    address = routable_address()
    if address is None:
        pytest.skip("this host has no routable address to connect from")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    token = {"TRIGGER_UI__TOKEN_ENV": "UI_TOKEN", "UI_TOKEN": "t0ken"}
    for name, env in (("open", {}), ("token", token)):
        daemon = DaemonProcess(tmp_path / name, rules, env=env)
        daemon.workdir.mkdir()
        daemon.extra_args = ["--listen", f"0.0.0.0:{daemon.port}"]
        daemon.start()
        try:
            there_url = f"http://{address}:{daemon.port}"
            codes = [_status(there_url + path) for path in ("/", "/api/events")]
            if name == "open":
                assert codes == [403, 403]
                assert daemon.get("/api/events").status == 200  # loopback still served
            else:
                assert codes == [200, 401]  # the page: the login form after a redirect
                bearer = {"Authorization": "Bearer t0ken"}
                assert _status(there_url + "/api/events", bearer) == 200
        finally:
            daemon.stop()


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
