"""The scoring engine on SmolLM2: exact token boundaries, and invariance to the batch
budget, prefix reuse and the forward used."""

import numpy as np
import pytest

from helpers import MMLU
from lmboard.models.engine.plan import PlanCounts, ScoreItem, plan_groups
from lmboard.store import Store
from lmboard.tasks.exam import ExamSettings
from lmboard.tasks.exam_run import run_exam
from lmboard.tasks.mmlu import MMLU as MMLUTask
from unit.test_engine import real_items


def test_prefix_boundary_gives_exactly_the_full_prompt_ids(smollm2_fp32):
    lm = smollm2_fp32
    items = real_items(lm)
    stats = PlanCounts()
    groups = plan_groups(lm.encode, items, True, stats)
    seen = 0
    for g in groups:
        for item, suffix in g.members:
            assert g.shared + suffix == item.ids  # the ids run are the full prompt's
            assert len(suffix) >= 1
            seen += 1
    assert seen == len(items) and stats.fallbacks == 0
    # first_n with 3 shots: questions 0-2 each skip themselves; question 3 and later share rows 0-2
    assert len([g for g in groups if g.shared]) == 2 * 4


def test_bpe_merge_across_the_boundary_is_trimmed(smollm2_fp32):
    tok = smollm2_fp32.tokenizer
    prefix = "Answer: A\n\n"  # alone, "\n\n" is one token; before a word it splits
    text = prefix + "What is it?\nAnswer:"
    items = [ScoreItem("a", tok(text).input_ids, prefix)]
    stats = PlanCounts()
    (g,) = plan_groups(smollm2_fp32.encode, items, True, stats)
    assert tok(prefix).input_ids != tok(text).input_ids[: len(tok(prefix).input_ids)]
    assert stats.boundary_trimmed == 1 and g.shared + g.members[0][1] == items[0].ids


def _exam(lm, tmp_path, name, **runtime):
    settings = ExamSettings("mmlu", MMLU, ("anatomy", "astronomy"), 7, 3)
    res = run_exam(MMLUTask(), lm.with_runtime(**runtime), settings, Store(tmp_path / f"{name}.db"))
    keys = sorted(res.samples)
    return np.array([res.samples[k]["probs"] for k in keys]), [res.samples[k]["pred"] for k in keys], res


def test_invariant_to_batch_budget_and_prefix_reuse_in_float32(smollm2_fp32, tmp_path):
    base_p, base_pred, base = _exam(smollm2_fp32, tmp_path, "a", batch_tokens=4096)
    for name, kw in {"b": {"batch_tokens": 256}, "c": {"batch_tokens": 40},
                     "d": {"batch_tokens": 1024, "prefix_reuse": False},
                     "e": {"batch_tokens": 1024, "runtime": "generic"}}.items():
        p, pred, res = _exam(smollm2_fp32, tmp_path, name, **kw)
        assert pred == base_pred, name
        np.testing.assert_allclose(p, base_p, atol=1e-4)
        if name == "d":
            assert res.stats["prefix_tokens_reused"] == 0
    assert base.stats["prefix_tokens_reused"] > 0 and base.stats["forward"] == "packed"
    assert base.stats["padded_tokens"] == 0 and base.provenance["runtime"] == "cpu"
    assert res.stats["forward"] == "transformers" and res.stats["prefix_tokens_reused"] > 0
    assert res.provenance["runtime"] == "generic"




@pytest.mark.bf16
def test_calibrated_recheck_flips_no_answer_near_the_decision_boundary(smollm2_fp32):
    """Questions sitting near the boundary: of 120 5-shot questions, the 30 whose two best
    letters are closest in float32. bfloat16's provisional rows answer some of them
    otherwise; with the calibrated recheck every final answer is float32's, and rescored
    rows are its logits. (One bfloat16 pass: it is emulated, and slow, on AVX2-only CPUs.)"""
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec
    from unit.test_recheck import argmax, scored, top_gap

    bf16 = load_model(parse_model_spec("smollm2,dtype=bfloat16"))
    assert bf16.exact_weights is not None and "originals" in bf16.info()["float32_recheck_on"]
    pool = real_items(smollm2_fp32, subjects=("anatomy", "astronomy", "high_school_geography"), shots=5, limit=40)
    targets = [smollm2_fp32.encode(" " + c, False)[-1] for c in "ABCD"]
    f32, _, _ = scored(smollm2_fp32, pool, targets, 0.0)
    near = sorted(pool, key=lambda it: top_gap(f32[it.key]))[:30]
    got, checked, stats = scored(bf16, near, targets, None)
    # every row is first handed on as bfloat16's provisional row (over the float32 prefix
    # both passes share): bfloat16 alone answers some of these otherwise
    raw = stats.provisional
    assert set(raw) == {it.key for it in near}
    assert sum(argmax(raw[it.key]) != argmax(f32[it.key]) for it in near) >= 1
    assert all(argmax(got[it.key]) == argmax(f32[it.key]) for it in near)
    assert stats.recheck == "calibrated" and 0 < stats.recheck_bound < 0.5
    for k in checked:
        np.testing.assert_allclose(got[k], f32[k], atol=2e-5)
