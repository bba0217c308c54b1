"""Exam accuracy: per subject, subcategory and category, and the question-weighted mean."""

from __future__ import annotations

import math


def softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [v / s for v in e]


def exam_accuracy(correct: dict[str, list[bool]], subcats_of: dict[str, list[str]],
                  categories: dict[str, list[str]]) -> dict:
    """``correct``: subject -> whether each question was answered right.

    Only groups with at least one scored question appear (the original MMLU code prints
    NaN for the others); subcategories are listed in the categories' order."""
    subject_acc = {s: sum(c) / len(c) for s, c in correct.items() if c}
    sub_cors: dict[str, list[bool]] = {}
    cat_cors: dict[str, list[bool]] = {}
    for s, c in correct.items():
        for sub in subcats_of.get(s, []):
            sub_cors.setdefault(sub, []).extend(c)
            for cat, members in categories.items():
                if sub in members:
                    cat_cors.setdefault(cat, []).extend(c)
    everything = [x for c in correct.values() for x in c]
    ordered_subs = [s for group in categories.values() for s in group] + sorted(sub_cors)
    return {
        "subcategories": {s: sum(sub_cors[s]) / len(sub_cors[s]) for s in dict.fromkeys(ordered_subs) if s in sub_cors},
        "categories": {c: sum(v) / len(v) for c, v in ((c, cat_cors.get(c)) for c in categories) if v},
        "weighted_accuracy": sum(everything) / len(everything),
        "subjects": subject_acc,
        "n_questions": len(everything),
    }
