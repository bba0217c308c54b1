"""Task YAMLs: lmboard against lm-evaluation-harness 0.4.13, same YAMLs, same local data,
SmolLM2-135M-Instruct in float32, one run on one machine.

    python bench/yaml_vs_lm_eval.py [--limit N]

(a) an MMLU subject written as a multiple_choice YAML (anatomy, 135 questions, 5 shots by
first_n); (b) a generate_until task with two regex filters and exact_match (50 arithmetic
word problems, 3 shots drawn at random); (c) a group of two MMLU subjects with its
weighted aggregate. For each: the whole command's time for both tools, the ratio, and the
share of (document, filter) pairs with an identical rendered prompt and identical
per-sample metrics. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness_parity import compare, run_lm_eval, run_lmboard  # noqa: E402

# the YAMLs' own num_fewshot: 5 for the MMLU subjects, 3 for the word problems
CASES = {"a": ("mmlu_local_anatomy", ["mmlu_local_anatomy"], None),
         "b": ("arith_words", ["arith_words"], None),
         "c": ("mmlu_local_pair", ["mmlu_local_anatomy", "mmlu_local_astronomy"], None)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--cases", default="a,b,c")
    a = ap.parse_args()
    cpu = next((x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} cores; load before: {os.getloadavg()[0]:.2f}; SmolLM2 float32")
    d = Path(tempfile.mkdtemp(prefix="yaml-bench-"))
    summary = {}
    for case in a.cases.split(","):
        task, leaves, shots = CASES[case]
        theirs, t_theirs = run_lm_eval([task], a.limit, d / f"{case}.json", shots)
        t_ours = run_lmboard(task, a.limit, d / case, d / "db", *(["--shots", str(shots)] if shots is not None else []))
        agree = [compare(theirs, d / case, t) for t in leaves]
        n = sum(x["n"] for x in agree)
        prompts, metrics = sum(x["prompts"] for x in agree), sum(x["metrics"] for x in agree)
        ours = json.loads((d / case / "results.json").read_text())["results"][task]
        key = next(k for k in ours if "," in k and "_stderr" not in k)
        print(f"({case}) {task}: lm-eval {t_theirs:.1f} s, lmboard {t_ours:.1f} s (whole commands): "
              f"{t_theirs / t_ours:.2f}x; identical prompts {prompts}/{n}, identical per-sample metrics {metrics}/{n}; "
              f"{key} lm-eval {theirs['results'][task][key]:.4f}, lmboard {ours[key]:.4f}")
        for x in agree:
            if x["first_diff"]:
                print(f"    first difference: {x['first_diff']}")
        summary[case] = {"task": task, "ratio": round(t_theirs / t_ours, 2), "prompts": prompts / n,
                         "metrics": metrics / n, "n": n}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
