"""Filters, per-sample metrics and their aggregation, as lm-evaluation-harness 0.4.13
computes them for the metrics lmboard supports; any other name is a one-line error.

Kept as the harness has them (they change numbers): acc_norm divides a choice's
log-likelihood by its length in characters, acc_bytes by its UTF-8 bytes; exact_match
applies regexes_to_ignore, then lowercases, then strips punctuation; a generation's gold
is cast to text; a stderr is the sample standard deviation over the square root of n (for
mean-aggregated metrics; corpus metrics such as BLEU get none, where the harness draws a
bootstrap). ``rouge1/rouge2/rougeL`` (rouge-score) and ``math_verify`` (math-verify,
where installed) are lmboard's additions for generations: means of per-sample scores."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from lmboard.errors import UsageError

MC_METRICS = ("acc", "acc_norm", "acc_bytes", "exact_match", "f1", "mcc")
LL_METRICS = ("acc", "perplexity")
GEN_METRICS = ("exact_match", "bleu", "chrf", "ter", "rouge1", "rouge2", "rougeL", "math_verify")
DEFAULTS = {"multiple_choice": ["acc", "acc_norm"], "loglikelihood": ["perplexity", "acc"],
            "generate_until": ["exact_match"]}
LOWER_BETTER = {"perplexity", "ter"}
CORPUS = {"bleu", "chrf", "ter", "f1", "mcc"}


# ---- filters
def _regex(regex_pattern: str = r"#### (\-?[0-9\.\,]+)", group_select: int = 0, fallback: str = "[invalid]"):
    rx = re.compile(regex_pattern)

    def one(resp: Any) -> str:
        match = rx.findall(resp if isinstance(resp, str) else "")
        if not match:
            return fallback
        m = match[group_select]
        if isinstance(m, tuple):
            m = next((x for x in m if x), fallback)
        return m.strip()

    return lambda resps: [one(r) for r in resps]


FILTERS: dict[str, Callable[..., Callable[[list], Any]]] = {
    "regex": _regex,
    "take_first": lambda: lambda resps: resps[0],
    "lowercase": lambda: lambda resps: [r.lower() for r in resps],
    "uppercase": lambda: lambda resps: [r.upper() for r in resps],
    "remove_whitespace": lambda: lambda resps: [r.strip() for r in resps],
    "majority_vote": lambda: lambda resps: [Counter(resps).most_common(1)[0][0]],
}


def build_filters(cfg: dict, where: str) -> list[tuple[str, list[Callable]]]:
    """(name, steps) of each filter pipeline; none given: the harness's "none" (take_first)."""
    pipes = cfg.get("filter_list")
    if not pipes:
        return [("none", [FILTERS["take_first"]()])]
    out = []
    for p in pipes:
        steps = []
        for f in p.get("filter") or []:
            name = f.get("function")
            if name not in FILTERS:
                raise UsageError(f"{where}: filter function {name!r} is not supported ({', '.join(FILTERS)})")
            try:
                steps.append(FILTERS[name](**{k: v for k, v in f.items() if k != "function"}))
            except TypeError as e:
                raise UsageError(f"{where}: filter {name}: {e}") from None
        out.append((str(p.get("name", "none")), steps))
    return out


def apply_filters(steps: list[Callable], resps: list) -> Any:
    x: Any = list(resps)
    for step in steps:
        x = step(x)
    return x


# ---- metrics
def exact_match(pred: str, gold: str, regexes_to_ignore: Sequence[str] | None = None, ignore_case: bool = False,
                ignore_punctuation: bool = False, ignore_numbers: bool = False) -> float:
    for rx in regexes_to_ignore or ():
        pred, gold = re.sub(rx, "", pred), re.sub(rx, "", gold)
    if ignore_case:
        pred, gold = pred.lower(), gold.lower()
    if ignore_punctuation:
        table = str.maketrans("", "", string.punctuation)
        pred, gold = pred.translate(table), gold.translate(table)
    if ignore_numbers:
        table = str.maketrans("", "", string.digits)
        pred, gold = pred.translate(table), gold.translate(table)
    return float(pred == gold)


def metric_list(cfg: dict, where: str) -> list[dict]:
    """[{metric, aggregation, higher_is_better, kwargs}] of the task, checked."""
    out_type = cfg.get("output_type", "generate_until")
    allowed = {"multiple_choice": MC_METRICS, "loglikelihood": LL_METRICS, "generate_until": GEN_METRICS}[out_type]
    entries = cfg.get("metric_list") or [{"metric": m} for m in DEFAULTS[out_type]]
    out = []
    for e in entries:
        name = e.get("metric") if isinstance(e, dict) else None
        if not isinstance(name, str) or name not in allowed:
            raise UsageError(f"{where}: metric {name!r} is not supported for {out_type} "
                             f"(lmboard computes: {', '.join(allowed)})")
        if e.get("hf_evaluate"):
            raise UsageError(f"{where}: metric {name}: hf_evaluate is not supported (lmboard computes {name} itself)")
        agg = e.get("aggregation", "mean" if name not in CORPUS | {"perplexity"} else None)
        kwargs = {k: v for k, v in e.items() if k not in ("metric", "aggregation", "higher_is_better", "hf_evaluate")}
        if kwargs and name != "exact_match":
            raise UsageError(f"{where}: metric {name}: options {', '.join(kwargs)} are not supported")
        if name == "math_verify":
            _math_verify()
        out.append({"metric": name, "aggregation": agg, "kwargs": kwargs,
                    "higher_is_better": e.get("higher_is_better", name not in LOWER_BETTER)})
    return out


def _math_verify():
    try:
        import math_verify
    except ImportError as e:
        from lmboard.errors import MissingDependency

        raise MissingDependency("math-verify (the math_verify metric)", "math-verify") from e
    return math_verify


def choice_metrics(lls: list[float], greedy: list[bool], choices: list[str], gold: Any, names: list[str]) -> dict:
    """multiple_choice: the harness's process_results."""
    import numpy as np

    pred = int(np.argmax(lls))
    norm = int(np.argmax(np.array(lls) / np.array([float(len(c)) for c in choices])))
    byte = int(np.argmax(np.array(lls) / np.array([float(len(c.encode("utf-8"))) for c in choices])))
    if isinstance(gold, str):
        gold = choices.index(gold) if gold in choices else -100
    golds = gold if isinstance(gold, list) else [gold]
    golds = [g if isinstance(g, int) and g < len(choices) else -100 for g in golds]
    one = golds[0] if not isinstance(gold, list) else None
    hit = (lambda p: float(p in golds)) if one is None else (lambda p: float(p == one))
    em = int(any(greedy[g] for g in golds if g != -100))
    out = {"acc": hit(pred), "acc_norm": hit(norm), "acc_bytes": hit(byte), "exact_match": em,
           "f1": (one, pred), "mcc": (one, pred)}
    return {k: out[k] for k in names}


def generation_metrics(pred: Any, gold: Any, entries: list[dict]) -> dict:
    """generate_until: each metric of the filtered answer against the gold (a list of golds:
    right if any is)."""
    golds = gold if isinstance(gold, list) else [gold]
    out: dict[str, Any] = {}
    for e in entries:
        name = e["metric"]
        if name in ("bleu", "chrf", "ter"):
            out[name] = (str(golds[0]), str(pred))
            continue
        scores = [_sample_score(name, str(pred), str(g), e["kwargs"]) for g in golds]
        out[name] = (1.0 if any(scores) else 0.0) if isinstance(gold, list) else scores[0]
    return out


def _sample_score(name: str, pred: str, gold: str, kwargs: dict) -> float:
    if name == "exact_match":
        return exact_match(pred, gold, **kwargs)
    if name.startswith("rouge"):
        from rouge_score import rouge_scorer

        return rouge_scorer.RougeScorer([name]).score(gold, pred)[name].fmeasure
    mv = _math_verify()
    return float(mv.verify(mv.parse(gold), mv.parse(pred)))


def aggregate(name: str, items: list) -> float:
    if name == "perplexity":
        return math.exp(-sum(items) / len(items))
    if name in ("bleu", "chrf", "ter"):
        import sacrebleu

        refs, preds = [[r for r, _ in items]], [p for _, p in items]
        fn = {"bleu": sacrebleu.corpus_bleu, "chrf": sacrebleu.corpus_chrf, "ter": sacrebleu.corpus_ter}[name]
        return fn(preds, refs).score
    if name in ("f1", "mcc"):
        from sklearn.metrics import f1_score, matthews_corrcoef

        golds, preds = [g for g, _ in items], [p for _, p in items]
        return float(f1_score(golds, preds) if name == "f1" else matthews_corrcoef(golds, preds))
    return sum(items) / len(items)


def stderr(name: str, items: list) -> float | str:
    if name in CORPUS or name == "perplexity" or len(items) < 2:
        return "N/A"
    mu = sum(items) / len(items)
    return math.sqrt(sum((x - mu) ** 2 for x in items) / (len(items) - 1)) / math.sqrt(len(items))
