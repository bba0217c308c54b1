"""A store holding runs in the shapes the real jobs write (exam, classify, judge, speed),
for board tests that need no model."""

from __future__ import annotations

from lmboard.store import Store

XSS = ['<script>window.__xss = 1</script>', '"><img src=x onerror="window.__xss = 2">',
       '**bold** <b onmouseover="window.__xss = 3">html</b> [link](javascript:window.__xss=4)']


def prov(label: str, dtype: str, adapter: str | None = None) -> dict:
    return {"model_spec": {"backend": "hf", "name": f"/models/{label}", "label": label, "adapter": adapter,
                           "dtype": dtype}, "dtype": dtype, "versions": {"lmboard": "test"},
            "prompt_template_hash": "abc123"}


def exam_run(store: Store, rid: str, label: str, dtype: str, answers: dict[str, list[bool]], shots: int = 5) -> None:
    """answers: subject -> correct per question."""
    cfg = {"exam": {"task": "mmlu", "data": "/data/mmlu", "subjects": sorted(answers), "limit": None, "shots": shots,
                    "letter_token": "spaced", "chat": False, "max_length": None}, "template": "t1"}
    store.open_run(rid, "exam", label, cfg, prov(label, dtype))
    store.add_samples(rid, [(f"{s}/{i}", {"subject": s, "index": i, "correct": c, "pred": "A" if c else "B",
                                          "gold": "A", "probs": [0.7, 0.1, 0.1, 0.1]})
                            for s, xs in answers.items() for i, c in enumerate(xs)])
    n = sum(len(x) for x in answers.values())
    store.finish_run(rid, {"weighted_accuracy": sum(sum(x) for x in answers.values()) / n,
                           "categories": {"STEM": sum(answers["astronomy"]) / len(answers["astronomy"])}
                           if "astronomy" in answers else {}})


def judge_run(store: Store, rid: str, gen: str, win: float, outputs: list[str]) -> None:
    cfg = {"generator": gen, "judge": "{}", "reference": "gpt4", "mode": "pairwise", "lang": "en", "seed": 0,
           "both_orders": False}
    store.open_run(rid, "judge", gen, cfg, {"judge_spec": {"label": "smollm2"}})
    store.add_samples(rid, [(f"{i:06d}", {"instruction": f"say {o}", "output": o, "reference": "ref",
                                          "preference": 2.0}) for i, o in enumerate(outputs)])
    store.finish_run(rid, {"name": gen, "win_rate": win, "win_rate_ci_low": win - 5, "win_rate_ci_high": win + 5,
                           "length_controlled_winrate": float("nan"), "lc_standard_error": float("nan"),
                           "n_total": len(outputs), "judge": "smollm2", "reference": "gpt4"})


def speed_run(store: Store, rid: str, label: str, dtype: str, tps: float, mem: float) -> None:
    store.open_run(rid, "speed", label, {"settings": {"prompt_tokens": 256, "new_tokens": 64, "scheduler": "continuous"}},
                   prov(label, dtype))
    rows = [{"batch_size": b, "decode_tokens_per_s": tps * b ** 0.5, "ttft_s": {"median": 0.1 * b},
             "peak_rss_mb": mem} for b in (1, 16)]
    store.finish_run(rid, {"results": rows, "hardware": {"processor": "test cpu"}})


def generate_run(store: Store, rid: str, label: str, dtype: str) -> None:
    store.open_run(rid, "generate", label, {}, prov(label, dtype))
    store.finish_run(rid, {"n": 3})


def sample_store(path) -> Store:
    s = Store(path)
    exam_run(s, "mmlu-a", "model-a", "bfloat16", {"anatomy": [True] * 8 + [False] * 2, "astronomy": [True] * 6 + [False] * 4})
    exam_run(s, "mmlu-b", "model-b", "float32", {"anatomy": [True] * 5 + [False] * 5, "astronomy": [True] * 3 + [False] * 7})
    exam_run(s, "mmlu-c", "model-c", "bfloat16", {"anatomy": [True] * 7 + [False] * 3}, shots=0)
    generate_run(s, "gen-a", "model-a", "bfloat16")
    judge_run(s, "judge-a", "model-a", 62.5, XSS)
    judge_run(s, "judge-x", XSS[1], 12.0, ["fine"])
    speed_run(s, "speed-a", "model-a", "bfloat16", 30.0, 900.0)
    speed_run(s, "speed-b", "model-b", "float32", 20.0, 1400.0)
    return s


def classify_run(store: Store, rid: str, label: str, dtype: str, data, rows: dict[int, tuple[str, str]]) -> None:
    """rows: line -> (gold, pred); the texts are the data file's (as a real run's)."""
    settings = {"labels": {"0": "负面", "1": "正面"}, "template": None, "shots": 0, "by": "loglik", "normalize": "none",
                "seed": 123}
    store.open_run(rid, "classify", label, {"data": str(data), "settings": settings, "test": "t"},
                   {**prov(label, dtype), "columns": {"text": "review", "label": "label"}})
    store.add_samples(rid, [(str(n), {"gold": g, "pred": p, "scores": [-1.0, -2.0]}) for n, (g, p) in rows.items()])
    right = sum(g == p for g, p in rows.values())
    store.finish_run(rid, {"accuracy": right / len(rows), "macro_f1": 0.5, "n": len(rows), "unmatched": 0})


def big_store(path, n_models: int = 30, n_subjects: int = 12) -> Store:
    """30 models over MMLU and CMMLU 5-shot (12 subjects each, so 4 category columns each),
    a judged run and a speed run each: 12+ columns, every pair comparable."""
    s = Store(path)
    for m in range(n_models):
        label = f"model-{m:02d}-with-a-rather-long-name"
        subjects = {f"subject_{i}": [(q * (m + 3) + i) % 7 < 3 + m % 4 for q in range(10)] for i in range(n_subjects)}
        subjects["astronomy"] = subjects.pop("subject_0")
        exam_run(s, f"mmlu-{m}", label, "bfloat16", subjects)
        cfg = {"exam": {"task": "cmmlu", "data": "/data/cmmlu", "subjects": sorted(subjects), "limit": None, "shots": 5,
                        "letter_token": "spaced", "chat": False, "max_length": None}, "template": "t1"}
        rid = f"cmmlu-{m}"
        s.open_run(rid, "exam", label, cfg, prov(label, "bfloat16"))
        s.add_samples(rid, [(f"{k}/{i}", {"subject": k, "index": i, "correct": c, "pred": "A", "gold": "A"})
                            for k, xs in subjects.items() for i, c in enumerate(xs)])
        s.finish_run(rid, {"categories": {"STEM": 0.3, "人文学科": 0.4, "社会科学": 0.35, "其他": 0.25,
                                          "中国特定主题": 0.3 + m / 100}})
        generate_run(s, f"gen-{m}", label, "bfloat16")
        judge_run(s, f"judge-{m}", label, 20.0 + m, ["fine"] * 4)
        speed_run(s, f"speed-{m}", label, "bfloat16", 20.0 + m, 800.0 + 10 * m)
    return s
