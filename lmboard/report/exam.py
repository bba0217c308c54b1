"""Exam result files, in the seed's format plus provenance.

- ``<subject>.csv``: the original columns plus ``<model>_correct`` and
  ``<model>_choiceA_probs`` .. ``D`` (as the original script writes them: it reads the
  CSV with header=None, so the original columns are named 0..5);
- ``accuracies_<model>.json``: ``subcategories``, ``categories``, ``weighted_accuracy``,
  ``cost_time``, plus per-subject accuracies and provenance;
- ``samples.jsonl``: one line per question.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lmboard.metrics.accuracy import exam_accuracy
from lmboard.tasks.exam import MCExam
from lmboard.tasks.exam_run import ExamResult, sample_key


def aggregate(result: ExamResult, exam: MCExam, data: Path) -> dict:
    """Accuracy per subject, subcategory and category, the question-weighted mean, the time."""
    subcats_of, cats = exam.categories(data)
    cors = {s: [result.samples[sample_key(q)]["correct"] for q in qs] for s, qs in result.questions.items()}
    acc = exam_accuracy(cors, subcats_of, cats)
    # the seed's key order: subcategories, categories, weighted_accuracy, cost_time
    return {k: acc[k] for k in ("subcategories", "categories", "weighted_accuracy")} | {
        "cost_time": result.cost_time, "subjects": acc["subjects"], "n_questions": acc["n_questions"]}


def safe_name(model: str) -> str:
    return model.replace("/", "_")


def write_exam_files(result: ExamResult, exam: MCExam, data: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    model = result.model
    acc = aggregate(result, exam, data)
    for subject, qs in result.questions.items():
        ncols = len(qs[0].row) if qs else 0
        with open(out / f"{subject}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(
                [*map(str, range(ncols)), f"{model}_correct"]
                + [f"{model}_choice{letter}_probs" for letter in exam.letters]
            )
            for q in qs:
                s = result.samples[sample_key(q)]
                w.writerow([*q.row, s["correct"], *s["probs"]])
    with open(out / "samples.jsonl", "w", encoding="utf-8") as f:
        for qs in result.questions.values():
            for q in qs:
                s = result.samples[sample_key(q)]
                rec = {"subject": q.subject, "index": q.index, **{k: v for k, v in s.items() if k not in ("subject", "index")}}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    doc = {**acc, "run_id": result.run_id, "provenance": result.provenance}
    (out / f"accuracies_{safe_name(model)}.json").write_text(json.dumps(doc, indent=4, ensure_ascii=False))
    return acc
