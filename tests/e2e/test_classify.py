"""Label classification on ChnSentiCorp with SmolLM2."""

import json

import numpy as np
import pytest
import torch

from helpers import CHNSENTICORP as CSV
from helpers import run_cli
from lmboard.engine import EngineSettings, LabelItem, continuation_ids, label_logprobs, score_labels
from lmboard.tasks import classify

LABELS = {"0": "负面", "1": "正面"}


def test_label_loglik_equals_a_plain_forward_per_label(smollm2_fp32):
    examples, skipped = classify.load_examples(CSV, "review", "label", LABELS)
    assert len(examples) + skipped == 7766 and skipped == 1
    s = classify.ClassifySettings(LABELS)
    model = smollm2_fp32.model
    for e in examples[:3] + examples[-3:]:
        prompt = classify.render(s, [], e.text)
        assert prompt.endswith("情感：")
        ctx, labs = continuation_ids(smollm2_fp32, prompt, ["负面", "正面"])
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
    examples, _ = classify.load_examples(CSV, "review", "label", LABELS)
    train, test = classify.split(examples, 0.8, 123)
    s = classify.ClassifySettings(LABELS, shots=2)
    shots = classify.pick_shots(train, s)
    test = sorted(test[:40], key=lambda e: len(e.text))[:5]  # short reviews keep it fast
    items = []
    for e in test:
        prompt = classify.render(s, shots, e.text)
        ctx, labs = continuation_ids(smollm2_fp32, prompt, ["负面", "正面"])
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


@pytest.mark.parametrize("by", ["loglik", "generate"])
def test_cli_on_chnsenticorp(tmp_path, by):
    out = tmp_path / "o"
    r = run_cli("eval", "smollm2", "--task", "classify", "--data", str(CSV), "--text-column", "review",
                "--label-column", "label", "--labels", "0=负面,1=正面", "--split", "0.8", "--seed", "123",
                "--test-size", "8", "--shots", "1", "--by", by, "--out", str(out), "--db", str(tmp_path / "db"))
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "classify.json").read_text())
    assert res["n"] == 8 and res["skipped_empty_text"] == 1 and res["shots"] == 1
    assert 0 <= res["accuracy"] <= 1 and set(res["per_label"]) == {"负面", "正面"}
    assert sum(sum(v.values()) for v in res["confusion"].values()) == 8
    assert "accuracy" in r.stdout
    if by == "loglik":  # on the scoring engine: the shot ran once for the 8 reviews
        assert res["engine"]["prefix_tokens_reused"] > 7 * 100 and res["engine"]["fallbacks"] == 0
