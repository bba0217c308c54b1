"""Every job on a fake backend (tests/fake_backend.py: a byte tokenizer and log-probabilities
from a table), through the command line: the jobs need nothing beyond the LM protocol.
The numbers they store are the table's, and a rerun computes nothing again."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
from pathlib import Path

import pytest

from helpers import ALPACA_REF, CHNSENTICORP, DATA, MMLU, run_cli

FAKE = str(Path(__file__).resolve().parents[1] / "fake_backend.py")
SPEC = "fake:table,seed=3"


@pytest.fixture(scope="module")
def fake():
    """The backend as the jobs see it (the same module the CLI loads with --plugins)."""
    from lmboard.models.registry import load_model, load_plugin_paths
    from lmboard.models.spec import parse_model_spec

    load_plugin_paths([Path(FAKE)])
    lm = load_model(parse_model_spec(SPEC))
    spec = importlib.util.find_spec(type(lm).__module__)
    assert spec is not None and Path(spec.origin).resolve() == Path(FAKE).resolve()
    return lm


def argmax(xs):
    return max(range(len(xs)), key=xs.__getitem__)


def test_mmlu_exam_scores_the_tables_letter_logits(fake, tmp_path):
    from lmboard.tasks.exam import ExamSettings
    from lmboard.tasks.exam_run import build_prompts, load_questions
    from lmboard.tasks.mmlu import MMLU as MMLUTask

    args = ["eval", SPEC, "--plugins", FAKE, "--task", "mmlu", "--data", str(MMLU), "--subjects", "anatomy,astronomy",
            "--limit", "10", "--shots", "2", "--letter-token", "bare", "--out", str(tmp_path / "o"), "--db", str(tmp_path / "db")]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    samples = [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    # bytes: " A" is two tokens (its space first), so the letter is scored bare
    task, settings = MMLUTask(), ExamSettings("mmlu", MMLU, ("anatomy", "astronomy"), 10, 2, "bare")
    prompts, ids = build_prompts(task, fake, settings, *load_questions(task, settings))
    letters = [fake.encode(c)[-1] for c in "ABCD"]
    assert len(samples) == len(prompts) == 20
    fake_table = fake_table_of(fake)
    for s, p, i in zip(samples, prompts, ids, strict=True):
        assert (s["subject"], s["index"]) == (p.question.subject, p.question.index)
        assert s["logits"] == [fake_table(i, t, 3) for t in letters]
        assert s["pred"] == "ABCD"[argmax(s["logits"])] and s["correct"] == (s["pred"] == s["gold"])
    acc = json.loads(next((tmp_path / "o").glob("accuracies_*.json")).read_text())
    assert acc["provenance"]["runtime"] == "fake-table"
    assert acc["weighted_accuracy"] == pytest.approx(sum(s["correct"] for s in samples) / 20)
    again = run_cli(*args)  # stored: resumed, nothing scored again, the same files
    assert again.returncode == 0 and "resuming run" in again.stderr
    assert ": 20 of 20 stored: nothing left to compute" in again.stderr
    assert [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()] == samples


def test_classification_by_label_loglik(fake, tmp_path):
    r = run_cli("eval", SPEC, "--plugins", FAKE, "--task", "classify", "--data", str(CHNSENTICORP), "--text-column",
                "review", "--labels", "0=负面,1=正面", "--split", "0.8", "--test-size", "12", "--shots", "1",
                "--out", str(tmp_path / "o"), "--db", str(tmp_path / "db"))
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "o" / "classify.json").read_text())
    assert res["n"] == 12 and res["provenance"]["runtime"] == "fake-table"
    from lmboard.tasks import classify

    s = classify.ClassifySettings({"0": "负面", "1": "正面"}, shots=1)
    examples, _ = classify.load_examples(CHNSENTICORP, "review", "label", s.labels)
    train, test = classify.split(examples, 0.8, 123)
    shots = classify.pick_shots(train, s)
    samples = [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    for e, sample in zip(test[:12], samples, strict=True):
        prompt = classify.render(s, shots, e.text)
        want = [fake.logprobs(*fake.encode_pair(prompt, s.sep + name))[0] for name in ("负面", "正面")]
        assert sample["line"] == e.line and sample["scores"] == pytest.approx(want, abs=1e-9)
        assert sample["pred"] == ("负面", "正面")[argmax(want)]


def test_shopbench_multiple_choice_by_loglik_and_generation(fake, tmp_path):
    r = run_cli("eval", SPEC, "--plugins", FAKE, "--task", "shopbench", "--data", str(DATA / "shopbench" /
                "development.json"), "--tasks", "task2,task3,task11", "--mc-by", "loglik",
                "--out", str(tmp_path / "o"), "--db", str(tmp_path / "db"))
    assert r.returncode == 0, r.stderr
    scores = json.loads((tmp_path / "o" / "scores.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    mc = [x for x in rows if x["type"] == "multiple-choice"]
    assert mc and {x["by"] for x in mc} == {"loglik"} and {x["by"] for x in rows if x not in mc} == {"generate"}
    for x in mc:
        assert x["response"] == x["options"][argmax(x["loglik"])]
        assert all(math.isfinite(v) and v < 0 for v in x["loglik"])
    assert scores["provenance"]["runtime"] == "fake-table" and 0 <= scores["overall"] <= 1


def test_a_local_judge_reads_label_logits_from_score(fake, tmp_path):
    from lmboard.judge import prompts
    from lmboard.judge.judges import Comparison, Judge, JudgeSettings
    from lmboard.store import Store

    ref = json.loads(ALPACA_REF.read_text())[:4]
    outputs = [{"instruction": e["instruction"], "output": e["output"][::-1][:200], "generator": "backwards",
                "dataset": e["dataset"]} for e in ref]
    (tmp_path / "out.json").write_text(json.dumps(outputs))
    (tmp_path / "ref.json").write_text(json.dumps([{**e, "output": e["output"][:200]} for e in ref]))
    r = run_cli("judge", "--outputs", str(tmp_path / "out.json"), "--reference", str(tmp_path / "ref.json"),
                "--judge", SPEC, "--plugins", FAKE, "--leaderboard", str(tmp_path / "board.csv"),
                "--db", str(tmp_path / "db"))
    assert r.returncode == 0, r.stderr
    store = Store(tmp_path / "db")
    (run,) = store.runs("judge")
    judged = [d for _, d in sorted(store.samples(run["id"]))]
    judge = Judge(fake, JudgeSettings(fake.spec), store)
    for d, o in zip(judged, outputs, strict=True):
        c = Comparison("backwards", o["instruction"], o["output"], d["reference"])
        first = judge.jobs([c])[0][1]
        ids = fake.encode(fake.render_chat(judge._messages(c, first, "en")))
        lm_, lM = (fake_table_of(fake)(ids, fake.encode(x)[0], 3) for x in prompts.LABELS)
        p_second = 1 / (1 + math.exp(lm_ - lM))
        assert d["preference"] == pytest.approx(1 + ((1 - p_second) if first else p_second))
    assert "backwards" in (tmp_path / "board.csv").read_text()


def fake_table_of(lm):
    return importlib.import_module(type(lm).__module__).table
