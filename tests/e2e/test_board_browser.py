"""The HTML board in a real headless Chromium: it loads with no console error and no
request beyond its own file; it fits the window at 1366 and 800 pixels in every view
(the table scrolls inside its box, the model column stays); it sorts numbers as numbers,
filters, opens a run in a panel with its samples' text, compares pairs, and shows model
text as text."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from board_store import XSS, big_store, classify_run, sample_store
from browser import chromium, console_errors, requested_urls
from helpers import run_cli as lmboard

VIEWS = ("overview", "exams", "classification", "judged", "speed", "plots", "paired")


def _artifacts(d: Path) -> Path:
    out = Path(os.environ.get("LMBOARD_ARTIFACTS", d))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    d = tmp_path_factory.mktemp("board")
    s = sample_store(d / "db")
    data = d / "reviews" / "reviews.csv"
    data.parent.mkdir()
    lines = {n: f"第{n}条评论：房间很好" if n % 2 else f"review {n}: the room was dirty" for n in range(2, 5000)}
    data.write_text("label,review\n" + "".join(f"{n % 2},{lines[n + 1]}\n" for n in range(1, 4999)), encoding="utf-8")
    # keys that sort wrongly as strings: "445" after "4381"
    classify_run(s, "cls-a", "model-a", "bfloat16", data, {445: ("正面", "正面"), 4381: ("负面", "正面"), 12: ("负面", "负面"),
                                                             90: ("正面", "负面")})
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


def _view(driver, name):
    driver.execute_script(f"document.querySelector('button[data-view={name}]').click()")


def _overflow(driver) -> int:
    return driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")


def test_loads_with_no_console_error_and_requests_nothing_else(page):
    driver, url, d, opened = page
    assert len(_rows(driver)) == 4
    assert console_errors(driver) == []
    others = [u for u in requested_urls(driver) if u != url and not u.startswith(("data:", "blob:", "about:"))]
    assert others == []
    print(f"page opened in {opened:.2f} s")


def test_fits_the_window_in_every_view_at_1366_and_800(page):
    driver, _, d, _ = page
    try:
        for width in (1366, 800):
            driver.set_window_size(width, 900)
            for v in VIEWS:
                _view(driver, v)
                assert _overflow(driver) <= 0, (width, v)
                driver.save_screenshot(str(_artifacts(d) / f"board-{v}-{width}.png"))
            _view(driver, "overview")
            driver.execute_script("document.querySelector('#board tbody a').click()")
            assert _overflow(driver) <= 0 and driver.execute_script("return !document.getElementById('drill').hidden")
            driver.save_screenshot(str(_artifacts(d) / f"board-drill-{width}.png"))
            driver.execute_script("document.querySelector('#drill .close').click()")
    finally:
        driver.set_window_size(1400, 1000)
    assert console_errors(driver) == []


def test_clicking_a_header_sorts_and_the_filter_filters(page):
    from selenium.webdriver.common.by import By

    driver = page[0]
    _view(driver, "overview")

    def head():
        return next(th for th in driver.find_elements(By.CSS_SELECTOR, "#board thead tr:nth-child(2) th")
                    if th.text.startswith("decode tok/s (batch 1)"))

    head().click()
    assert _rows(driver)[:2] == ["model-a · bfloat16", "model-b · float32"]  # 30 before 20 tok/s, missing last
    head().click()
    assert _rows(driver)[:2] == ["model-b · float32", "model-a · bfloat16"]
    box = driver.find_element(By.ID, "filter")
    box.send_keys("model-c")
    assert _rows(driver) == ["model-c · bfloat16"]
    box.clear()
    box.send_keys(" ")  # input event; a space matches every row name here
    box.clear()


def _open(driver, view, model, text):
    from selenium.webdriver.common.by import By

    _view(driver, view)
    driver.execute_script("document.getElementById('filter').value=''; "
                          "document.getElementById('filter').dispatchEvent(new Event('input'))")
    row = next(tr for tr in driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")
               if tr.get_attribute("data-model") == model)
    next(a for a in row.find_elements(By.TAG_NAME, "a") if a.text == text).click()
    return driver.find_element(By.ID, "drill")


def test_drill_down_shows_model_text_as_text_and_runs_nothing(page):
    from selenium.webdriver.common.by import By

    driver = page[0]
    drill = _open(driver, "judged", "model-a · bfloat16", "62.5")
    assert "judge-a" in drill.text and "Settings" in drill.text
    # the panel is beside the table: both on screen
    assert drill.rect["x"] > 300 and driver.find_element(By.ID, "board").is_displayed()
    text = drill.find_element(By.ID, "samples").text
    for x in XSS:
        assert x in text
    assert driver.execute_script("return window.__xss") is None
    assert driver.find_elements(By.CSS_SELECTOR, "#drill img, #drill b, #drill script") == []
    box = driver.find_element(By.ID, "sample-filter")
    box.send_keys("onerror")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#samples tr")) == 2  # header + the one match
    assert console_errors(driver) == []


def test_classification_samples_show_the_text_and_sort_as_numbers(page):
    from selenium.webdriver.common.by import By

    driver = page[0]
    drill = _open(driver, "classification", "model-a · bfloat16", "50.0")
    assert "reviews 0-shot" in drill.text  # the benchmark's name, the column's settings as a list
    body = drill.find_element(By.ID, "samples").text
    assert "第445条评论：房间很好" in body and "review 90: the room was dirty" in body
    key = next(th for th in drill.find_elements(By.CSS_SELECTOR, "#samples th") if th.text == "key")
    key.click()
    keys = [tr.find_element(By.TAG_NAME, "td").text for tr in drill.find_elements(By.CSS_SELECTOR, "#samples tr.sample")]
    assert keys == ["12", "90", "445", "4381"]
    drill.find_element(By.ID, "wrong-only").click()
    keys = [tr.find_element(By.TAG_NAME, "td").text for tr in drill.find_elements(By.CSS_SELECTOR, "#samples tr.sample")]
    assert keys == ["90", "4381"]
    # a row opens to every field
    drill.find_element(By.CSS_SELECTOR, "#samples tr.sample").click()
    assert "scores" in drill.find_element(By.CSS_SELECTOR, "#samples .detail").text
    assert console_errors(driver) == []


def test_exam_samples_filter_by_subject(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = page[0]
    drill = _open(driver, "exams", "model-b · float32", "40.0")
    Select(drill.find_element(By.ID, "subject-filter")).select_by_value("astronomy")
    subjects = {tr.find_elements(By.TAG_NAME, "td")[1].text for tr in drill.find_elements(By.CSS_SELECTOR, "#samples tr.sample")}
    assert subjects == {"astronomy"}


def test_paired_view_and_side_by_side(page):
    from selenium.webdriver.common.by import By

    driver = page[0]
    _view(driver, "paired")
    assert driver.find_element(By.ID, "plot-pairs").is_displayed()
    pair = driver.find_element(By.CSS_SELECTOR, "#compare tr.link")
    assert "20" in pair.text and "30.0" in pair.text  # shared questions, difference in points
    pair.click()
    drill = driver.find_element(By.ID, "drill")
    assert "Side by side" in drill.text and "20 in common" in drill.text
    head = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#samples tr:first-child th")]
    assert "A correct" in head and "B correct" in head
    assert len(driver.find_elements(By.CSS_SELECTOR, "#samples tr.sample")) == 20
    assert console_errors(driver) == []


def test_plots_say_when_they_need_two_models(page):
    from selenium.webdriver.common.by import By

    driver = page[0]
    _view(driver, "plots")
    assert driver.find_element(By.ID, "plot-speed").is_displayed()  # MMLU 5-shot: two timed models
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "plot-benchmark")).select_by_visible_text(
        next(o.text for o in driver.find_elements(By.CSS_SELECTOR, "#plot-benchmark option") if o.text.startswith("MMLU 0-shot")))
    assert "a plot needs two" in driver.find_element(By.ID, "plots").text
    assert driver.find_elements(By.ID, "plot-speed") == []


def test_thirty_models_and_twelve_columns_fit(tmp_path):
    from selenium.webdriver.common.by import By

    big_store(tmp_path / "db")
    r = lmboard("board", "--db", str(tmp_path / "db"), "--out", str(tmp_path / "big.html"))
    assert r.returncode == 0, r.stderr
    driver = chromium()
    try:
        driver.get((tmp_path / "big.html").resolve().as_uri())
        _view(driver, "exams")
        driver.execute_script("for (const b of document.querySelectorAll('button.fold')) if (b.textContent.startsWith('+')) b.click()")
        assert driver.execute_script("return B.columns.length") >= 12
        assert len(driver.find_elements(By.CSS_SELECTOR, "#board thead tr:nth-child(2) th")) == 1 + 2 + 6
        for width in (1366, 800):
            driver.set_window_size(width, 900)
            for v in ("overview", "exams", "plots", "paired"):
                _view(driver, v)
                assert _overflow(driver) <= 0, (width, v)
        _view(driver, "exams")
        assert len(_rows(driver)) == 30
        # the model column stays while the table scrolls sideways
        driver.execute_script("document.querySelector('.scroll').scrollLeft = 5000")
        box = driver.find_element(By.CSS_SELECTOR, ".scroll").rect
        name = driver.find_element(By.CSS_SELECTOR, "#board tbody td.model").rect
        assert abs(name["x"] - box["x"]) <= 2
        _view(driver, "paired")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#pairs tr.link")) == 30 * 29 // 2
        driver.save_screenshot(str(_artifacts(tmp_path) / "board-30-models.png"))
        assert console_errors(driver) == []
    finally:
        driver.quit()


def test_a_board_with_no_pairs_says_what_would_make_one(tmp_path):
    from selenium.webdriver.common.by import By

    from board_store import exam_run
    from lmboard.store import Store

    exam_run(Store(tmp_path / "db"), "one", "alone", "float32", {"anatomy": [True, False, True]})
    assert lmboard("board", "--db", str(tmp_path / "db"), "--out", str(tmp_path / "b.html")).returncode == 0
    driver = chromium()
    try:
        driver.get((tmp_path / "b.html").resolve().as_uri())
        _view(driver, "paired")
        assert "No paired comparison on this board: one needs two models" in driver.find_element(By.ID, "compare").text
        assert console_errors(driver) == []
    finally:
        driver.quit()
