"""The triage console in a real browser: Debian's headless Chromium driven by selenium, against a
running router on the real broker. Sign in, filter, decide a ticket with the keyboard only, then find
the RoutedTicket on its queue topic and the Correction on the corrections topic with the independent
Kafka client. Screenshots of the main pages go to docs/screenshots/ with CONSOLE_SCREENSHOTS=1."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from schemas.codec import encode
from schemas.events import AxisPrediction, Classification, ErrorKind
from tests.kafka_helpers import consume_until, produce
from tests.test_console_http import PASSWORD, USER, Setup, console_router
from tests.test_tools_cli import triage

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
WAIT_S = 15


def chromium_paths() -> tuple[str, str]:
    """Debian's chromium and chromedriver, installed when missing (the Makefile's TEST_TOOLS does the
    same); a machine that cannot install them fails here rather than skipping the browser tests."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", "chromium-driver"],
            check=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert browser and driver, "chromium and chromium-driver (Debian packages) are needed"
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    binary, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def screenshots_dir(tmp_path: Path) -> Path:
    """docs/screenshots/ when CONSOLE_SCREENSHOTS=1 (to refresh the README's pictures), else tmp."""
    target = REPO / "docs" / "screenshots" if os.environ.get("CONSOLE_SCREENSHOTS") == "1" else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    return target


def press(driver: WebDriver, *keys: str) -> None:
    webdriver.ActionChains(driver).send_keys(*keys).perform()


def tab_to(driver: WebDriver, wanted: str, limit: int = 40) -> None:
    """Tab until the element ``wanted`` (an id, or a link's text) has the focus, as a keyboard user would."""
    for _ in range(limit):
        active = driver.switch_to.active_element
        if wanted in (active.get_attribute("id"), active.text):
            return
        press(driver, Keys.TAB)
    raise AssertionError(f"Tab never reached {wanted!r}")


def wait_for_text(driver: WebDriver, text: str) -> None:
    def shown(d: WebDriver) -> bool:
        return text in d.find_element(By.TAG_NAME, "body").text

    try:
        WebDriverWait(driver, WAIT_S, ignored_exceptions=[StaleElementReferenceException]).until(shown)
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text[:300]
        raise AssertionError(f"{text!r} not on {driver.current_url}: {body!r}") from None


def browse(driver: WebDriver, base: str, shots: Path) -> None:
    """The whole flow, in the browser (a thread of its own: the router shares the test's event loop)."""
    driver.delete_all_cookies()
    driver.get(f"{base}/console/")
    wait_for_text(driver, "Sign in")
    assert driver.current_url.endswith("/console/sign-in")
    driver.save_screenshot(str(shots / "console-sign-in.png"))
    driver.find_element(By.ID, "user").send_keys(USER)
    driver.find_element(By.ID, "password").send_keys(PASSWORD, Keys.ENTER)
    wait_for_text(driver, "Inbox")
    rows = driver.find_elements(By.CSS_SELECTOR, "#inbox tbody tr[data-key]")
    assert {row.find_element(By.TAG_NAME, "a").text for row in rows} == {"T-0011", "T-0012"}
    driver.save_screenshot(str(shots / "console-inbox.png"))

    driver.find_element(By.CSS_SELECTOR, 'input[name="kind"][value="low_confidence"]').click()
    driver.find_element(By.ID, "apply-filter").click()
    wait_for_text(driver, "1 record;")
    rows = driver.find_elements(By.CSS_SELECTOR, "#inbox tbody tr[data-key]")
    assert [row.find_element(By.TAG_NAME, "a").text for row in rows] == ["T-0011"]

    # Keyboard only from here: Tab to the ticket, Enter; Tab to each label, type it; Tab to Route, Enter.
    tab_to(driver, "T-0011")
    press(driver, Keys.ENTER)
    wait_for_text(driver, "body of ticket 11")
    driver.save_screenshot(str(shots / "console-record.png"))
    guessed = {
        axis: driver.find_element(By.ID, f"label-{axis}").get_attribute("value") for axis in GUESS.axes
    }
    assert guessed == {axis: prediction.label for axis, prediction in GUESS.axes.items()}  # preselected
    assert "0.41" in driver.find_element(By.ID, "classification").text
    for axis, typed in (("ticket_type", "bi"), ("urgency", "h"), ("sentiment", "an")):
        tab_to(driver, f"label-{axis}")
        press(driver, typed)
    chosen = {
        axis: driver.find_element(By.ID, f"label-{axis}").get_attribute("value")
        for axis in ("team", "ticket_type", "urgency", "sentiment")
    }
    assert chosen == {
        "team": "billing",
        "ticket_type": "billing_dispute",
        "urgency": "high",
        "sentiment": "angry",
    }
    tab_to(driver, "route")
    press(driver, Keys.ENTER)
    wait_for_text(driver, f"Decided by {USER}: priority-billing")

    driver.get(f"{base}/console/")
    wait_for_text(driver, "1 record;")  # the decided one is gone from the default view
    driver.get(f"{base}/console/overview")
    wait_for_text(driver, "Decided by")
    assert driver.find_elements(By.CSS_SELECTOR, "svg.chart")
    driver.save_screenshot(str(shots / "console-overview.png"))


async def test_sign_in_filter_and_decide_with_the_keyboard_then_find_the_events_on_kafka(
    bootstrap: str, browser: WebDriver, tmp_path: Path
) -> None:
    async with console_router(bootstrap) as setup:
        publish_triage(setup)
        reader = setup.console.reader
        await asyncio.wait_for(reader.wait_until(lambda: len(reader.inbox) >= 2), 20)
        shots = screenshots_dir(tmp_path)
        await asyncio.to_thread(browse, browser, setup.base, shots)
        assert all(
            (shots / f"console-{page}.png").stat().st_size > 0 for page in ("inbox", "record", "overview")
        )

        queue_topic = setup.settings.queue_topic_prefix + "priority-billing"
        routed = await asyncio.to_thread(consume_until, setup.bootstrap, [queue_topic], 1, 20.0)
        assert len(routed) == 1 and routed[0].key == b"T-0011"
        value = orjson.loads(routed[0].value)
        assert (value["model_used"], value["tiers_tried"], value["queue"]) == (
            f"human:{USER}",
            ["human"],
            "priority-billing",
        )
        corrections = await asyncio.to_thread(
            consume_until, setup.bootstrap, [setup.settings.corrections_topic], 1, 20.0
        )
        correction = orjson.loads(corrections[0].value)
        assert (correction["source"], correction["actor"], correction["ticket_id"]) == (
            "triage",
            USER,
            "T-0011",
        )
        assert correction["labels"]["team"] == "billing"


GUESS = Classification(
    axes={
        "team": AxisPrediction(label="billing", confidence=0.93),
        "ticket_type": AxisPrediction(label="account_question", confidence=0.41),
        "urgency": AxisPrediction(label="normal", confidence=0.52),
        "sentiment": AxisPrediction(label="frustrated", confidence=0.66),
    }
)


def publish_triage(setup: Setup) -> None:
    unsure = triage(11, ErrorKind.LOW_CONFIDENCE).model_copy(update={"partial_classification": GUESS})
    records = [unsure, triage(12, ErrorKind.LLM_UNAVAILABLE)]
    produce(
        setup.bootstrap,
        setup.settings.triage_topic,
        [(r.ticket_id.encode(), encode(r)) for r in records if r.ticket_id],
    )
