"""Label classification on ChnSentiCorp with SmolLM2."""

import json

import numpy as np
import pytest
import torch

from helpers import CHNSENTICORP as CSV
from helpers import run_cli
from lmboard.lm import Scored, ScoreRequest, continuation_ids
from lmboard.models.engine.continuations import label_logprobs
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
    """The backend's ``score`` of continuations (shots' KV computed once, label tokens
    packed across reviews) gives the per-label forward's log-probabilities and greedy
    checks, whatever the budget or runtime; stored requests are not computed again."""
    examples, _ = classify.load_examples(CSV, "review", "label", LABELS)
    train, test = classify.split(examples, 0.8, 123)
    s = classify.ClassifySettings(LABELS, shots=2)
    shots = classify.pick_shots(train, s)
    test = sorted(test[:40], key=lambda e: len(e.text))[:3]  # short reviews keep it fast
    reqs = []
    for e in test:
        ctx, labs = continuation_ids(smollm2_fp32, classify.render(s, shots, e.text), ["负面", "正面"])
        reqs.append(ScoreRequest(str(e.line), tuple(ctx), tuple(map(tuple, labs))))
    model = smollm2_fp32.model
    ref, ref_greedy = {}, {}
    for r in reqs:
        ref[r.key], ref_greedy[r.key] = [], []
        for lab in r.continuations:
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([list(r.ids + lab)])).logits[0].float(), -1)
            rows = logp[len(r.ids) - 1: len(r.ids) - 1 + len(lab)]
            ref[r.key].append(sum(float(rows[j, t]) for j, t in enumerate(lab)))
            ref_greedy[r.key].append(all(int(rows[j].argmax()) == t for j, t in enumerate(lab)))
    assert any(any(g) for g in ref_greedy.values())  # the check is not all False
    for runtime in ({"batch_tokens": 4096}, {"batch_tokens": 8}, {"batch_tokens": 512, "runtime": "generic"}):
        scoring = smollm2_fp32.with_runtime(**runtime).score(reqs)
        got = {r.key: r for batch in scoring for r in batch}
        assert got.keys() == ref.keys()
        for k in ref:
            np.testing.assert_allclose(got[k].logprobs, ref[k], atol=1e-4)
            assert got[k].greedy == ref_greedy[k] and got[k].final
        assert scoring.stats["prefix_tokens_reused"] > len(reqs) * 100  # the shots ran once, not per label
    done = {reqs[0].key: Scored(reqs[0].key)}
    got = {r.key for batch in smollm2_fp32.score(reqs, stored=done) for r in batch}
    assert got == set(ref) - set(done)


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
