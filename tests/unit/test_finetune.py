"""lmboard finetune on a tiny random Llama with a SentencePiece tokenizer: the masks, the
loss, truncation, resume bookkeeping and the checks (SmolLM2: tests/e2e/test_finetune.py)."""

from __future__ import annotations

import json

import pytest

from helpers import check_one_line_error as check
from helpers import run_cli as lmboard
from lmboard.finetune.masking import IGNORE, encode_examples, pad_batch, truncate
from lmboard.finetune.templates import Example, render_prompt
from lmboard.lm import encode_pair

EXAMPLES = [
    Example(1, "What is the capital of France?", "Paris is the capital."),
    Example(2, "the bones of the skull", "The cranium.", instruction="Name the part of the body."),
    Example(3, "Add two and two.", "Four", history=(("Say hi.", "Hi."),)),
]
CHATML = ("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}</s>\n{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def check_plain_labels(tok, template: str, ex: Example, enc) -> None:
    """Labels are -100 on exactly the prompt's positions; elsewhere the answer's ids and EOS."""
    ctx, ans = encode_pair(tok, render_prompt(template, ex), ex.response)
    assert enc.input_ids == ctx + ans + [tok.eos_token_id]
    assert enc.labels == [IGNORE] * len(ctx) + ans + [tok.eos_token_id]
    assert tok.decode(ans).strip() == ex.response.strip()
    assert tok.eos_token_id != tok.pad_token_id or enc.labels[-1] == tok.eos_token_id


@pytest.mark.parametrize("template", ["alpaca", "chatglm", "llama2", "raw", "Q: {instruction}\n{input}\nA:"])
def test_labels_mask_exactly_the_prompt_for_each_template(tiny_sp, template):
    tok = tiny_sp.tokenizer
    encoded, counts = encode_examples(tok, template, EXAMPLES, 512, tiny_sp.eos_token_ids())
    assert len(encoded) == 3 and counts["prompt truncated"] == 0
    for ex, enc in zip(EXAMPLES, encoded, strict=True):
        check_plain_labels(tok, template, ex, enc)
    assert "[Round 0]\n问：Say hi.\n答：Hi.\n[Round 1]\n问：Add two and two.\n答：" == render_prompt("chatglm", EXAMPLES[2])
    assert render_prompt("alpaca", EXAMPLES[1]).endswith(
        "### Instruction:\nName the part of the body.\nthe bones of the skull\n\n### Response: ")


def test_chat_template_trains_every_assistant_turn_and_its_end_token(tiny_sp):
    tok = tiny_sp.tokenizer
    old = tok.chat_template
    tok.chat_template = CHATML
    try:
        [enc], _ = encode_examples(tok, "chat", [EXAMPLES[2]], 512, [tok.eos_token_id])
    finally:
        tok.chat_template = old
    runs, k = [], 0
    while k < len(enc.labels):
        if enc.labels[k] == IGNORE:
            k += 1
            continue
        j = k
        while j < len(enc.labels) and enc.labels[j] != IGNORE:
            assert enc.labels[j] == enc.input_ids[j]
            j += 1
        runs.append(enc.input_ids[k:j])
        k = j
    assert [r[-1] for r in runs] == [tok.eos_token_id, tok.eos_token_id]
    assert [tok.decode(r[:-1]).strip() for r in runs] == ["Hi.", "Four"]
    assert tok.decode(enc.input_ids).count("<|user|>") == 2


def test_padding_is_masked_and_never_a_fixed_length():
    b = pad_batch([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [5], "labels": [IGNORE]}], 0)
    assert b["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert b["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, IGNORE, IGNORE]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_truncation_cuts_the_prompt_from_the_left_and_keeps_the_answer_whole():
    ids = [1] + list(range(10, 30)) + [100, 101, 2]  # BOS, 20 prompt tokens, answer, EOS
    labels = [IGNORE] * 21 + [100, 101, 2]
    enc = truncate(7, ids, labels, 10, bos=1)
    assert len(enc.input_ids) == 10 and enc.cut == 14
    assert enc.input_ids == [1, 24, 25, 26, 27, 28, 29, 100, 101, 2]
    assert enc.labels == [IGNORE] * 7 + [100, 101, 2]
    assert truncate(7, ids, labels, 4, bos=1) is None  # BOS + answer leaves no prompt token
    assert truncate(7, ids[1:], labels[1:], 4, bos=1).input_ids == [29, 100, 101, 2]


def test_an_answer_longer_than_max_length_is_a_counted_skip(tiny_sp):
    long = Example(9, "Hi", "word " * 200)
    encoded, counts = encode_examples(tiny_sp.tokenizer, "raw", [long, EXAMPLES[0]], 64, [2])
    assert [e.line for e in encoded] == [1] and counts["answer longer than --max-length"] == 1


def test_reported_loss_is_the_mean_cross_entropy_over_answer_tokens(sp_model_dir, tmp_path):
    """Two micro-batches of one optimizer step: the loss is over all their answer tokens
    (not the mean of the two batches' means), computed by hand on the base model."""
    import torch

    from lmboard.finetune.train import TrainJob, TrainSettings, run_training
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec

    lm = load_model(parse_model_spec(f"hf:{sp_model_dir},dtype=float32"))
    exs = [Example(i, f"Question {i}: what is {i} plus {i}?", "The answer is " + "more " * i) for i in range(1, 5)]
    encoded, _ = encode_examples(lm.tokenizer, "alpaca", exs, 512, [2])
    total, count = 0.0, 0
    with torch.no_grad():
        for e in encoded:
            logp = torch.log_softmax(lm.model(torch.tensor([e.input_ids])).logits[0].double(), -1)
            for pos in range(1, len(e.labels)):
                if e.labels[pos] != IGNORE:
                    total -= float(logp[pos - 1, e.labels[pos]])
                    count += 1
    logs = []
    job = TrainJob(lm.model, lm.tokenizer, encoded, TrainSettings(max_steps=1, batch_size=2, grad_accum=2),
                   tmp_path / "ck", logs.append, lambda p: None)
    run_training(job)
    assert len(logs) == 1
    assert abs(logs[0].loss - total / count) < 1e-5, (logs[0].loss, total / count)
    assert logs[0].tokens == sum(len(e.input_ids) for e in encoded)


def test_micro_batches_cut_a_batch_by_padded_tokens_longest_first():
    from lmboard.finetune.train import micro_batches

    rows = [{"input_ids": [5] * n, "labels": [IGNORE] * (n - 1) + [7]} for n in (3, 9, 5, 9, 2)]
    batch = pad_batch(rows, 0)
    parts = micro_batches(batch, 18)  # 9+9 | 5+3+2 (3 x 5 = 15 padded)
    assert [p["input_ids"].shape for p in parts] == [(2, 9), (3, 5)]
    assert sorted(int(m.sum()) for p in parts for m in p["attention_mask"]) == [2, 3, 5, 9, 9]
    assert sum(int((p["labels"] != IGNORE).sum()) for p in parts) == 5
    assert micro_batches(batch, 45)[0] is batch  # fits: the batch itself
    assert [p["input_ids"].shape[0] for p in micro_batches(batch, 4)] == [1, 1, 1, 1, 1]  # over-long rows alone


def test_a_step_cut_in_micro_batches_trains_the_same_weights(sp_model_dir, tmp_path, monkeypatch):
    """The same two optimizer steps, each batch whole, one row per forward/backward, or
    with gradient checkpointing (taken where one row's activations would not fit: here a
    machine with 64 KB free): the logged losses and the adapter's weights agree (float32;
    only summation order differs)."""
    import torch

    from lmboard.finetune import train
    from lmboard.finetune.train import TrainJob, TrainSettings, run_training
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec

    results = []
    for case, micro in enumerate((None, 40, "checkpointing")):
        if micro == "checkpointing":
            monkeypatch.setattr(train, "free_memory", lambda device: 64 << 10)
            micro = None
        lm = load_model(parse_model_spec(f"hf:{sp_model_dir},dtype=float32"))
        exs = [Example(i, f"Question {i}: what is {i} plus {i}?", "The answer is " + "more " * i) for i in range(1, 9)]
        encoded, _ = encode_examples(lm.tokenizer, "alpaca", exs, 512, [2])
        logs = []
        job = TrainJob(lm.model, lm.tokenizer, encoded, TrainSettings(max_steps=2, batch_size=4, micro_tokens=micro),
                       tmp_path / f"ck{case}", logs.append, lambda p: None)
        model, stats = run_training(job)
        weights = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
        results.append(([x.loss for x in logs], weights, stats, [x.tokens for x in logs]))
    (whole, w_whole, s_whole, t_whole) = results[0]
    assert s_whole["micro_tokens"] >= 256 and not s_whole["gradient_checkpointing"]
    assert results[1][2]["micro_tokens"] == 40 and not results[1][2]["gradient_checkpointing"]
    assert results[2][2]["micro_tokens"] == 256 and results[2][2]["gradient_checkpointing"]
    for cut, w_cut, _, t_cut in results[1:]:
        assert t_whole == t_cut and cut == pytest.approx(whole, abs=1e-5)
        assert w_whole.keys() == w_cut.keys() and len(w_whole) > 0
        for k in w_whole:
            assert torch.allclose(w_whole[k], w_cut[k], atol=1e-5), k


@pytest.fixture
def qa_file(tmp_path):
    f = tmp_path / "qa.jsonl"
    rows = [{"prompt": f"What is {i} plus {i}?", "response": f"It is {2 * i}."} for i in range(12)]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return f


def _ft(sp_model_dir, tmp_path, *args):
    return lmboard("finetune", f"hf:{sp_model_dir}", "--db", str(tmp_path / "db"), "--quiet", *args)


def test_finetune_cli_trains_records_and_refuses_another_runs_folder(sp_model_dir, qa_file, tmp_path):
    out = tmp_path / "adapter"
    r = _ft(sp_model_dir, tmp_path, "--data", str(qa_file), "--out", str(out), "--max-steps", "3",
            "--save-steps", "2", "--batch-size", "4", "--merge")
    assert r.returncode == 0, r.stderr
    rec = json.loads((out / "lmboard-finetune.json").read_text())
    assert rec["status"] == "done" and rec["steps"] == 3 and len(rec["loss_curve"]) == 3
    assert rec["data"]["train_lines"] == list(range(1, 13)) and rec["template"] == "alpaca"
    assert (out / "adapter_config.json").is_file() and (out / "merged" / "config.json").is_file()
    assert (out / "checkpoints" / "checkpoint-2" / "lmboard-complete").is_file()
    again = _ft(sp_model_dir, tmp_path, "--data", str(qa_file), "--out", str(out), "--max-steps", "3",
                "--save-steps", "2", "--batch-size", "4")
    assert again.returncode == 0 and json.loads((out / "lmboard-finetune.json").read_text())["steps"] == 3
    check(_ft(sp_model_dir, tmp_path, "--data", str(qa_file), "--out", str(out), "--max-steps", "4"),
          f"--out {out} holds another run's adapter")


def test_show_marks_trained_tokens_and_trains_nothing(sp_model_dir, qa_file, tmp_path):
    r = lmboard("finetune", f"hf:{sp_model_dir}", "--data", str(qa_file), "--out", str(tmp_path / "a"),
                "--show", "2", "--template", "raw")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("-- line") == 2 and "[It is 0.</s>]" in r.stdout.replace("\n", "")
    assert not (tmp_path / "a" / "adapter_config.json").exists()


@pytest.mark.parametrize("args,needle", [
    (["--template", "vicuna"], "unknown template 'vicuna'"),
    (["--response-column", "answer"], "qa.jsonl:1: no 'answer' field (the row has: prompt, response)"),
    (["--lora-dropout", "1.5"], "--lora-dropout"),
    (["--split", "0.8"], "--split applies to classification"),
])
def test_bad_finetune_input_is_one_line(sp_model_dir, qa_file, tmp_path, args, needle):
    check(_ft(sp_model_dir, tmp_path, "--data", str(qa_file), "--out", str(tmp_path / "a"), *args), needle)


def test_no_examples_left_is_one_line(sp_model_dir, tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text('{"prompt": "a", "response": ""}\n{"prompt": "b", "response": "  "}\n', encoding="utf-8")
    check(_ft(sp_model_dir, tmp_path, "--data", str(f), "--out", str(tmp_path / "a")),
          "no training examples left (2 empty answer)")


def test_eval_refuses_rows_the_adapter_was_trained_on(sp_model_dir, tmp_path):
    f = tmp_path / "reviews.csv"
    f.write_text("label,text\n" + "".join(f"{i % 2},review number {i} {'good' if i % 2 else 'bad'}\n"
                                          for i in range(20)), encoding="utf-8")
    cls = ["--labels", "0=bad,1=good", "--split", "0.5", "--seed", "7"]
    r = _ft(sp_model_dir, tmp_path, "--data", str(f), "--out", str(tmp_path / "a"), "--max-steps", "1", *cls)
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "a" / "lmboard-finetune.json").read_text())
    assert len(rec["data"]["train_lines"]) == 10 and rec["data"]["split"] == 0.5
    spec = f"hf:{sp_model_dir},adapter={tmp_path / 'a'}"
    base = ["eval", spec, "--task", "classify", "--data", str(f), "--labels", "0=bad,1=good", "-q",
            "--db", str(tmp_path / "db"), "--out", str(tmp_path / "res")]
    check(lmboard(*base), "of the 20 test rows", "were used to train", "--split 0.5 --seed 7")
    check(lmboard(*base, "--split", "0.5", "--seed", "8"), "were used to train")
    assert lmboard(*base, "--split", "0.5", "--seed", "7").returncode == 0
    # the command the fine-tune prints runs the classification on the rows it held out
    r = lmboard("finetune", f"hf:{sp_model_dir}", "--db", str(tmp_path / "db"), "--data", str(f), "--out",
                str(tmp_path / "a"), "--max-steps", "1", *cls)
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("evaluate: ")]
    import shlex

    printed = shlex.split(line.removeprefix("evaluate: "))
    assert printed[:2] == ["lmboard", "eval"] and "--task" in printed and "--split" in printed
    again = lmboard(*printed[1:], "-q", "--db", str(tmp_path / "db"), "--out", str(tmp_path / "printed"))
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "printed" / "classify.json").read_text())["n"] == 10


def test_continuing_an_adapter_keeps_the_rows_of_both_runs_out_of_eval(sp_model_dir, tmp_path):
    f = tmp_path / "reviews.csv"
    f.write_text("label,text\n" + "".join(f"{i % 2},review number {i} {'good' if i % 2 else 'bad'}\n"
                                          for i in range(20)), encoding="utf-8")
    cls = ["--data", str(f), "--labels", "0=bad,1=good", "--max-steps", "1"]
    assert _ft(sp_model_dir, tmp_path, *cls, "--split", "0.5", "--seed", "7", "--out", str(tmp_path / "a")).returncode == 0
    r = _ft(sp_model_dir, tmp_path, *cls, "--split", "0.5", "--seed", "8", "--out", str(tmp_path / "b"),
            "--init-adapter", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "b" / "lmboard-finetune.json").read_text())
    assert [d["seed"] for d in rec["trained_on"]] == [7, 8]
    base = ["eval", f"hf:{sp_model_dir},adapter={tmp_path / 'b'}", "--task", "classify", "--data", str(f), "--labels",
            "0=bad,1=good", "-q", "--db", str(tmp_path / "db"), "--out", str(tmp_path / "res"), "--split", "0.5"]
    check(lmboard(*base, "--seed", "8"), "--split 0.5 --seed 7")  # the first run's rows are in seed 8's test side
    check(_ft(sp_model_dir, tmp_path, *cls, "--out", str(tmp_path / "c"), "--init-adapter", str(tmp_path)),
          "holds no adapter")
