"""ShopBench's metrics, computed as the official starter kit's ``metrics.py`` computes
them, and its aggregation (``local_evaluation.py``). Each quirk kept on purpose is
written where it happens; the two places where the kit would crash or return NaN are
marked as lmboard's choice.

Optional packages (``pip install 'lmboard[shopbench]'``): rouge-score (rougel),
sacrebleu (bleu; jp-bleu also needs mecab-python3 and ipadic), sentence-transformers
(sent-transformer, multilingual-sent-transformer).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from typing import Any

from lmboard.errors import UsageError

EMBEDDING_METRICS = ("sent-transformer", "multilingual-sent-transformer")
METRIC_NAMES = ("accuracy", "hit rate@3", "ndcg", "micro f1", "rougel", "bleu", "jp-bleu", *EMBEDDING_METRICS)
# What each metric needs beyond lmboard's own dependencies: (module, pip name).
NEEDS = {"rougel": [("rouge_score", "rouge-score")], "bleu": [("sacrebleu", "sacrebleu")],
         "jp-bleu": [("sacrebleu", "sacrebleu"), ("MeCab", "mecab-python3"), ("ipadic", "ipadic")],
         "sent-transformer": [("sentence_transformers", "sentence-transformers")],
         "multilingual-sent-transformer": [("sentence_transformers", "sentence-transformers")]}


def check_metric_packages(metrics: set[str]) -> None:
    """A metric whose package is missing is a one-line error naming the pip command, before any work."""
    for m in sorted(metrics):
        for module, pip in NEEDS.get(m, []):
            if importlib.util.find_spec(module) is None:
                raise UsageError(f"metric {m!r} needs the package {pip}: pip install 'lmboard[shopbench]'")


# The module each metric imports when it first scores (rouge_score pulls in nltk, which
# pulls in scipy and scikit-learn: over a second).
WARM = {"rougel": "rouge_score.rouge_scorer", "bleu": "sacrebleu", "jp-bleu": "sacrebleu"}


def warm_imports(metrics: set[str]) -> Any:
    """Import the metrics' packages on a thread while the model answers (its matrix
    products release the interpreter lock): the scoring then finds them imported. Returns
    the thread (a daemon: a failed import is raised again where the metric imports it)."""
    import threading

    def work() -> None:
        for m in sorted(metrics):
            if m in WARM:
                try:
                    importlib.import_module(WARM[m])
                except Exception:  # noqa: BLE001 - the scorer's own import reports it
                    return

    t = threading.Thread(target=work, name="lmboard-metric-imports", daemon=True)
    t.start()
    return t


def accuracy(pred: int, truth: int) -> float:
    return float(pred == truth)


def hit_rate_3(pred: Sequence[int], truth: Sequence[int]) -> float:
    # |truth ∩ first 3| / |truth|, over sets: a repeated guess counts once.
    return len(set(truth) & set(pred[:3])) / len(truth)


def ndcg(pred: Sequence[int], truth: Sequence[float]) -> float:
    """The kit's ndcg_eval: the prediction cut to the truth's length; gain 2^rel - 1 with
    rel = truth[item - 1] (the truth holds each candidate's relevance weight); log2 discount."""
    ranked = list(pred)[: len(truth)]
    dcg = 0.0
    for i, item in enumerate(ranked):
        # Kit quirk kept: only ``item - 1 < len(truth)`` is checked, so a predicted 0 reads
        # truth[-1], the last candidate's weight.
        rel = truth[item - 1] if item - 1 < len(truth) else 0
        dcg += (2.0 ** rel - 1) / math.log2(i + 2)
    # The kit sorts the truth list in place here (a second call on the same row would see
    # it sorted); lmboard sorts a copy.
    idcg = sum((2.0 ** rel - 1) / math.log2(i + 2) for i, rel in enumerate(sorted(truth, reverse=True)))
    # lmboard's choice: 0 when the ideal DCG is 0 (the kit divides and gets NaN).
    return dcg / idcg if idcg else 0.0


def tp_fp_fn(pred: Sequence[str], truth: Sequence[str]) -> tuple[int, int, int]:
    # Predictions are lowercased and stripped of spaces, the truth only lowercased; TP
    # over sets, FP over the list (a repeated entity is one TP and one FP).
    answer = [a.lower().strip(" ") for a in pred]
    truth_l = [t.lower() for t in truth]
    tp = len(set(answer) & set(truth_l))
    return tp, len(answer) - tp, len(truth_l) - tp


def micro_f1(counts: Sequence[tuple[int, int, int]]) -> float:
    tp = sum(c[0] for c in counts)
    fp = sum(c[1] for c in counts)
    fn = sum(c[2] for c in counts)
    # lmboard's choice: precision 0 when nothing was predicted (the kit divides by zero).
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def rougel(pred: str, truth: str) -> float:
    from rouge_score import rouge_scorer

    # The kit passes (generation, truth) as rouge_score's (target, prediction): F-measure
    # is symmetric, so the score is the same. rouge_score's tokenizer keeps [a-z0-9] only,
    # so a non-English answer scores 0.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(pred, truth)["rougeL"].fmeasure


def bleu(pred: str, truth: str, tokenize: str = "13a") -> float:
    """sacrebleu's corpus BLEU of one sentence, as ``evaluate.load("sacrebleu")`` computes it
    (smooth_method="exp", lowercase, no effective order), divided by 100. Only the answer's
    first line counts (after leading newlines are dropped)."""
    import sacrebleu

    line = pred.lstrip("\n").rstrip("\n").split("\n")[0]
    return sacrebleu.corpus_bleu([line], [[truth]], smooth_method="exp", smooth_value=None, force=False,
                                 lowercase=True, use_effective_order=False, tokenize=tokenize).score / 100


def cosine_floor(gen: Any, truths: Sequence[Any]) -> float:
    """The kit's sent_transformer on embeddings: cosine with each truth; a list truth is
    averaged; floored at 0."""
    import numpy as np

    scores = [float((gen * t).sum() / (np.linalg.norm(gen, ord=2) * np.linalg.norm(t, ord=2))) for t in truths]
    mean = sum(scores) / len(scores)
    return mean if mean > 0 else 0.0


Embed = Callable[[str, list[str]], dict[str, Any]]  # (metric, texts) -> text -> embedding


def score_rows(metrics: Sequence[str], preds: Sequence[Any], truths: Sequence[Any], embed: Embed | None) -> list[Any]:
    """Each row's score under its own metric (a (tp, fp, fn) triple for micro f1)."""
    vectors: dict[str, dict[str, Any]] = {}
    for m in EMBEDDING_METRICS:
        texts = {t for mm, p, tr in zip(metrics, preds, truths, strict=True) if mm == m
                 for t in [p, *([tr] if isinstance(tr, str) else tr)]}
        if texts:
            if embed is None:
                raise UsageError(f"metric {m!r} needs an embedding model (--embedder {m}=PATH)")
            vectors[m] = embed(m, sorted(texts))
    out: list[Any] = []
    for m, p, t in zip(metrics, preds, truths, strict=True):
        if m in EMBEDDING_METRICS:
            v = vectors[m]
            out.append(cosine_floor(v[p], [v[x] for x in ([t] if isinstance(t, str) else t)]))
        else:
            out.append(ROW_METRICS[m](p, t))
    return out


ROW_METRICS: dict[str, Callable[[Any, Any], Any]] = {
    "accuracy": accuracy, "hit rate@3": hit_rate_3, "ndcg": ndcg, "micro f1": tp_fp_fn, "rougel": rougel,
    "bleu": bleu, "jp-bleu": lambda p, t: bleu(p, t, tokenize="ja-mecab"),
}


def aggregate(rows: Sequence[dict]) -> dict:
    """The kit's aggregation. ``rows``: dicts with task, metric, track and score, in data order.

    Rows are grouped by task in order of first appearance; a task is labelled with its
    first row's metric (the kit's quirk: task17 mixes bleu and jp-bleu rows, each scored
    with its own metric, and is labelled bleu) and that label decides the aggregation:
    the mean of the rows' scores, or for micro f1 the F1 of the summed counts. The overall
    score is the mean of the task scores. Per-track means of the task scores (a task's
    track is its first row's) are reported beside it, as the challenge's README describes."""
    tasks: dict[str, dict] = {}
    for r in rows:
        t = tasks.setdefault(r["task"], {"task": r["task"], "metric": r["metric"], "type": r["type"],
                                         "track": r.get("track"), "row_metrics": [], "scores": []})
        t["scores"].append(r["score"])
        if r["metric"] not in t["row_metrics"]:
            t["row_metrics"].append(r["metric"])
    out = []
    for t in tasks.values():
        sc = t.pop("scores")
        score = micro_f1(sc) if t["metric"] == "micro f1" else sum(float(s) for s in sc) / len(sc)
        note = (f"labelled {t['metric']} after its first row, as the kit does; rows scored with "
                f"{', '.join(t['row_metrics'])}") if len(t["row_metrics"]) > 1 else None
        out.append({**t, "n": len(sc), "score": score, **({"note": note} if note else {})})
    tracks: dict[str, list[float]] = {}
    for t in out:
        tracks.setdefault(t["track"] or "none", []).append(t["score"])
    return {"tasks": out, "overall": sum(t["score"] for t in out) / len(out) if out else float("nan"),
            "tracks": {k: {"score": sum(v) / len(v), "tasks": len(v)} for k, v in tracks.items()},
            "tracks_note": "per-track means of task scores (the challenge README's track score), not the kit's output"}
