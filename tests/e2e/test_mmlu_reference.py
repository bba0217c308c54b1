"""MMLU scoring against the seed's reference loop, on SmolLM2."""

import numpy as np
import pandas as pd
import pytest

from helpers import MMLU
from lmboard.store import Store
from lmboard.tasks.exam import ExamSettings
from lmboard.tasks.exam_run import run_exam, sample_key
from lmboard.tasks.mmlu import MMLU as MMLUTask
from seed_mmlu import choices, make_dev_layout, seed_loop


@pytest.fixture(scope="module")
def dev_layout(tmp_path_factory):
    return make_dev_layout(tmp_path_factory.mktemp("mmlu_dev"))


def _run(lm, data, shots, letter_token, tmp_path, **runtime):
    settings = ExamSettings("mmlu", data, ("anatomy",), 12, shots, letter_token, False)
    return run_exam(MMLUTask(), lm.with_runtime(**runtime) if runtime else lm, settings, Store(tmp_path / "db.sqlite"))


@pytest.mark.parametrize("shots", [0, 5])
@pytest.mark.parametrize("letter_token", ["bare", "spaced"])
def test_matches_the_seed_reference_loop(smollm2_fp32, dev_layout, tmp_path, shots, letter_token):
    tok = smollm2_fp32.tokenizer
    if letter_token == "bare":
        letter_ids = [tok(c).input_ids[-1] for c in choices]  # the seed's choice
    else:
        letter_ids = [tok("Answer: " + c).input_ids[-1] for c in choices]  # " A" after the cue
    dev_df = pd.read_csv(dev_layout / "dev" / "anatomy_dev.csv", header=None)
    test_df = pd.read_csv(dev_layout / "test" / "anatomy_test.csv", header=None)
    ref = seed_loop(smollm2_fp32.model, tok, dev_df, test_df, "anatomy", shots, letter_ids)
    res = _run(smollm2_fp32, dev_layout, shots, letter_token, tmp_path)
    assert res.provenance["letter_token_ids"] == letter_ids
    ours = np.array([res.samples[sample_key(q)]["probs"] for q in res.questions["anatomy"]])
    assert ours.shape == ref.shape == (12, 4)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert [res.samples[sample_key(q)]["pred"] for q in res.questions["anatomy"]] == [
        choices[int(np.argmax(r))] for r in ref
    ]
    assert res.provenance["shots_used"] == {"min": shots, "max": shots}
    assert res.provenance["fewshot_source"] == "dev"


def test_letter_tokens_on_smollm2_and_sentencepiece(smollm2_fp32, tiny_sp):
    smollm2_tokenizer = smollm2_fp32.tokenizer
    task = MMLUTask()
    cue = "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
    for lm in (smollm2_fp32, tiny_sp):
        tok = lm.tokenizer
        spaced = task.letter_ids(lm, cue, "spaced")
        bare = task.letter_ids(lm, cue, "bare")
        assert bare == [tok(c).input_ids[-1] for c in choices]
        for c, i in zip(choices, spaced, strict=True):
            # the spaced token is what the tokenizer produces after the cue in a real example
            full = tok(cue + " " + c, add_special_tokens=False).input_ids
            assert full[-1] == i
    # BPE (SmolLM2): a space before the letter is another token. SentencePiece adds a
    # dummy prefix to every text, so tokenizer("A") is already "▁A": both choices agree.
    assert task.letter_ids(smollm2_fp32, cue, "spaced") != task.letter_ids(smollm2_fp32, cue, "bare")
    assert task.letter_ids(tiny_sp, cue, "spaced") == task.letter_ids(tiny_sp, cue, "bare")
    sp_piece = tiny_sp.tokenizer.convert_ids_to_tokens(task.letter_ids(tiny_sp, cue, "spaced"))
    assert sp_piece == ["▁A", "▁B", "▁C", "▁D"]
    assert smollm2_tokenizer.convert_ids_to_tokens(task.letter_ids(smollm2_fp32, cue, "spaced")) == [
        "ĠA", "ĠB", "ĠC", "ĠD"
    ]


def test_chat_form_renders_through_the_template(smollm2_fp32, tmp_path):
    settings = ExamSettings("mmlu", MMLU, ("anatomy",), 3, 2, "spaced", True)
    res = run_exam(MMLUTask(), smollm2_fp32, settings, Store(tmp_path / "db"))
    assert res.provenance["prompt_format"] == "chat"
    # the letter opens the assistant turn: no space before it
    assert res.provenance["letter_tokens"] == ["A", "B", "C", "D"]
    from lmboard.tasks.exam_run import chat_render

    task = MMLUTask()
    test = task.load_split(MMLU, "anatomy", "test")
    text, prefix = chat_render(task, smollm2_fp32, test[2], task.shots_for(test[2], test, "test", 2))
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert text.count("<|im_start|>user") == 3 and text.count("<|im_start|>assistant") == 3
    assert text.startswith(prefix) and "The following are multiple choice questions" in prefix
    assert len(res.samples) == 3
