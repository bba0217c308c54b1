"""Classification metrics: accuracy, macro-F1, per-label precision/recall/F1, confusion.

A prediction of None (a generated answer that matched no label) counts as wrong, in
its own "unmatched" column of the confusion matrix.
"""

from __future__ import annotations


def classification_report(gold: list[str], pred: list[str | None], names: list[str]) -> dict:
    n = len(gold)
    conf = {g: {p: 0 for p in [*names, "unmatched"]} for g in names}
    for g, p in zip(gold, pred, strict=True):
        conf[g][p if p is not None else "unmatched"] += 1
    per = {}
    for lab in names:
        tp = conf[lab][lab]
        fp = sum(conf[g][lab] for g in names if g != lab)
        fn = sum(v for p, v in conf[lab].items() if p != lab)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[lab] = {"precision": prec, "recall": rec, "f1": f1, "support": tp + fn}
    return {
        "accuracy": sum(g == p for g, p in zip(gold, pred, strict=True)) / n if n else float("nan"),
        "macro_f1": sum(v["f1"] for v in per.values()) / len(per),
        "per_label": per,
        "confusion": conf,
        "unmatched": sum(1 for p in pred if p is None),
        "n": n,
    }
