"""CMMLU on SmolLM2: the engine against a plain reference loop, and the CLI's categories."""

import json

import numpy as np
import torch

from helpers import CMMLU as CM
from helpers import run_cli
from lmboard.store import Store
from lmboard.tasks.cmmlu import CMMLU
from lmboard.tasks.exam import ExamSettings
from lmboard.tasks.exam_run import run_exam, sample_key

SUBJECTS = ("anatomy", "chinese_history", "high_school_physics")


def test_cmmlu_5shot_matches_a_plain_reference_loop(smollm2_fp32, tmp_path):
    tok, model = smollm2_fp32.tokenizer, smollm2_fp32.model
    settings = ExamSettings("cmmlu", CM, SUBJECTS, 3, 5)
    res = run_exam(CMMLU(), smollm2_fp32, settings, Store(tmp_path / "db"))
    letter_ids = res.provenance["letter_token_ids"]
    assert letter_ids == [tok("答案是：" + c).input_ids[-1] for c in "ABCD"]
    task = CMMLU()
    task.subjects(CM)
    for s in SUBJECTS:
        test = task.load_split(CM, s, "test")
        dev = task.load_split(CM, s, "dev")
        for q in test[:3]:
            text, _ = task.render(q, dev[:5])
            with torch.no_grad():
                logits = model(input_ids=tok(text, return_tensors="pt").input_ids).logits[0, -1]
            ref = torch.softmax(logits[letter_ids].float(), 0).numpy()
            got = res.samples[sample_key(q)]
            np.testing.assert_allclose(got["probs"], ref, atol=1e-4)
            assert got["pred"] == "ABCD"[int(ref.argmax())]


def test_cmmlu_cli_categories(tmp_path):
    out = tmp_path / "out"
    r = run_cli("eval", "smollm2", "--task", "cmmlu", "--data", str(CM), "--subjects", ",".join(SUBJECTS),
                "--limit", "6", "--shots", "1", "--out", str(out), "--db", str(tmp_path / "db"), "--quiet")
    assert r.returncode == 0, r.stderr
    acc = json.loads((out / "accuracies_smollm2.json").read_text())
    assert set(acc["categories"]) == {"STEM", "Humanities", "China specific"}
    assert acc["n_questions"] == 18


