"""lmboard finetune on SmolLM2 and ChnSentiCorp: masks on its tokenizer, the loss falls,
the adapter changes eval's predictions, --merge equals base + adapter, kill and resume."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import CHNSENTICORP, lmboard, run_cli
from lmboard.finetune.masking import IGNORE, encode_examples
from lmboard.finetune.templates import Example, render_prompt
from lmboard.finetune.train import answer_loss
from lmboard.lm import encode_pair

LABELS = "0=负面,1=正面"
EXAMPLES = [
    Example(1, "这家酒店怎么样？", "房间很干净，早餐不错。"),
    Example(2, "What is 2 + 2?", " Four.", instruction="Answer briefly."),
    Example(3, "And 3 + 3?", "Six.", history=(("What is 2 + 2?", "Four."),), system="Be brief."),
]


@pytest.mark.parametrize("template", ["alpaca", "chatglm", "llama2", "raw", "Tweet text : {input} label : "])
def test_labels_on_smollm2s_tokenizer(smollm2_fp32, template):
    tok = smollm2_fp32.tokenizer
    encoded, _ = encode_examples(tok, template, EXAMPLES, 512, smollm2_fp32.eos_token_ids())
    for ex, enc in zip(EXAMPLES, encoded, strict=True):
        ctx, ans = encode_pair(tok, render_prompt(template, ex), ex.response)
        assert enc.labels == [IGNORE] * len(ctx) + ans + [tok.eos_token_id]
        assert enc.input_ids == ctx + ans + [tok.eos_token_id]
        assert tok.decode(ans) == ex.response  # byte-level BPE: the answer's text exactly


def test_chat_template_on_smollm2_trains_assistant_turns_only(smollm2_fp32):
    tok = smollm2_fp32.tokenizer
    [enc], _ = encode_examples(tok, "chat", [EXAMPLES[2]], 512, smollm2_fp32.eos_token_ids())
    whole = tok.apply_chat_template(EXAMPLES[2].messages(), tokenize=False)
    assert tok.decode(enc.input_ids) == whole
    trained = [t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != IGNORE]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(trained) == "Four.<|im_end|>Six.<|im_end|>"
    assert trained.count(im_end) == 2


def _subset(tmp_path, n=40, label=None):
    """n short reviews, half of each label (the file starts with a long run of positive ones);
    ``label``: every review relabelled so (a mapping a few steps teach, whatever the base says)."""
    import csv
    import io

    rows = list(csv.reader(io.StringIO(CHNSENTICORP.read_text(encoding="utf-8"))))
    pos = [r for r in rows[1:] if r[0] == "1" and len(r[1]) < 120][: n // 2]
    neg = [r for r in rows[1:] if r[0] == "0" and len(r[1]) < 120][: n // 2]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(rows[0])
    for p, q in zip(pos, neg, strict=True):
        w.writerows([p, q] if label is None else [[label, p[1]], [label, q[1]]])
    f = tmp_path / "reviews.csv"
    f.write_text(buf.getvalue(), encoding="utf-8")
    return f


def _finetune(data, out, db, *extra, env=None):
    """The command in this process, or (a fault to inject: the process must die of it) in its own."""
    args = ["finetune", "smollm2,dtype=float32", "--data", str(data), "--labels", LABELS, "--text-column",
            "review", "--split", "0.5", "--out", str(out), "--db", str(db), "--max-length", "96",
            "--batch-size", "4", "--lr", "3e-3", "--quiet", *extra]
    return lmboard(*args, env=env) if env else run_cli(*args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft")
    data = _subset(d, label="0")  # the base calls nearly every review 正面; the adapter learns 负面
    r = _finetune(data, d / "adapter", d / "db", "--max-steps", "6", "--save-steps", "3", "--merge")
    assert r.returncode == 0, r.stderr
    return data, d / "adapter", d


def test_a_few_steps_lower_the_loss_on_the_training_batch(trained, smollm2_fp32):
    from lmboard.finetune.data import DataSpec, load_train_data
    from lmboard.finetune.masking import pad_batch
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec
    from lmboard.tasks.classify import ClassifySettings

    data, adapter, _ = trained
    td = load_train_data(DataSpec(data, classify=ClassifySettings({"0": "负面", "1": "正面"}), text_column="review",
                                  split=0.5))
    enc, _ = encode_examples(smollm2_fp32.tokenizer, "raw", td.examples[:8], 96, smollm2_fp32.eos_token_ids())
    batch = pad_batch(enc, smollm2_fp32.tokenizer.pad_token_id)
    tuned = load_model(parse_model_spec(f"smollm2,dtype=float32,adapter={adapter}"))
    with torch.no_grad():
        before, after = float(answer_loss(smollm2_fp32.model, batch)), float(answer_loss(tuned.model, batch))
    assert after < before * 0.7, (before, after)
    rec = json.loads((adapter / "lmboard-finetune.json").read_text())
    assert rec["final_loss"] < rec["loss_curve"][0][1]

    merged = load_model(parse_model_spec(f"hf:{adapter / 'merged'},dtype=float32"))
    ids = torch.tensor([enc[0].input_ids])
    with torch.no_grad():
        diff = (merged.model(ids).logits - tuned.model(ids).logits).abs().max()
    assert float(diff) < 1e-4


def test_the_adapter_changes_evals_predictions(trained):
    data, adapter, d = trained
    res = {}
    for name, spec in (("base", "smollm2"), ("tuned", f"smollm2,adapter={adapter}")):
        r = run_cli("eval", spec, "--task", "classify", "--data", str(data), "--labels", LABELS, "--text-column",
                    "review", "--split", "0.5", "--seed", "123", "--db", str(d / "db"), "--out", str(d / name), "-q")
        assert r.returncode == 0, r.stderr
        res[name] = [json.loads(x) for x in (d / name / "samples.jsonl").read_text().splitlines()]
    assert len(res["base"]) == 20
    assert [s["line"] for s in res["base"]] == [s["line"] for s in res["tuned"]]
    assert all(a["scores"] != b["scores"] for a, b in zip(res["base"], res["tuned"], strict=True))
    base_right = sum(s["pred"] == s["gold"] for s in res["base"])
    tuned_right = sum(s["pred"] == s["gold"] for s in res["tuned"])
    assert tuned_right > base_right, (base_right, tuned_right)


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path):
    """Killed after step 3 (checkpoint 2 written): the same command trains steps 3 and 4
    only, on the same batches with the same optimizer state: the losses of an
    uninterrupted run."""
    data = _subset(tmp_path, 24)
    steps = ("--max-steps", "4", "--save-steps", "2")
    r = _finetune(data, tmp_path / "a", tmp_path / "db", *steps, env={"LMBOARD_FAULT": "finetune.step=3"})
    assert r.returncode != 0
    ck = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert "checkpoint-2" in ck and "checkpoint-4" not in ck
    assert json.loads((tmp_path / "a" / "lmboard-finetune.json").read_text())["status"] == "running"
    r = _finetune(data, tmp_path / "a", tmp_path / "db", *steps)
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "a" / "lmboard-finetune.json").read_text())
    assert rec["resumed_from_step"] == 2 and rec["steps"] == 4
    assert [s for s, _ in rec["loss_curve"]] == [1, 2, 3, 4]
    assert rec["tokens_this_process"] <= 2 * 4 * 96  # steps 3 and 4 only
    r = _finetune(data, tmp_path / "b", tmp_path / "db2", *steps)
    assert r.returncode == 0, r.stderr
    whole = json.loads((tmp_path / "b" / "lmboard-finetune.json").read_text())["loss_curve"]
    assert [s for s, _ in whole] == [1, 2, 3, 4]
    for (_, a), (_, b) in zip(rec["loss_curve"], whole, strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
