"""MMLU prompts, few-shot rules and scoring against the seed's reference loop."""

import csv
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import MMLU
from lmboard.config import EngineSettings, ExamSettings
from lmboard.store import Store
from lmboard.tasks.exam_run import run_exam, sample_key
from lmboard.tasks.mmlu import MMLU as MMLUTask
from lmboard.tasks.mmlu import format_subject

# ---- the seed's code (seed 000), verbatim apart from formatting
choices = ["A", "B", "C", "D"]


def seed_format_subject(subject):
    l = subject.split("_")  # noqa: E741
    s = ""
    for entry in l:
        s += " " + entry
    return s


def seed_format_example(df, idx, include_answer=True):
    prompt = df.iloc[idx, 0]
    k = df.shape[1] - 2
    for j in range(k):
        prompt += "\n{}. {}".format(choices[j], df.iloc[idx, j + 1])
    prompt += "\nAnswer:"
    if include_answer:
        prompt += " {}\n\n".format(df.iloc[idx, k + 1])
    return prompt


def seed_gen_prompt(train_df, subject, k=-1):
    prompt = "The following are multiple choice questions (with answers) about {}.\n\n".format(
        seed_format_subject(subject)
    )
    if k == -1:
        k = train_df.shape[0]
    for i in range(k):
        prompt += seed_format_example(train_df, i)
    return prompt


def seed_loop(model, tokenizer, dev_df, test_df, subject, k, letter_ids):
    """The seed's eval(): one forward per question, softmax over the 4 letter logits."""
    out = []
    for i in range(test_df.shape[0]):
        prompt = seed_gen_prompt(dev_df, subject, k) + seed_format_example(test_df, i, include_answer=False)
        input_ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(input_ids=input_ids).logits[0, -1]
        probs = torch.nn.functional.softmax(torch.tensor([logits[j] for j in letter_ids]).float(), dim=0).numpy()
        out.append(probs)
    return np.array(out)


@pytest.fixture(scope="module")
def dev_layout(tmp_path_factory):
    """anatomy with a dev split: rows 0-4 of the real test file as dev, rows 5-24 as test."""
    d = tmp_path_factory.mktemp("mmlu_dev")
    rows = list(csv.reader(open(MMLU / "test" / "anatomy_test.csv", newline="", encoding="utf-8")))
    for split, part in (("dev", rows[:5]), ("test", rows[5:25])):
        (d / split).mkdir()
        with open(d / split / f"anatomy_{split}.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(part)
    shutil.copy(MMLU / "categories.json", d / "categories.json")
    return d


def test_format_subject_keeps_the_original_double_space():
    assert format_subject("abstract_algebra") == seed_format_subject("abstract_algebra") == " abstract algebra"
    assert "about  abstract algebra." in MMLUTask().header("abstract_algebra")


def test_prompts_equal_the_seed_code(dev_layout):
    task = MMLUTask()
    dev_df = pd.read_csv(dev_layout / "dev" / "anatomy_dev.csv", header=None)
    test_df = pd.read_csv(dev_layout / "test" / "anatomy_test.csv", header=None)
    test = task.load_split(dev_layout, "anatomy", "test")
    pool, source = task.shot_pool(dev_layout, "anatomy", test)
    assert source == "dev"
    for k in (0, 1, 5):
        for i in range(len(test)):
            text, prefix = task.render(test[i], task.shots_for(test[i], pool, source, k))
            assert text == seed_gen_prompt(dev_df, "anatomy", k) + seed_format_example(test_df, i, False)
            assert prefix == seed_gen_prompt(dev_df, "anatomy", k)


def test_shots_from_test_split_follow_first_n():
    task = MMLUTask()
    test = task.load_split(MMLU, "anatomy", "test")
    assert task.shot_pool(MMLU, "anatomy", test)[1] == "test"
    idx = lambda qs: [q.index for q in qs]  # noqa: E731
    assert idx(task.shots_for(test[2], test, "test", 5)) == [0, 1, 3, 4, 5]
    assert idx(task.shots_for(test[5], test, "test", 5)) == [0, 1, 2, 3, 4]
    assert idx(task.shots_for(test[50], test, "test", 5)) == [0, 1, 2, 3, 4]


def test_too_long_prompts_drop_the_last_shot_first():
    task = MMLUTask()
    test = task.load_split(MMLU, "anatomy", "test")
    shots = task.shots_for(test[10], test, "test", 5)
    count = lambda text: len(text.split())  # noqa: E731
    full = count(task.render(test[10], shots)[0])
    p = task.build_prompt(test[10], shots, count, full - 1)
    assert p.shots < 5
    assert p.text == task.render(test[10], shots[: p.shots])[0]  # the first ones are kept
    assert count(p.text) <= full - 1


def _run(lm, data, shots, letter_token, tmp_path, **engine):
    settings = ExamSettings("mmlu", data, ("anatomy",), 20, shots, letter_token, False, EngineSettings(**engine))
    return run_exam(MMLUTask(), lm, settings, Store(tmp_path / "db.sqlite"))


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
    assert ours.shape == ref.shape == (20, 4)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert [res.samples[sample_key(q)]["pred"] for q in res.questions["anatomy"]] == [
        choices[int(np.argmax(r))] for r in ref
    ]
    assert res.provenance["shots_used"] == {"min": shots, "max": shots}
    assert res.provenance["fewshot_source"] == "dev"


def test_letter_tokens_on_smollm2_and_sentencepiece(smollm2_tokenizer, tiny_sp):
    task = MMLUTask()
    cue = "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:"
    for tok in (smollm2_tokenizer, tiny_sp.tokenizer):
        spaced = task.letter_ids(tok, cue, "spaced")
        bare = task.letter_ids(tok, cue, "bare")
        assert bare == [tok(c).input_ids[-1] for c in choices]
        for c, i in zip(choices, spaced, strict=True):
            # the spaced token is what the tokenizer produces after the cue in a real example
            full = tok(cue + " " + c, add_special_tokens=False).input_ids
            assert full[-1] == i
    # BPE (SmolLM2): a space before the letter is another token. SentencePiece adds a
    # dummy prefix to every text, so tokenizer("A") is already "▁A": both choices agree.
    assert task.letter_ids(smollm2_tokenizer, cue, "spaced") != task.letter_ids(smollm2_tokenizer, cue, "bare")
    assert task.letter_ids(tiny_sp.tokenizer, cue, "spaced") == task.letter_ids(tiny_sp.tokenizer, cue, "bare")
    sp_piece = tiny_sp.tokenizer.convert_ids_to_tokens(task.letter_ids(tiny_sp.tokenizer, cue, "spaced"))
    assert sp_piece == ["▁A", "▁B", "▁C", "▁D"]
    assert smollm2_tokenizer.convert_ids_to_tokens(task.letter_ids(smollm2_tokenizer, cue, "spaced")) == [
        "ĠA", "ĠB", "ĠC", "ĠD"
    ]


def test_chat_form_renders_through_the_template(smollm2_fp32, tmp_path):
    settings = ExamSettings("mmlu", MMLU, ("anatomy",), 3, 2, "spaced", True, EngineSettings())
    res = run_exam(MMLUTask(), smollm2_fp32, settings, Store(tmp_path / "db"))
    assert res.provenance["prompt_format"] == "chat"
    # the letter opens the assistant turn: no space before it
    assert res.provenance["letter_tokens"] == ["A", "B", "C", "D"]
    from lmboard.tasks.exam_run import chat_render

    task = MMLUTask()
    test = task.load_split(MMLU, "anatomy", "test")
    text, prefix = chat_render(task, smollm2_fp32.tokenizer, test[2], task.shots_for(test[2], test, "test", 2))
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert text.count("<|im_start|>user") == 3 and text.count("<|im_start|>assistant") == 3
    assert text.startswith(prefix) and "The following are multiple choice questions" in prefix
    assert len(res.samples) == 3
