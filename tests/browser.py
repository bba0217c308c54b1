"""A real headless Chromium (Debian's chromium and chromedriver) driven by Selenium, with
the console and every network request recorded. `make test` installs the browser when
it is absent; under CI a missing browser fails the tests instead of skipping them."""

from __future__ import annotations

import json
import os
import shutil

import pytest


def chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        msg = "Chromium and chromedriver are needed (make test installs them: apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
              "--allow-file-access-from-files"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def need_cjk_font() -> None:
    """Chinese text on the page needs a CJK font (Debian's fonts-noto-cjk), or it is drawn
    as empty boxes: under CI its absence fails the test."""
    import subprocess

    fonts = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True).stdout if shutil.which("fc-list") else ""
    if not fonts.strip():
        msg = "no CJK font (make test installs fonts-noto-cjk)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
