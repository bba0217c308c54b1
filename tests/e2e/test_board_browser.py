"""The HTML board in a real headless Chromium: it loads with no console error and no
request beyond its own file, sorts, filters, opens a run, shows model text as text."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from board_store import XSS, sample_store
from browser import chromium, console_errors, requested_urls
from helpers import run_cli as lmboard


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    d = tmp_path_factory.mktemp("board")
    sample_store(d / "db")
    r = lmboard("board", "--db", str(d / "db"), "--out", str(d / "board.html"))
    assert r.returncode == 0, r.stderr
    driver = chromium()
    url = (d / "board.html").resolve().as_uri()
    t0 = time.perf_counter()
    driver.get(url)
    opened = time.perf_counter() - t0
    yield driver, url, d, opened
    driver.quit()


def _rows(driver):
    from selenium.webdriver.common.by import By

    return [tr.get_attribute("data-model") for tr in driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")]


def test_loads_with_no_console_error_and_requests_nothing_else(page):
    driver, url, d, opened = page
    assert len(_rows(driver)) == 4
    assert console_errors(driver) == []
    others = [u for u in requested_urls(driver) if u != url and not u.startswith(("data:", "blob:", "about:"))]
    assert others == []
    shot = Path(os.environ.get("LMBOARD_ARTIFACTS", d)) / "board.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}; page opened in {opened:.2f} s")


def test_clicking_a_header_sorts_and_the_filter_filters(page):
    from selenium.webdriver.common.by import By

    driver = page[0]
    head = next(th for th in driver.find_elements(By.CSS_SELECTOR, "#board thead tr:nth-child(2) th")
                if th.text.startswith("decode tok/s (batch 1)"))
    head.click()
    assert _rows(driver)[:2] == ["model-a · bfloat16", "model-b · float32"]  # 30 before 20 tok/s, missing last
    head = next(th for th in driver.find_elements(By.CSS_SELECTOR, "#board thead tr:nth-child(2) th")
                if th.text.startswith("decode tok/s (batch 1)"))
    head.click()
    assert _rows(driver)[:2] == ["model-b · float32", "model-a · bfloat16"]
    box = driver.find_element(By.ID, "filter")
    box.send_keys("model-c")
    assert _rows(driver) == ["model-c · bfloat16"]
    box.clear()
    box.send_keys(" ")  # input event; a space matches every row name here
    box.clear()


def test_drill_down_shows_model_text_as_text_and_runs_nothing(page):
    from selenium.webdriver.common.by import By

    driver = page[0]
    driver.execute_script("document.getElementById('filter').value=''; "
                          "document.getElementById('filter').dispatchEvent(new Event('input'))")
    row = next(tr for tr in driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")
               if tr.get_attribute("data-model") == "model-a · bfloat16")
    links = row.find_elements(By.TAG_NAME, "a")
    win = next(a for a in links if a.text == "62.5")
    win.click()
    drill = driver.find_element(By.ID, "drill")
    assert "Run judge-a" in drill.text
    text = drill.find_element(By.ID, "samples").text
    for x in XSS:
        assert x in text
    assert driver.execute_script("return window.__xss") is None
    assert driver.find_elements(By.CSS_SELECTOR, "#drill img, #drill b, #drill script") == []
    box = driver.find_element(By.ID, "sample-filter")
    box.send_keys("onerror")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#samples tr")) == 2  # header + the one match
    assert console_errors(driver) == []


def test_side_by_side_on_the_questions_both_answered(page):
    from selenium.webdriver.common.by import By

    driver = page[0]
    pair = driver.find_element(By.CSS_SELECTOR, "#compare tr.link")
    pair.click()
    drill = driver.find_element(By.ID, "drill")
    assert "Side by side" in drill.text and "20 in common" in drill.text
    head = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#samples tr:first-child th")]
    assert "A correct" in head and "B correct" in head
    assert len(driver.find_elements(By.CSS_SELECTOR, "#samples tr")) == 21
    assert console_errors(driver) == []
