"""Child process for bench/yaml_vs_lm_eval.py and tests/e2e/test_harness_parity.py:
lm-evaluation-harness 0.4.13's HF backend on task YAMLs (run from the YAMLs' folder, as
their relative data files are read from the working directory).

Usage: python _yaml_lm_eval_child.py TASK_DIR MODEL_DIR GGUF_FILE LIMIT SHOTS OUT.json TASK [TASK ...]
(LIMIT, SHOTS: a number or none)
Writes timings, results and per-sample prompts, answers and metrics to OUT.json.
"""

import json
import os
import sys
import time


def _args(r: dict) -> list:
    """Each request's arguments, whichever way this lm-eval version logs them."""
    a = r["arguments"]
    if isinstance(a, dict):
        return [[v[k] for k in sorted(v)] for _, v in sorted(a.items(), key=lambda kv: int(kv[0].rsplit("_", 1)[1]))]
    return [list(x) for x in a]


def main() -> None:
    t_start = time.time()
    task_dir, model_dir, gguf, limit, shots, out_path, *tasks = sys.argv[1:]
    os.chdir(task_dir)
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model_dir, gguf_file=gguf, dtype="float32", batch_size=16, device="cpu")
    t_load = time.time()
    res = lm_eval.simple_evaluate(model=lm, tasks=tasks, batch_size=16, limit=int(limit) if limit != "none" else None,
                                  num_fewshot=int(shots) if shots != "none" else None,
                                  log_samples=True, task_manager=TaskManager(include_path=task_dir))
    t_eval = time.time()
    samples = {}
    for task, rows in res["samples"].items():
        samples[task] = []
        for r in rows:
            metrics = {m: r[m] for m in r.get("metrics", []) if m in r}
            samples[task].append({"doc_id": r["doc_id"], "filter": r["filter"], "prompt": _args(r)[0][0],
                                  "continuations": [a[1] for a in _args(r)] if isinstance(_args(r)[0][1], str) else None,
                                  "resps": r["resps"], "filtered_resps": r["filtered_resps"], "metrics": metrics})
    json.dump({"load_s": t_load - t_start, "eval_s": t_eval - t_load, "results": res["results"],
               "groups": res.get("groups"), "samples": samples}, open(out_path, "w"), default=str)


if __name__ == "__main__":
    main()
