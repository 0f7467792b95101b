"""A real browser for the web page's tests: Debian's ``chromium`` driven by selenium through
Debian's ``chromedriver`` (named explicitly, so selenium never downloads a driver), headless.

The gateway under test runs on the test's event loop; selenium's calls block, so tests run each
browser step in a worker thread (``await step(fn)``) and the gateway keeps answering meanwhile.
Every wait is selenium's explicit wait on page state (``WebDriverWait``), never a sleep.

Also used by ``tests/e2e/test_webpage_schedule_ops.py``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any, Callable, TypeVar

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
#: The viewer's time zone in the tests: not the machine's, so "the viewer's zone" is really tested.
VIEWER_ZONE = "America/New_York"
WAIT_SECONDS = 60  # a generous bound on a page-state wait (2 shared cores); never a synchronisation sleep
T = TypeVar("T")

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - the test extra installs it
    webdriver = None  # type: ignore[assignment]


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if webdriver is None:
        return "selenium is not installed: pip install -e '.[test]'"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found: apt-get install -y chromium chromium-driver (.ci/run installs it)"
    return None


def chrome(download_dir: Path, width: int = 1280, height: int = 900) -> "WebDriver":
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-extensions", "--no-first-run", "--disable-background-networking",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(download_dir),
        "download.prompt_for_download": False,
    })
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(WAIT_SECONDS)
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": VIEWER_ZONE})
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    driver.download_dir = download_dir  # where the page's downloads land
    return driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One headless chromium for a module's tests (starting one costs seconds of CPU)."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    driver = chrome(tmp_path_factory.mktemp("downloads"))
    try:
        yield driver
    finally:
        driver.quit()


async def step(fn: Callable[..., T], *args: Any) -> T:
    """Run one blocking browser step off the event loop the gateway serves on."""
    return await asyncio.to_thread(fn, *args)


def wait(driver: "WebDriver", condition: Callable[["WebDriver"], T], message: str) -> T:
    """Until ``condition`` is truthy; elements replaced while it looks (the page redraws) count as not yet."""
    ignored = (StaleElementReferenceException, NoSuchElementException)
    return WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1, ignored_exceptions=ignored).until(condition, message)


def css(driver: "WebDriver", selector: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, selector)


def texts(driver: "WebDriver", selector: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]


def loaded(driver: "WebDriver", page: str) -> None:
    """Wait until the page says it has drawn its data (``body[data-loaded]``, set by app.js)."""
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == page,
         f"the {page} page to load")


def sign_in(driver: "WebDriver", url: str, token: str) -> None:
    """Open ``url``, type the token into the sign-in form the page shows."""
    driver.get(url)
    field = wait(driver, lambda d: d.find_element(By.ID, "token") if d.find_element(By.ID, "token").is_displayed()
                 else None, "the sign-in form")
    field.send_keys(token)
    css(driver, "#sign-in button[type=submit]").click()


def fetch(driver: "WebDriver", method: str, path: str) -> dict[str, Any]:
    """A request from the page, with the token the page holds: ``{"status", "body"}``."""
    return driver.execute_async_script(
        """
        const [method, path, done] = arguments;
        const token = sessionStorage.getItem("fabric-task-token");
        fetch(path, {method, headers: token ? {Authorization: "Bearer " + token} : {}})
          .then(async (r) => done({status: r.status, body: await r.json()}))
          .catch((e) => done({status: 0, body: String(e)}));
        """,
        method, path,
    )
