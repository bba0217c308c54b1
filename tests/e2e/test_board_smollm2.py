"""A board built from a store holding real SmolLM2 runs (an exam in two dtypes, judged
generations, a speed run): its numbers are the runs' own result files' numbers, on the
terminal, in JSON and on the page in Chromium."""

from __future__ import annotations

import csv
import json

import pytest

from browser import chromium, console_errors, need_cjk_font
from helpers import ALPACA_REF, DATA, MMLU, run_cli, short_reference
from lmboard.io import read_csv_dicts
from lmboard.models.hf_load import choose_dtype

CSC = DATA / "chnsenticorp" / "ChnSentiCorp_htl_all.csv"
DEFAULT = choose_dtype("auto", "cpu")  # `smollm2` with no dtype: bfloat16 only where the CPU computes it natively
# The exam by two models, two rows of one column: SmolLM2 in float32 and in bfloat16; where
# bfloat16 is emulated (slow), the same weights in float32 from their unpacked folder instead.
EXAMS = {"float32": ("smollm2,dtype=float32", "smollm2 · float32"),
         "other": ("smollm2,dtype=bfloat16", "smollm2 · bfloat16") if DEFAULT == "bfloat16"
         else ("hf:{folder},dtype=float32,label=twin", "twin · float32")}


@pytest.fixture(scope="module")
def store(tmp_path_factory, smollm2_fp32):
    from servers import smollm2_folder

    d = tmp_path_factory.mktemp("board_real")
    db = ["--db", str(d / "db"), "--quiet"]
    for name, (spec, _) in EXAMS.items():
        r = run_cli("eval", spec.format(folder=smollm2_folder(smollm2_fp32)), "--data", str(MMLU), "--subjects", "anatomy,astronomy",
                    "--limit", "8", "--shots", "0", "--out", str(d / f"exam-{name}"), *db)
        assert r.returncode == 0, r.stderr
    r = run_cli("eval", "smollm2,dtype=float32", "--task", "classify", "--data", str(CSC), "--text-column", "review",
                "--labels", "0=负面,1=正面", "--split", "0.8", "--test-size", "8", "--out", str(d / "cls"), *db)
    assert r.returncode == 0, r.stderr
    prompts = d / "prompts.json"
    prompts.write_text(json.dumps(json.loads(ALPACA_REF.read_text())[:4]))
    r = run_cli("generate", "--models", "smollm2", "--prompts", str(prompts), "--out", str(d / "gen"),
                "--max-new-tokens", "16", *db)
    assert r.returncode == 0, r.stderr
    r = run_cli("judge", "--outputs", str(d / "gen" / "output.json"), "--reference", str(short_reference(d)),
                "--judge", "smollm2,dtype=float32", "--leaderboard", str(d / "lb.csv"), *db)
    assert r.returncode == 0, r.stderr
    r = run_cli("speed", "smollm2", "--prompt-tokens", "16", "--new-tokens", "4", "--batch-sizes", "1,2",
                "--warmup", "0", "--repeats", "1", "--out", str(d / "speed.json"), *db)
    assert r.returncode == 0, r.stderr
    return d


def test_board_numbers_are_the_runs_own(store):
    d = store
    r = run_cli("board", "--db", str(d / "db"), "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    cols = {c["key"]: c for c in doc["columns"]}
    cells = {(c["model"], cols[c["column"]]["group"], cols[c["column"]]["label"]): c for c in doc["cells"]}
    for name, (_, row_name) in EXAMS.items():
        acc = json.loads(next((d / f"exam-{name}").glob("accuracies_*.json")).read_text())
        cell = cells[(row_name, "MMLU 0-shot", "accuracy")]
        assert cell["value"] == pytest.approx(100 * acc["weighted_accuracy"]) and cell["n"] == 16
        assert cell["interval"].startswith("Wilson, 16 items (2 subjects")  # too few subjects to resample
        assert cell["low"] <= cell["value"] <= cell["high"]
    (row,) = list(csv.DictReader(open(d / "lb.csv")))
    judged = [c for k, c in cells.items() if k[0] == f"smollm2 · {DEFAULT}" and k[2] == "win rate"]
    assert len(judged) == 1 and judged[0]["value"] == pytest.approx(float(row["win_rate"]))
    speed = json.loads((d / "speed.json").read_text())
    b1 = next(x for x in speed["results"] if x["batch_size"] == 1)
    (tps,) = [c for k, c in cells.items() if k[0] == f"smollm2 · {DEFAULT}" and k[2] == "decode tok/s (batch 1)"]
    assert tps["value"] == pytest.approx(b1["decode_tokens_per_s"])
    (pair,) = [v for k, v in doc["comparisons"].items() if k.startswith("exam:")]
    assert pair[0]["n"] == 16
    cls = json.loads((d / "cls" / "classify.json").read_text())
    (acc,) = [c for k, c in cells.items() if k[1] == "ChnSentiCorp 0-shot" and k[2] == "accuracy"]
    assert acc["value"] == pytest.approx(100 * cls["accuracy"]) and acc["interval"] == "Wilson, 8 items"


def test_the_page_shows_the_same_numbers(store):
    from selenium.webdriver.common.by import By

    d = store
    need_cjk_font()
    r = run_cli("board", "--db", str(d / "db"), "--out", str(d / "board.html"))
    assert r.returncode == 0, r.stderr
    acc = json.loads(next((d / "exam-float32").glob("accuracies_*.json")).read_text())["weighted_accuracy"]
    driver = chromium()
    try:
        driver.get((d / "board.html").resolve().as_uri())
        row = next(tr for tr in driver.find_elements(By.CSS_SELECTOR, "#board tbody tr")
                   if tr.get_attribute("data-model") == "smollm2 · float32")
        link = next(a for a in row.find_elements(By.TAG_NAME, "a") if a.text == f"{acc * 100:.1f}")
        link.click()
        first = MMLU.joinpath("test", "anatomy_test.csv").read_text(encoding="utf-8").splitlines()[0]
        samples = driver.find_element(By.ID, "samples").text
        assert first.split(",")[0][:40] in samples  # the question, read from the run's data folder
        # the prompt as the model read it, rebuilt from the data and checked against the stored hash
        driver.find_element(By.CSS_SELECTOR, "#samples tr.sample").click()
        driver.find_element(By.CSS_SELECTOR, "#samples .prompt-button").click()
        prompt = driver.find_element(By.CSS_SELECTOR, "#samples pre.prompt").text
        assert prompt.startswith("The following are multiple choice questions") and prompt.rstrip().endswith("Answer:")
        # the classification run: its reviews (Chinese) from the data file, in a CJK font
        driver.execute_script("document.querySelector('button[data-view=classification]').click()")
        driver.find_element(By.CSS_SELECTOR, "#board tbody a").click()
        reviews = dict(read_csv_dicts(CSC))
        tested = [json.loads(x)["line"] for x in (d / "cls" / "samples.jsonl").read_text().splitlines()]
        shown = driver.find_element(By.ID, "samples").text
        assert len(tested) == 8 and all(reviews[n]["review"][:20] in shown for n in tested)
        driver.save_screenshot(str(d / "classify-drill.png"))
        assert console_errors(driver) == []
    finally:
        driver.quit()
