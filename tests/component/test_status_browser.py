"""The status page in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by selenium, against a `trigger run` daemon that has seen created,
duplicate, filtered and dead-lettered events (and one with open gates). Skipped only where Chromium is absent and
`CI` is not set; in CI its absence fails."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver  # the test extra has it, so CI never lacks it
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.component.test_gate_panel import RULES as GATE_RULES
from tests.daemon import DaemonProcess, running
from tests.statuspage import XSS_KEY, post, seeded

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    if CHROMIUM is None or DRIVER is None:
        reason = "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the browser tests: {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with seeded(tmp_path_factory.mktemp("browser")) as running:
        yield running


def wait(browser: webdriver.Chrome) -> WebDriverWait:  # type: ignore[type-arg]
    return WebDriverWait(browser, 20)


def cells(browser: webdriver.Chrome, table: str, column: int) -> list[str]:
    rows = browser.find_elements(By.CSS_SELECTOR, f"#{table} tr")[1:]
    return [row.find_elements(By.TAG_NAME, "td")[column].text for row in rows]


def non_blank(path: Path) -> bool:
    """Whether the screenshot has more than one colour's worth of pixels."""
    from PIL import Image, ImageStat

    with Image.open(path) as image:
        return max(ImageStat.Stat(image.convert("L")).stddev) > 5


def test_the_page_shows_rules_and_decisions(
    browser: webdriver.Chrome, daemon: DaemonProcess, tmp_path: Path
) -> None:
    """The rules table has every rule with its state and counters; the decisions table
    every event, newest first; the screenshot is not blank."""
    browser.get(daemon.url + "/")
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "rules")))
    assert [name.splitlines()[0] for name in cells(browser, "rules", 0)] == [
        "big-orders", "broken", "nightly",
    ]
    assert cells(browser, "rules", 2)[0] == "active"
    assert cells(browser, "rules", 4)[0] == "1"  # created
    assert cells(browser, "rules", 5)[0] == "1"  # duplicates
    assert len(cells(browser, "rules", 10)[2].splitlines()) == 3  # nightly's next fires
    events = [cell.splitlines()[0] for cell in cells(browser, "decisions", 0)]
    assert events == ["order-xss", "broken-1", "order-2", "order-1", "order-1"]
    assert "dead-lettered" in cells(browser, "decisions", 3)[1]
    assert "trigger replay" in browser.find_element(By.ID, "dead-letters").text
    shot = tmp_path / "status.png"
    assert browser.save_screenshot(str(shot)) and non_blank(shot)


def test_decisions_filter_by_outcome(browser: webdriver.Chrome, daemon: DaemonProcess) -> None:
    """Choosing an outcome in the form and submitting it narrows the decisions table."""
    browser.get(daemon.url + "/")
    Select(browser.find_element(By.NAME, "outcome")).select_by_visible_text("filtered")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait(browser).until(expected_conditions.url_contains("outcome=filtered"))
    events = [cell.splitlines()[0] for cell in cells(browser, "decisions", 0)]
    assert events == ["order-xss", "order-2"]


def test_the_detail_view_explains_and_escapes(
    browser: webdriver.Chrome, daemon: DaemonProcess, tmp_path: Path
) -> None:
    """A decision's link opens its explain tree; a `<script>` key shows as text and runs
    nothing."""
    browser.get(daemon.url + "/?rule=big-orders&outcome=filtered")
    browser.find_element(By.LINK_TEXT, "order-xss").click()
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "explain")))
    explain = browser.find_element(By.ID, "explain").text
    assert "filter.pattern" in explain and "event.body.amount is 1" in explain
    assert XSS_KEY in browser.find_element(By.ID, "event").text
    assert browser.title != "pwned"
    assert not browser.find_elements(By.CSS_SELECTOR, "#event script")
    shot = tmp_path / "detail.png"
    assert browser.save_screenshot(str(shot)) and non_blank(shot)


def test_open_gates_show_with_a_script_key_as_text(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    """The Open gates panel lists each open gate key with what it lacks; a `<script>` key
    shows as text and runs nothing."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(GATE_RULES)
    with running(tmp_path, tmp_path / "rules") as daemon:
        assert post(daemon, "/parts", "part-1", {"day": "2026-12-06"}) == 200
        assert post(daemon, "/parts", "part-xss", {"day": XSS_KEY}) == 200
        browser.get(daemon.url + "/")
        wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "open-gates")))
        assert sorted(cells(browser, "open-gates", 1)) == sorted(["2026-12-06", XSS_KEY])
        assert cells(browser, "open-gates", 6) == ["part (1), done (1)"] * 2
        assert browser.title != "pwned"
        assert not browser.find_elements(By.CSS_SELECTOR, "#open-gates script")
        shot = tmp_path / "gates.png"
        assert browser.save_screenshot(str(shot)) and non_blank(shot)


def test_the_token_gate_in_the_browser(browser: webdriver.Chrome, tmp_path: Path) -> None:
    """With a token configured the page asks for it; a wrong one is refused, the right one
    opens the page (by a cookie)."""
    env = {"TRIGGER_UI__TOKEN_ENV": "UI_TOKEN", "UI_TOKEN": "s3cret"}
    with seeded(tmp_path, env) as daemon:
        browser.delete_all_cookies()
        browser.get(daemon.url + "/")
        field = wait(browser).until(
            expected_conditions.presence_of_element_located((By.NAME, "token"))
        )
        field.send_keys("wrong")
        field.submit()
        wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "login-failed")))
        browser.find_element(By.NAME, "token").send_keys("s3cret")
        browser.find_element(By.NAME, "token").submit()
        wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "rules")))
        assert "big-orders" in browser.find_element(By.ID, "rules").text
