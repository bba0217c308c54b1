"""lmboard and lm-evaluation-harness 0.4.13 on the same task YAMLs and local data: both
run (lm-eval in a child process, from the YAMLs' folder), then every rendered prompt and
every per-sample metric compared. Used by tests/e2e/test_harness_parity.py and
bench/yaml_vs_lm_eval.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tests" / "fixtures" / "harness"


def smollm2() -> tuple[str, str]:
    from lmboard.models.aliases import smollm2_dir

    return smollm2_dir(), "SmolLM2-135M-Instruct.Q4_1.gguf"


def run_lm_eval(tasks: list[str], limit: int | None, out: Path, shots: int | None = None) -> tuple[dict, float]:
    folder, gguf = smollm2()
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "_yaml_lm_eval_child.py"), str(TASKS), folder, gguf,
                        str(limit or "none"), "none" if shots is None else str(shots), str(out), *tasks], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"lm-eval failed:\n{r.stderr[-3000:]}")
    return json.loads(out.read_text()), time.perf_counter() - t0


def run_lmboard(task: str, limit: int | None, out: Path, db: Path, *extra: str) -> float:
    t0 = time.perf_counter()
    args = [sys.executable, "-m", "lmboard", "eval", "smollm2,dtype=float32", "--task", task, "--include-path",
            str(TASKS), "--out", str(out), "--db", str(db), "--quiet", *extra]
    if limit:
        args += ["--limit", str(limit)]
    r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"lmboard failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def lmboard_samples(out: Path, task: str) -> dict[tuple[int, str], dict]:
    rows = [json.loads(x) for x in (out / f"samples_{task}.jsonl").read_text(encoding="utf-8").splitlines()]
    return {(r["doc_id"], r["filter"]): r for r in rows}


def compare(theirs: dict, out: Path, task: str) -> dict:
    """Per (document, filter): the prompt, the filtered answer and each metric."""
    ours = lmboard_samples(out, task)
    n = same_prompt = same_metrics = same_answer = 0
    first_diff = None
    for s in theirs["samples"][task]:
        mine = ours.get((s["doc_id"], s["filter"]))
        n += 1
        if mine is None:
            first_diff = first_diff or f"{task} doc {s['doc_id']} ({s['filter']}): not in lmboard's samples"
            continue
        same_prompt += mine["prompt"] == s["prompt"]
        answer = s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) and s["filtered_resps"] and \
            isinstance(s["filtered_resps"][0], str) else None
        if answer is not None:
            same_answer += mine["filtered_resps"] == answer
        else:
            same_answer += 1
        same = all(float(mine[m]) == float(v) for m, v in s["metrics"].items())
        same_metrics += same
        if not (same and mine["prompt"] == s["prompt"]) and first_diff is None:
            first_diff = (f"{task} doc {s['doc_id']} ({s['filter']}): prompts equal {mine['prompt'] == s['prompt']}; "
                          f"lm-eval {s['metrics']} {answer!r}, lmboard {[mine[m] for m in s['metrics']]} "
                          f"{mine['filtered_resps']!r}")
    return {"n": n, "prompts": same_prompt, "answers": same_answer, "metrics": same_metrics, "first_diff": first_diff}
