"""ShopBench metrics against values computed by hand, and the kit's aggregation."""

import math

import numpy as np
import pytest

from lmboard.metrics import shopbench as m


def test_accuracy_and_hit_rate():
    assert m.accuracy(2, 2) == 1.0 and m.accuracy(-1, 0) == 0.0
    assert m.hit_rate_3([6, 1, 9], [6, 9, 15]) == pytest.approx(2 / 3)
    assert m.hit_rate_3([5, 5, 5], [5]) == 1.0  # a repeated guess counts once
    assert m.hit_rate_3([1, 2, 3, 4], [4]) == 0.0  # only the first 3 count


def test_ndcg_by_hand():
    truth = [1, 0.01, 0.1, 1, 0]
    # predicted order 1, 4, 3, 2, 5 reads relevances 1, 1, 0.1, 0.01, 0
    dcg = 1 / math.log2(2) + 1 / math.log2(3) + (2 ** 0.1 - 1) / math.log2(4) + (2 ** 0.01 - 1) / math.log2(5)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + (2 ** 0.1 - 1) / math.log2(4) + (2 ** 0.01 - 1) / math.log2(5)
    assert m.ndcg([1, 4, 3, 2, 5], truth) == pytest.approx(dcg / idcg) == pytest.approx(1.0)
    # 2, 5 first: relevances 0.01, 0, then 1
    dcg2 = (2 ** 0.01 - 1) / 1 + 0 + 1 / math.log2(4)
    assert m.ndcg([2, 5, 1], truth) == pytest.approx(dcg2 / idcg)
    assert truth == [1, 0.01, 0.1, 1, 0]  # not sorted in place (the kit's would be)
    # the kit's quirk: a predicted 0 reads truth[-1]; an index past the end reads 0
    assert m.ndcg([0], [0, 1]) == pytest.approx(1 / (1 + 0))
    assert m.ndcg([9, 1], [1, 0]) == pytest.approx((0 + 1 / math.log2(3)) / 1)
    # cut to the truth's length
    assert m.ndcg([2, 1, 3], [0, 1]) == pytest.approx(1.0)
    assert m.ndcg([], [0, 0]) == 0.0 and m.ndcg([1], [1]) == 1.0  # ideal DCG 0 -> 0


def test_micro_f1_by_hand():
    rows = [m.tp_fp_fn(["Cadbury ", "cadbury"], ["cadbury"]),  # duplicates: 1 TP, 1 FP
            m.tp_fp_fn([], ["xmas"]),  # nothing predicted: 1 FN
            m.tp_fp_fn(["mens"], [" mens"])]  # the truth is not stripped: no match
    assert rows == [(1, 1, 0), (0, 0, 1), (0, 1, 1)]
    p, r = 1 / 3, 1 / 3
    assert m.micro_f1(rows) == pytest.approx(2 * p * r / (p + r))
    assert m.micro_f1([(0, 0, 2)]) == 0.0  # the kit would divide by zero


def test_rougel_by_hand():
    # LCS of "the cat sat" and "the cat ate" is "the cat": P = R = 2/3
    assert m.rougel("the cat sat", "the cat ate") == pytest.approx(2 / 3)
    assert m.rougel("The Cats!", "the cat") == pytest.approx(1.0)  # lowercased, stemmed
    assert m.rougel("これは", "これは") == 0.0  # rouge_score keeps [a-z0-9] only


def test_bleu_is_sacrebleu_exp_smoothing_by_hand():
    # 1- to 4-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths: BP = 1
    assert m.bleu("the cat sat on the mat", "the cat sat on a mat") == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    # 1/4 unigrams, no higher n-gram: exp smoothing gives n-gram order k the precision 1 / (2^(k-1) * total)
    assert m.bleu("the dog ran fast", "the cat sat down") == pytest.approx((1 / 4 * 1 / (2 * 3) * 1 / (4 * 2) * 1 / (8 * 1)) ** 0.25)
    # lowercased; only the first line after leading newlines; brevity penalty exp(1 - r/c)
    assert m.bleu("\n\nThe Cat Sat On The Mat\nsecond line", "the cat sat on a mat") == pytest.approx(0.5373, abs=1e-4)
    short = m.bleu("the cat sat on", "the cat sat on a mat")
    assert short == pytest.approx(math.exp(1 - 6 / 4) * 1.0)


def test_bleu_matches_evaluates_call_into_sacrebleu():
    """evaluate.load("sacrebleu").compute(predictions=[g], references=[[t]], lowercase=True)
    is corpus_bleu([g], [[t]]) with the metric's config defaults (evaluate's metrics/sacrebleu)."""
    from sacrebleu.metrics import BLEU

    for g, t in [("a red fox jumps", "the red fox jumped over"), ("今日は良い天気です", "今日は良い天気")]:
        for tok in ("13a", "ja-mecab"):
            ref = BLEU(lowercase=True, force=False, tokenize=tok, smooth_method="exp", smooth_value=None,
                       effective_order=False).corpus_score([g], [[t]]).score / 100
            assert m.bleu(g, t, tokenize=tok) == pytest.approx(ref)
    jp = m.ROW_METRICS["jp-bleu"]("今日は良い天気です", "今日は良い天気")
    assert jp > 0.3 and m.bleu("今日は良い天気です", "今日は良い天気") == 0.0  # 13a: one word each, no match


def test_sent_transformer_cosine_floor():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    assert m.cosine_floor(a, [a]) == pytest.approx(1.0)
    assert m.cosine_floor(a, [b]) == 0.0
    assert m.cosine_floor(a, [-a]) == 0.0  # floored
    assert m.cosine_floor(a, [a, b]) == pytest.approx(0.5)  # a list truth: the mean
    assert m.cosine_floor(a, [a, -a, -a]) == 0.0  # the mean is floored, not each score
    c = np.array([3.0, 4.0])
    assert m.cosine_floor(a, [c]) == pytest.approx(0.6)


def test_score_rows_embeds_each_text_once():
    seen = []

    def embed(metric, texts):
        seen.append((metric, texts))
        return {t: np.array([1.0, float(len(t))]) for t in texts}

    out = m.score_rows(["sent-transformer", "accuracy", "sent-transformer"], ["ab", 1, "ab"],
                       ["ab", 1, ["ab", "ab"]], embed)
    assert out == [pytest.approx(1.0), 1.0, pytest.approx(1.0)]
    assert seen == [("sent-transformer", ["ab"])]


def test_aggregate_as_the_kit():
    rows = [
        {"task": "t1", "type": "multiple-choice", "metric": "accuracy", "track": "A", "score": 1.0},
        {"task": "t2", "type": "named_entity_recognition", "metric": "micro f1", "track": "A", "score": (1, 1, 0)},
        {"task": "t1", "type": "multiple-choice", "metric": "accuracy", "track": "A", "score": 0.0},
        {"task": "t2", "type": "named_entity_recognition", "metric": "micro f1", "track": "A", "score": (0, 0, 1)},
        {"task": "t3", "type": "generation", "metric": "bleu", "track": "B", "score": 0.2},
        {"task": "t3", "type": "generation", "metric": "jp-bleu", "track": "B", "score": 0.4},
    ]
    agg = m.aggregate(rows)
    tasks = {t["task"]: t for t in agg["tasks"]}
    assert [t["task"] for t in agg["tasks"]] == ["t1", "t2", "t3"]
    assert tasks["t1"]["score"] == 0.5 and tasks["t1"]["n"] == 2
    assert tasks["t2"]["score"] == pytest.approx(2 * 0.5 * 0.5 / 1.0)  # P = 1/2, R = 1/2
    assert tasks["t3"]["metric"] == "bleu" and tasks["t3"]["score"] == pytest.approx(0.3) and "jp-bleu" in tasks["t3"]["note"]
    assert agg["overall"] == pytest.approx((0.5 + 0.5 + 0.3) / 3)
    assert agg["tracks"]["A"]["score"] == pytest.approx(0.5) and agg["tracks"]["B"]["score"] == pytest.approx(0.3)
