"""lmboard classify against lm-evaluation-harness's HF backend, ChnSentiCorp, label log-likelihood.

    pip install -e '.[bench]'
    python bench/classify_vs_lm_eval.py [--test-size N] [--shots 0,4]

Both tools score the same reviews of ../shared/data/chnsenticorp (the seeded split
lmboard's `--split 0.8 --seed 123` makes) with the SmolLM2 GGUF, by the summed
log-probability of each label's tokens after the prompt. The prompts are identical by
construction: lmboard renders them (template, balanced shots from the train split) and
lm-eval reads them from a generated JSONL task (doc_to_text "{{prompt}}", choices
负面/正面, target delimiter ""), so lm-eval's own few-shot machinery is not involved.
lm-eval runs its usual setting for this model (float32, batch 16); lmboard its defaults
(float32 for label log-likelihoods). Prints per setting: items/s for both (whole command;
lmboard's scoring phase too), the ratio, the agreement of predictions, the largest difference of
summed log-probabilities, both accuracies and macro-F1; last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "chnsenticorp" / "ChnSentiCorp_htl_all.csv"
sys.path.insert(0, str(ROOT))

from lmboard.metrics.classification import classification_report  # noqa: E402
from lmboard.tasks import classify  # noqa: E402

LABELS = {"0": "负面", "1": "正面"}
SEED = 123
TASK_YAML = """task: lmb_chnsenticorp_{shots}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {jsonl}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: {choices}
doc_to_target: "{{{{label}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
"""


def prompts(shots: int, test_size: int) -> tuple[list[classify.Example], list[str]]:
    """The test reviews and their prompts, as `lmboard eval --task classify` builds them."""
    settings = classify.ClassifySettings(LABELS, shots=shots, seed=SEED)
    examples, _ = classify.load_examples(DATA, "review", "label", LABELS)
    train, test = classify.split(examples, 0.8, SEED)
    test = test[:test_size]
    shot_rows = classify.pick_shots(train, settings)
    return test, [classify.render(settings, shot_rows, e.text) for e in test]


def run_lm_eval(tmp: Path, shots: int, test: list[classify.Example], texts: list[str]) -> tuple[dict, float]:
    from lmboard.models.aliases import SMOLLM2_FILE, smollm2_dir

    names = list(LABELS.values())
    jsonl = tmp / f"chnsenticorp_{shots}.jsonl"
    with open(jsonl, "w", encoding="utf-8") as f:
        for e, p in zip(test, texts, strict=True):
            f.write(json.dumps({"prompt": p, "label": names.index(e.label)}, ensure_ascii=False) + "\n")
    task = f"lmb_chnsenticorp_{shots}"
    (tmp / f"{task}.yaml").write_text(
        TASK_YAML.format(shots=shots, jsonl=jsonl, choices=json.dumps(names, ensure_ascii=False)), encoding="utf-8")
    out = tmp / f"lm_eval_{shots}.json"
    cmd = [sys.executable, str(ROOT / "bench" / "_lm_eval_child.py"), str(tmp), smollm2_dir(), SMOLLM2_FILE,
           "0", "none", str(out), task]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())["samples"][task], time.perf_counter() - t


def run_lmboard(tmp: Path, shots: int, test_size: int) -> tuple[dict, list[dict], float]:
    out = tmp / f"lmboard_{shots}"
    cmd = [str(Path(sys.executable).parent / "lmboard"), "eval", "smollm2", "--task", "classify", "--data", str(DATA),
           "--text-column", "review", "--label-column", "label", "--labels", "0=负面,1=正面",
           "--split", "0.8", "--seed", str(SEED), "--test-size", str(test_size), "--shots", str(shots),
           "--out", str(out), "--db", str(tmp / f"lmboard_{shots}.db"), "--quiet"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t
    res = json.loads((out / "classify.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    return res, samples, wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--test-size", type=int, default=500)
    ap.add_argument("--shots", default="0,4")
    args = ap.parse_args()
    names = list(LABELS.values())
    summary = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for shots in map(int, args.shots.split(",")):
            test, texts = prompts(shots, args.test_size)
            le, le_wall = run_lm_eval(tmp, shots, test, texts)
            res, samples, lb_wall = run_lmboard(tmp, shots, args.test_size)
            n = len(test)
            le_pred = {r["doc_id"]: names[max(range(len(names)), key=r["loglik"].__getitem__)] for r in le}
            le_ll = {r["doc_id"]: r["loglik"] for r in le}
            ours = {s["line"]: s for s in samples}
            same = sum(le_pred[i] == ours[e.line]["pred"] for i, e in enumerate(test))
            diff = max(abs(a - b) for i, e in enumerate(test) for a, b in zip(le_ll[i], ours[e.line]["scores"], strict=True))
            mismatched = sum(r["prompt"] != texts[r["doc_id"]] for r in le)
            le_m = classification_report([e.label for e in test], [le_pred[i] for i in range(n)], names)
            row = {
                "ratio": round(le_wall / lb_wall, 2),
                "agreement": round(same / n, 4),
                "max_loglik_diff": round(diff, 6),
                "lmboard_items_per_s": round(n / lb_wall, 2),
                "lm_eval_items_per_s": round(n / le_wall, 2),
                "accuracy": round(res["accuracy"], 4),
                "macro_f1": round(res["macro_f1"], 4),
            }
            eng = res["engine"] or {}
            print(f"\n== {shots}-shot, {n} reviews (split 0.8, seed {SEED}), by label log-likelihood ==")
            print(f"prompts identical: {n - mismatched}/{n}")
            print(f"lm-eval  (hf, fp32, batch 16): whole {le_wall:7.1f} s = {n / le_wall:6.2f} items/s;"
                  f" acc {le_m['accuracy']:.4f}, macro-F1 {le_m['macro_f1']:.4f}")
            print(f"lmboard  (defaults, {res['provenance']['dtype']}):    whole {lb_wall:7.1f} s = {n / lb_wall:6.2f} items/s;"
                  f" scoring {res['cost_time']:7.1f} s; acc {res['accuracy']:.4f}, macro-F1 {res['macro_f1']:.4f}")
            print(f"ratio: whole {row['ratio']}x; agreement {same / n:.2%}; largest |Δ summed log-prob| {diff:.2e}")
            print("lmboard engine: " + json.dumps({k: eng.get(k) for k in ("forward", "items", "tokens_run", "prefix_tokens_reused", "batches", "fallbacks")}))
            summary["zero_shot" if shots == 0 else f"{shots}_shot"] = row
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
