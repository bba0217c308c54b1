"""CMMLU and C-Eval prompts and layouts (C-Eval on a fixture in its layout, scored by a tiny model)."""

import csv
import json

import pandas as pd
import pytest

from helpers import CMMLU as CM
from lmboard.store import Store
from lmboard.tasks.ceval import CEval
from lmboard.tasks.cmmlu import CMMLU
from lmboard.tasks.exam import ExamSettings
from lmboard.tasks.exam_run import run_exam


def cmmlu_reference_prompt(dev_df, test_df, i, k, subject_zh):
    """CMMLU's rule, written out: header, k dev examples in order, then the question."""
    prompt = f"以下是关于{subject_zh}的单项选择题，请直接给出正确答案的选项。\n\n"
    for j in range(k):
        row = dev_df.iloc[j]
        prompt += "题目：" + row["Question"]
        for c in "ABCD":
            prompt += f"\n{c}. {row[c]}"
        prompt += "\n答案是：" + row["Answer"] + "\n\n"
    row = test_df.iloc[i]
    prompt += "题目：" + row["Question"]
    for c in "ABCD":
        prompt += f"\n{c}. {row[c]}"
    return prompt + "\n答案是："


def test_cmmlu_prompt_equals_the_official_rule():
    task = CMMLU()
    assert "anatomy" in task.subjects(CM)
    test = task.load_split(CM, "anatomy", "test")
    pool, source = task.shot_pool(CM, "anatomy", test)
    assert source == "dev"
    dev_df = pd.read_csv(CM / "dev" / "anatomy.csv", keep_default_na=False, dtype=str)
    test_df = pd.read_csv(CM / "test" / "anatomy.csv", keep_default_na=False, dtype=str)
    text, _ = task.render(test[7], task.shots_for(test[7], pool, source, 5))
    assert text == cmmlu_reference_prompt(dev_df, test_df, 7, 5, "解剖学")
    assert text.startswith("以下是关于解剖学的单项选择题")


def test_cmmlu_drops_the_longest_example_first():
    task = CMMLU()
    task.subjects(CM)
    test = task.load_split(CM, "anatomy", "test")
    shots = task.load_split(CM, "anatomy", "dev")[:5]
    longest = max(shots, key=lambda s: len(task.example(s, True)))
    full = len(task.render(test[0], shots)[0])
    p = task.build_prompt(test[0], shots, len, full - 1)
    assert p.shots == 4 and task.example(longest, True) not in p.text


@pytest.fixture
def ceval_dir(tmp_path):
    """A fixture in C-Eval's layout (no C-Eval data is reachable here), built from CMMLU rows."""
    d = tmp_path / "ceval"
    mapping = {"high_school_physics": ["High School Physics", "高中物理", "STEM"],
               "chinese_history": ["Chinese History", "中国历史", "Humanities"]}
    for split in ("val", "dev", "test"):
        (d / split).mkdir(parents=True)
    for s in mapping:
        rows = list(csv.reader(open(CM / "test" / f"{s}.csv", encoding="utf-8")))[1:]
        for split, part in (("dev", rows[:5]), ("val", rows[5:15]), ("test", rows[15:20])):
            with open(d / split / f"{s}_{split}.csv", "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["id", "question", "A", "B", "C", "D", "answer", "explanation"])
                for i, r in enumerate(part):
                    w.writerow([i, r[1], *r[2:6], "" if split == "test" else r[6], ""])
    (d / "subject_mapping.json").write_text(json.dumps(mapping, ensure_ascii=False), encoding="utf-8")
    return d


def test_ceval_layout_prompt_and_scores(ceval_dir, tmp_path, tiny_sp):
    task = CEval()
    assert task.subjects(ceval_dir) == ["chinese_history", "high_school_physics"]
    val = task.load_split(ceval_dir, "high_school_physics", "val")
    dev = task.load_split(ceval_dir, "high_school_physics", "dev")
    text, _ = task.render(val[0], dev[:1])
    assert text.startswith("以下是中国关于高中物理考试的单项选择题，请选出其中的正确答案。\n\n")
    assert f"\n答案：{dev[0].answer}\n\n" in text and text.endswith("\n答案：")
    res = run_exam(task, tiny_sp, ExamSettings("ceval", ceval_dir, (), None, 2), Store(tmp_path / "db"))
    assert len(res.samples) == 20 and res.provenance["fewshot_source"] == "dev"
    from lmboard.report.exam import aggregate

    acc = aggregate(res, task, ceval_dir)
    assert set(acc["categories"]) == {"STEM", "Humanities"}


def test_ceval_by_generation_on_the_fake_backend(ceval_dir, tmp_path):
    """C-Eval in generation mode through the command line: the fake backend answers digits,
    so no answer has a letter: every one is counted as such, shown, and wrong."""
    from pathlib import Path

    from helpers import run_cli

    fake = str(Path(__file__).resolve().parents[1] / "fake_backend.py")
    r = run_cli("eval", "fake:table", "--plugins", fake, "--task", "ceval", "--data", str(ceval_dir), "--by",
                "generate", "--shots", "1", "--db", str(tmp_path / "db"), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "no extractable letter: 100.0% of 20" in r.stdout and "no letter in:" in r.stdout
    rows = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 20 and all(x["extraction"] == "none" and not x["correct"] and x["response"] for x in rows)
