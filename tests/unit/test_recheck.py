"""The float32 recheck on a tiny random model, whose letter logits sit close together: the
calibrated rule gives every float32 answer, rescored rows are the float32 model's own,
and the rule's pieces (gap error, calibration questions) by hand."""

import pytest

from lmboard.models.engine.plan import Plan, Segment
from lmboard.models.engine.recheck import (
    CAL_EVERY,
    CAL_FIRST,
    GROUP,
    SAFETY,
    calibration_counts,
    gap_error,
    pick_calibration,
    top_gap,
)
from lmboard.models.engine.scoring import EngineSettings, score_last
from unit.test_engine import real_items


@pytest.fixture(scope="module")
def tiny_bf16(sp_model_dir):
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec

    return load_model(parse_model_spec(f"hf:{sp_model_dir},dtype=bfloat16"))


def scored(lm, items, targets, margin):
    """(final rows, rescored rows' (bf16 row, gap error, calibration?), counters with
    ``provisional``: the rows handed on before their group was decided)."""
    got, checked, prov = {}, {}, {}
    run = score_last(lm, items, targets, EngineSettings(batch_tokens=256, recheck_margin=margin))
    while True:
        try:
            handed = next(run)
        except StopIteration as end:
            stats = end.value
            break
        (got if handed.final else prov).update(handed.rows)
        checked.update(handed.checked)
    stats.provisional = prov
    return got, checked, stats


def argmax(row):
    return max(range(len(row)), key=row.__getitem__)


def test_gap_error_and_top_gap_by_hand():
    assert gap_error([1.0, 2.0, 3.0], [1.0, 2.1, 2.9]) == pytest.approx(0.2)  # +0.1 on one, -0.1 on another
    assert gap_error([1.0, 2.0], [1.5, 2.5]) == pytest.approx(0.0)  # a common shift moves no decision
    assert top_gap([0.1, 0.7, 0.4]) == pytest.approx(0.3)


def test_calibration_counts_are_fixed_by_the_plan_and_rows_picked_by_smallest_gap():
    segs = [Segment(None, None, [1]) for _ in range(500)]
    batches = [list(range(i, min(500, i + 10))) for i in range(0, 500, 10)]
    plan = Plan([], [], [], segs, set(), batches)
    counts = calibration_counts(plan)
    assert len(counts) == len(range(0, len(batches), GROUP))
    assert counts[0] >= CAL_FIRST and counts[1:] == [len(range(0, 10 * GROUP, CAL_EVERY))] * (len(counts) - 2) + [1]
    assert counts == calibration_counts(plan)
    group = [7, 3, 9, 4]
    rows = {7: [0.0, 0.5], 3: [0.0, 0.125], 9: [0.375, 0.25], 4: None}  # 4: final, not rescored
    assert pick_calibration(group, rows, 2) == {3, 9}  # gaps 0.5, 0.125, 0.125: ties in plan order
    assert pick_calibration(group, rows, 1) == {3}
    assert pick_calibration(group, rows, 9) == {7, 3, 9}


def test_calibrated_recheck_gives_every_float32_answer(tiny_sp, tiny_bf16):
    assert tiny_bf16.exact_weights is not None  # stored in float32: the originals are kept
    items = real_items(tiny_sp, subjects=("anatomy", "astronomy", "abstract_algebra"), shots=1, limit=40)
    targets = [tiny_sp.encode(" " + c, False)[-1] for c in "ABCD"]
    f32, _, _ = scored(tiny_sp, items, targets, 0.0)
    raw, _, _ = scored(tiny_bf16, items, targets, 0.0)
    flips = [k for k in f32 if argmax(raw[k]) != argmax(f32[k])]
    assert flips, "the set must hold questions bfloat16 alone answers differently"
    got, checked, stats = scored(tiny_bf16, items, targets, None)
    assert [argmax(got[k]) for k in f32] == [argmax(f32[k]) for k in f32]
    # (with the recheck on, prefixes are the float32 model's: bfloat16 rows differ from the run above)
    assert {k for k, r in stats.provisional.items() if argmax(r) != argmax(f32[k])} <= set(checked)
    assert stats.recheck == "calibrated" and stats.calibration > 0 and stats.rechecked == len(checked)
    for k, (b16, err, _) in checked.items():
        assert got[k] == pytest.approx(f32[k], abs=1e-5)  # rescored rows are the float32 model's
        assert b16 == stats.provisional[k] and err == pytest.approx(gap_error(b16, f32[k]), abs=1e-5)
    bound = max(e for _, e, _ in checked.values())
    assert stats.recheck_bound == pytest.approx(bound)
    for k in set(f32) - set(checked):  # kept rows were not close under the margin then in force
        assert top_gap(got[k]) >= SAFETY * min(e for _, e, c in checked.values() if c) - 1e-9


def test_a_fixed_margin_rechecks_exactly_the_closer_calls(tiny_sp, tiny_bf16):
    items = real_items(tiny_sp, subjects=("anatomy",), shots=1, limit=30)
    targets = [tiny_sp.encode(" " + c, False)[-1] for c in "ABCD"]
    raw, _, _ = scored(tiny_bf16, items, targets, 0.0)
    margin = sorted(top_gap(r) for r in raw.values())[10]
    _, checked, stats = scored(tiny_bf16, items, targets, margin)
    assert checked and set(checked) == {k for k, r in stats.provisional.items() if top_gap(r) < margin}
    assert stats.recheck == "fixed" and stats.calibration == 0
