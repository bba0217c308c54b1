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
