"""Label classification on ChnSentiCorp with SmolLM2."""

import json

import numpy as np
import pytest
import torch

from conftest import DATA, lmboard
from lmboard.config import EngineSettings
from lmboard.engine.continuations import LabelItem, continuation_ids, label_logprobs, score_labels
from lmboard.tasks import classify as C

CSV = DATA / "chnsenticorp" / "ChnSentiCorp_htl_all.csv"
LABELS = {"0": "负面", "1": "正面"}


def test_label_loglik_equals_a_plain_forward_per_label(smollm2_fp32):
    examples, skipped = C.load_examples(CSV, "review", "label", LABELS)
    assert len(examples) + skipped == 7766 and skipped == 1
    s = C.ClassifySettings(LABELS)
    tok, model = smollm2_fp32.tokenizer, smollm2_fp32.model
    for e in examples[:3] + examples[-3:]:
        prompt = C.render(s, [], e.text)
        assert prompt.endswith("情感：")
        ctx, labs = continuation_ids(tok, prompt, ["负面", "正面"])
        ours = label_logprobs(smollm2_fp32, ctx, labs)
        for lab, got in zip(labs, ours, strict=True):
            ids = torch.tensor([ctx + lab])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            ref = sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(lab))
            assert got == pytest.approx(ref, abs=1e-4)


def test_engine_label_loglik_equals_the_plain_forward_with_shots(smollm2_fp32):
    """The batched engine path (shots' KV computed once, label tokens packed across
    reviews) gives the per-label forward's numbers, whatever the budget or forward."""
    examples, _ = C.load_examples(CSV, "review", "label", LABELS)
    train, test = C.split(examples, 0.8, 123)
    s = C.ClassifySettings(LABELS, shots=2)
    shots = C.pick_shots(train, s)
    test = sorted(test[:40], key=lambda e: len(e.text))[:8]  # short reviews keep it fast
    items = []
    for e in test:
        prompt = C.render(s, shots, e.text)
        ctx, labs = continuation_ids(smollm2_fp32.tokenizer, prompt, ["负面", "正面"])
        items.append(LabelItem(str(e.line), prompt, ctx, labs))
    model = smollm2_fp32.model
    ref = {}
    for it in items:
        ref[it.key] = []
        for lab in it.labels:
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([it.ids + lab])).logits[0].float(), -1)
            ref[it.key].append(sum(float(logp[len(it.ids) - 1 + j, t]) for j, t in enumerate(lab)))
    for engine in (EngineSettings(batch_tokens=4096), EngineSettings(batch_tokens=8),
                   EngineSettings(batch_tokens=512, packed=False)):
        got: dict[str, list[float]] = {}
        stats = score_labels(smollm2_fp32, items, engine, got.__setitem__)
        assert got.keys() == ref.keys()
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], atol=1e-4)
        assert stats.prefix_tokens_reused > len(items) * 100  # the shots ran once, not per label
    done = {items[0].key}
    got = {}
    score_labels(smollm2_fp32, items, EngineSettings(), got.__setitem__, skip=done.__contains__)
    assert set(got) == set(ref) - done


def test_split_shots_and_metrics():
    examples, _ = C.load_examples(CSV, "review", "label", LABELS)
    train, test = C.split(examples, 0.8, 123)
    assert len(train) + len(test) == len(examples) and not {e.line for e in train} & {e.line for e in test}
    assert C.split(examples, 0.8, 123)[1][:5] == test[:5]
    shots = C.pick_shots(train, C.ClassifySettings(LABELS, shots=4))
    assert sorted(s.label for s in shots) == ["正面", "正面", "负面", "负面"]
    m = C.metrics(["正面", "负面", "正面"], ["正面", None, "负面"], ["负面", "正面"])
    assert m["accuracy"] == pytest.approx(1 / 3) and m["unmatched"] == 1
    assert m["per_label"]["正面"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["confusion"]["负面"]["unmatched"] == 1
    assert C.match_label(" 正面。", ["负面", "正面"]) == "正面" and C.match_label("正面的评价", ["负面", "正面"]) == "正面"
    assert C.match_label("不知道", ["负面", "正面"]) is None


@pytest.mark.parametrize("by", ["loglik", "generate"])
def test_cli_on_chnsenticorp(tmp_path, by):
    out = tmp_path / "o"
    r = lmboard("eval", "smollm2", "--task", "classify", "--data", str(CSV), "--text-column", "review",
                "--label-column", "label", "--labels", "0=负面,1=正面", "--split", "0.8", "--seed", "123",
                "--test-size", "16", "--shots", "2", "--by", by, "--out", str(out), "--db", str(tmp_path / "db"))
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "classify.json").read_text())
    assert res["n"] == 16 and res["skipped_empty_text"] == 1 and res["shots"] == 2
    assert 0 <= res["accuracy"] <= 1 and set(res["per_label"]) == {"负面", "正面"}
    assert sum(sum(v.values()) for v in res["confusion"].values()) == 16
    assert "accuracy" in r.stdout
    if by == "loglik":  # on the scoring engine: the two shots ran once for the 16 reviews
        assert res["engine"]["prefix_tokens_reused"] > 15 * 300 and res["engine"]["fallbacks"] == 0


def test_classify_bad_input(tmp_path):
    bad = tmp_path / "d.csv"
    bad.write_text("label,review\n1,好\n7,差\n", encoding="utf-8")
    r = lmboard("eval", "--task", "classify", "--data", str(bad), "--text-column", "review", "--labels", "0=负面,1=正面")
    assert r.returncode == 2 and "d.csv:3: label '7' is not one of 0, 1" in r.stderr
    r = lmboard("eval", "--task", "classify", "--data", str(bad), "--text-column", "text", "--labels", "0=负面,1=正面")
    assert r.returncode == 2 and "no column 'text'" in r.stderr
