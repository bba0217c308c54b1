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

from lmboard.errors import UsageError
from lmboard.tasks.exam import MCExam
from lmboard.tasks.exam_run import ExamResult, sample_key


def aggregate(result: ExamResult, exam: MCExam, data: Path) -> dict:
    """Accuracy per subject, subcategory and category, and the question-weighted mean.

    Only groups with at least one scored question appear (the original prints NaN for
    the others).
    """
    subcats_of, cats = exam.categories(data)
    cors = {s: [result.samples[sample_key(q)]["correct"] for q in qs] for s, qs in result.questions.items()}
    subject_acc = {s: sum(c) / len(c) for s, c in cors.items() if c}
    sub_cors: dict[str, list[bool]] = {}
    cat_cors: dict[str, list[bool]] = {}
    for s, c in cors.items():
        for sub in subcats_of.get(s, []):
            sub_cors.setdefault(sub, []).extend(c)
            for cat, members in cats.items():
                if sub in members:
                    cat_cors.setdefault(cat, []).extend(c)
    everything = [x for c in cors.values() for x in c]
    ordered_subs = [s for group in cats.values() for s in group] + sorted(sub_cors)
    return {
        "subcategories": {s: sum(sub_cors[s]) / len(sub_cors[s]) for s in dict.fromkeys(ordered_subs) if s in sub_cors},
        "categories": {c: sum(v) / len(v) for c, v in ((c, cat_cors.get(c)) for c in cats) if v},
        "weighted_accuracy": sum(everything) / len(everything),
        "cost_time": result.cost_time,
        "subjects": subject_acc,
        "n_questions": len(everything),
    }


def safe_name(model: str) -> str:
    return model.replace("/", "_")


def ensure_writable(out: Path) -> None:
    """Fail before the work, not after it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".lmboard-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"--out: cannot write to {out} ({e.strerror or e})") from e


def write_exam_files(result: ExamResult, exam: MCExam, data: Path, out: Path) -> dict:
    ensure_writable(out)
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
