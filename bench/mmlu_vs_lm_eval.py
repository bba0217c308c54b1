"""lmboard eval against lm-evaluation-harness's HF backend, MMLU, same model, same prompts.

    pip install -e '.[bench]'
    python bench/mmlu_vs_lm_eval.py [--subjects a,b] [--limit N] [--shots 0,5] [--fp32-check] [--vllm]

--vllm adds a row per setting: `lmboard eval vllm:FOLDER` against `lm_eval --model vllm` on
the same folder (the GGUF unpacked to float32 safetensors), dtype and questions, both in
the vLLM environment (.venv-vllm, with lm-eval==0.4.13 installed there).

Both tools score the same questions of ../shared/data/mmlu with the SmolLM2 GGUF and
identical prompts: a generated lm-eval task YAML per subject (description = the
original header, fewshot_split: test, sampler first_n, target delimiter " ", letter
choices). lm-eval runs with batch size 16 in float32; lmboard with its defaults.
Prints per setting: items/s (scoring phase, whole command), ratio, agreement,
accuracies, lmboard's achieved FLOP/s against a matmul peak measured here; last line:
one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mmlu"
DEFAULT_SUBJECTS = "abstract_algebra,anatomy,astronomy,college_biology,high_school_geography"
sys.path.insert(0, str(ROOT))

from lmboard.tasks.mmlu import MMLU, format_subject  # noqa: E402

TASK_YAML = """task: lmb_mmlu_{subject}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {jsonl}
test_split: test
fewshot_split: test
fewshot_config:
  sampler: first_n
output_type: multiple_choice
description: {description}
doc_to_text: "{{{{question}}}}\\nA. {{{{A}}}}\\nB. {{{{B}}}}\\nC. {{{{C}}}}\\nD. {{{{D}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: "{{{{['A', 'B', 'C', 'D'].index(answer)}}}}"
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
metric_list:
  - metric: acc
"""


def write_tasks(tmp: Path, subjects: list[str]) -> None:
    for s in subjects:
        jsonl = tmp / f"{s}.jsonl"
        with open(DATA / "test" / f"{s}_test.csv", newline="", encoding="utf-8") as f, open(jsonl, "w") as g:
            for row in csv.reader(f):
                g.write(json.dumps(dict(zip(["question", "A", "B", "C", "D", "answer"], row, strict=True))) + "\n")
        desc = json.dumps(f"The following are multiple choice questions (with answers) about {format_subject(s)}.\n\n")
        (tmp / f"lmb_mmlu_{s}.yaml").write_text(TASK_YAML.format(subject=s, jsonl=jsonl, description=desc))


def matmul_peak(dtype_name: str, budget_s: float = 20.0) -> float:
    """The best 2048^3 matmul rate in ``dtype_name`` within about ``budget_s`` seconds
    (on a CPU without native bfloat16, one bfloat16 matmul takes seconds)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(2048, 2048, dtype=dtype)
    b = torch.randn(2048, 2048, dtype=dtype)
    a @ b
    best, start = 0.0, time.perf_counter()
    for _ in range(20):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * 2048**3 / (time.perf_counter() - t))
        if time.perf_counter() - start > budget_s:
            break
    return best


def run_lm_eval(tmp: Path, subjects: list[str], shots: int, limit: str) -> tuple[dict, float]:
    from lmboard.models.aliases import SMOLLM2_FILE, smollm2_dir

    out = tmp / f"lm_eval_{shots}.json"
    cmd = [sys.executable, str(ROOT / "bench" / "_lm_eval_child.py"), str(tmp), smollm2_dir(), SMOLLM2_FILE,
           str(shots), limit, str(out), *[f"lmb_mmlu_{s}" for s in subjects]]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text()), time.perf_counter() - t


def run_lmboard(tmp: Path, subjects: list[str], shots: int, limit: str, extra: list[str]) -> tuple[dict, list, float]:
    tag = f"{shots}{'_'.join(extra)}"
    out = tmp / f"lmboard_{tag}"
    cmd = [str(Path(sys.executable).parent / "lmboard"), "eval", "smollm2", "--data", str(DATA),
           "--subjects", ",".join(subjects), "--shots", str(shots), "--out", str(out),
           "--db", str(tmp / f"lmboard_{tag}.db"), "--quiet", *extra]
    if limit != "none":
        cmd += ["--limit", limit]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t
    acc = json.loads(next(out.glob("accuracies_*.json")).read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return acc, samples, wall


def vllm_env() -> dict:
    import os

    cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    return {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", cores),
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4"),
            "VLLM_LOGGING_LEVEL": "WARNING",
            "VLLM_CACHE_ROOT": str(Path.home() / ".cache" / "lmboard-bench" / "vllm")}


def vllm_row(tmp: Path, subjects: list[str], shots: int, limit: str, vpy: Path, folder: str, dtype: str) -> dict:
    """``lm_eval --model vllm`` and ``lmboard eval vllm:`` on the same folder, dtype and questions."""
    out = tmp / f"lm_eval_vllm_{shots}.json"
    cmd = [str(vpy), str(ROOT / "bench" / "_lm_eval_child.py"), str(tmp), folder, f"vllm:{dtype}", str(shots), limit,
           str(out), *[f"lmb_mmlu_{s}" for s in subjects]]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=vllm_env())
    le_wall, le = time.perf_counter() - t, json.loads(out.read_text())
    lb_out = tmp / f"lmboard_vllm_{shots}"
    cmd = [str(vpy), "-m", "lmboard", "eval", f"vllm:{folder},dtype={dtype},max_model_len=2048", "--data", str(DATA),
           "--subjects", ",".join(subjects), "--shots", str(shots), "--out", str(lb_out),
           "--db", str(tmp / f"lmboard_vllm_{shots}.db"), "--quiet"] + (["--limit", limit] if limit != "none" else [])
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=vllm_env(), cwd=ROOT)
    lb_wall = time.perf_counter() - t
    acc = json.loads(next(lb_out.glob("accuracies_*.json")).read_text())
    samples = [json.loads(line) for line in (lb_out / "samples.jsonl").read_text().splitlines()]
    agree, total, _ = compare(subjects, le, samples, None)
    eng = acc["provenance"]["engine"]  # lmboard starts the engine at its first request: inside cost_time
    scoring = acc["cost_time"] - eng.get("engine_start_s", 0.0)
    le_acc = sum(("ABCD"[max(range(4), key=r["loglik"].__getitem__)] == "ABCD"[int(r["target"])])
                 for rows in le["samples"].values() for r in rows) / max(total, 1)
    print(f"lm-eval  (vllm, {dtype}):         whole {le_wall:7.1f} s = {total / le_wall:6.2f} items/s;"
          f" scoring {le['eval_s']:7.1f} s; engine start {le['load_s']:.1f} s (compiled); acc {le_acc:.4f}")
    print(f"lmboard  (vllm, {dtype}):         whole {lb_wall:7.1f} s = {len(samples) / lb_wall:6.2f} items/s;"
          f" scoring {scoring:7.1f} s; engine start {eng.get('engine_start_s', 0.0):.1f} s"
          f"{' (eager)' if eng.get('enforce_eager') else ' (compiled)'}; acc {acc['weighted_accuracy']:.4f};"
          f" {eng.get('requests')} requests")
    print(f"vllm ratio: whole {le_wall / lb_wall:.2f}x, scoring {le['eval_s'] / scoring:.2f}x; "
          f"agreement {agree:.2%} ({total} questions)")
    return {"vllm_ratio": round(le_wall / lb_wall, 2), "vllm_scoring_ratio": round(le["eval_s"] / scoring, 2),
            "vllm_agreement": round(agree, 4)}


def flops(acc: dict, float32_only: bool = False) -> float:
    """FLOPs of the tokens lmboard ran: 2 x non-embedding parameters per token, plus
    attention (4 x layers x hidden x attended length per token, approximated with the
    mean prompt length), plus the LM head on the scored rows. ``float32_only``: of the
    tokens the float32 twin ran (prefixes and rescored questions; heads not counted)."""
    eng = acc["provenance"]["engine"]
    hidden, layers, inter, vocab = 576, 30, 1536, 49152  # SmolLM2-135M
    kv = 192
    per_token = 2 * layers * (hidden * (hidden + 2 * kv + hidden) + 3 * hidden * inter)
    mean_ctx = (eng["tokens_run"] + eng["prefix_tokens_reused"]) / max(eng["items"], 1)
    attn = 4 * layers * hidden * mean_ctx
    if float32_only:
        return eng.get("float32_tokens", 0) * (per_token + attn)
    return eng["tokens_run"] * (per_token + attn) + eng["items"] * 2 * hidden * vocab


def ceiling_share(acc: dict, peak: float) -> float:
    """The largest share of the bfloat16 peak this run's work allows: its float32 FLOPs
    (the twin's prefixes and rescored questions: what makes the answers float32's) at the
    best float32 matmul rate measured here, every other FLOP at the bfloat16 peak, and
    nothing else (no attention kernel, no elementwise pass, no start-up) costing time."""
    total, f32 = flops(acc), flops(acc, float32_only=True)
    return round(total / (f32 / matmul_peak("float32", 5.0) + (total - f32) / peak) / peak, 3)


def ceiling_line(acc: dict, ceiling: float) -> str:
    eng = acc["provenance"]["engine"]
    share = flops(acc, float32_only=True) / flops(acc)
    return (f"float32 work: {eng['float32_tokens']} of {eng['tokens_run']} tokens ({share:.0%} of the FLOPs: prefixes "
            f"and rescored questions, run by the float32 twin); with those at the best float32 matmul rate here and "
            f"everything else free at the bfloat16 peak, at most {ceiling:.0%} of that peak is reachable")


def compare(subjects, lm_eval_res, lmb_samples, mmlu) -> tuple[float, int, int]:
    """Share of questions where both pick the same letter; prompt mismatches."""
    ours = {(s["subject"], s["index"]): s for s in lmb_samples}
    same = total = prompt_mismatch = 0
    for s in subjects:
        for r in lm_eval_res["samples"][f"lmb_mmlu_{s}"]:
            o = ours.get((s, r["doc_id"]))
            if o is None:
                continue
            ll = r["loglik"]
            same += "ABCD"[max(range(4), key=ll.__getitem__)] == o["pred"]
            total += 1
    del mmlu
    return same / max(total, 1), total, prompt_mismatch


def check_prompts(subjects, shots, lm_eval_res) -> int:
    """Count lm-eval prompts that differ from lmboard's for the same question."""
    from lmboard.tasks.exam import MCQuestion

    mmlu = MMLU()
    bad = 0
    for s in subjects:
        test = mmlu.load_split(DATA, s, "test")
        for r in lm_eval_res["samples"][f"lmb_mmlu_{s}"]:
            q: MCQuestion = test[r["doc_id"]]
            text, _ = mmlu.render(q, mmlu.shots_for(q, test, "test", shots))
            bad += text != r["prompt"]
    return bad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subjects", default=DEFAULT_SUBJECTS)
    ap.add_argument("--limit", default="none", help="questions per subject, or none")
    ap.add_argument("--shots", default="0,5")
    ap.add_argument("--fp32-check", action="store_true", help="also run lmboard --dtype float32")
    ap.add_argument("--vllm", action="store_true", help="also lmboard eval vllm: against lm_eval --model vllm")
    ap.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    ap.add_argument("--vllm-only", action="store_true", help="only the vLLM rows")
    ap.add_argument("--vllm-dtype", default=None, help="both tools' vLLM dtype (default: lmboard's auto choice)")
    args = ap.parse_args()
    subjects = args.subjects.split(",")
    peaks: dict[str, float] = {}  # measured for the dtype lmboard chose, when it first appears
    summary = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        write_tasks(tmp, subjects)
        for shots in map(int, args.shots.split(",")):
            if args.vllm_only:
                from lmboard.models.hf_load import choose_dtype

                print(f"\n== {shots}-shot, {len(subjects)} subjects ==")
                summary[f"{shots}_shot"] = vllm_row(tmp, subjects, shots, args.limit, Path(args.vllm_python),
                                                    vllm_folder(), args.vllm_dtype or choose_dtype("auto", "cpu"))
                continue
            le, le_wall = run_lm_eval(tmp, subjects, shots, args.limit)
            mismatched = check_prompts(subjects, shots, le)
            acc, samples, lb_wall = run_lmboard(tmp, subjects, shots, args.limit, [])
            n = len(samples)
            agree, total, _ = compare(subjects, le, samples, None)
            le_acc = sum(
                ("ABCD"[max(range(4), key=r["loglik"].__getitem__)] == "ABCD"[int(r["target"])])
                for rows in le["samples"].values() for r in rows
            ) / max(total, 1)
            dtype = acc["provenance"]["dtype"]
            fl = flops(acc) / acc["cost_time"]
            name = "zero_shot" if shots == 0 else f"{'five' if shots == 5 else shots}_shot"
            row = {
                "ratio": round(le_wall / lb_wall, 2),
                "scoring_ratio": round(le["eval_s"] / acc["cost_time"], 2),
                "agreement": round(agree, 4),
                "lmboard_items_per_s": round(n / lb_wall, 2),
                "lm_eval_items_per_s": round(total / le_wall, 2),
            }
            print(f"\n== {shots}-shot, {len(subjects)} subjects, {n} questions ==")
            print(f"prompts identical: {total - mismatched}/{total}")
            print(f"lm-eval  (hf, fp32, batch 16): whole {le_wall:7.1f} s = {total / le_wall:6.2f} items/s;"
                  f" scoring {le['eval_s']:7.1f} s = {total / le['eval_s']:6.2f} items/s; acc {le_acc:.4f}")
            print(f"lmboard  (defaults, {dtype}):    whole {lb_wall:7.1f} s = {n / lb_wall:6.2f} items/s;"
                  f" scoring {acc['cost_time']:7.1f} s = {n / acc['cost_time']:6.2f} items/s; acc {acc['weighted_accuracy']:.4f}")
            print(f"ratio: whole {row['ratio']}x, scoring {row['scoring_ratio']}x; agreement {agree:.2%} ({total} questions)")
            # measured again for every run, right after it: a peak read while something else
            # ran would misstate every share after it
            peaks[dtype] = peak = matmul_peak(dtype)
            print(f"matmul peak here: {dtype} {peak / 1e9:.0f} GFLOP/s")
            print(f"lmboard achieved {fl / 1e9:.0f} GFLOP/s = {fl / peak:.0%} of the {dtype} matmul peak"
                  f" (engine: {json.dumps({k: acc['provenance']['engine'][k] for k in ('forward', 'tokens_run', 'padded_tokens', 'prefix_tokens_reused', 'batches', 'batch_tokens', 'boundary_trimmed', 'fallbacks', 'rechecked', 'calibration', 'recheck_bound', 'recheck_margin', 'float32_tokens')})})")
            if dtype != "float32" and acc["provenance"]["engine"].get("float32_tokens"):
                row["peak_share"], row["peak_share_ceiling"] = round(fl / peak, 3), ceiling_share(acc, peak)
                print(ceiling_line(acc, row["peak_share_ceiling"]))
            if args.fp32_check:
                acc32, s32, w32 = run_lmboard(tmp, subjects, shots, args.limit, ["--dtype", "float32"])
                a32, _, _ = compare(subjects, le, s32, None)
                row["agreement_fp32"] = round(a32, 4)
                row["lmboard_fp32_items_per_s"] = round(len(s32) / w32, 2)
                print(f"lmboard --dtype float32: whole {w32:.1f} s ({le_wall / w32:.2f}x); agreement {a32:.2%}")
            if args.vllm:
                row.update(vllm_row(tmp, subjects, shots, args.limit, Path(args.vllm_python), vllm_folder(),
                                    args.vllm_dtype or dtype))
            summary[name] = row
    print(json.dumps(summary))


def vllm_folder() -> str:
    """The SmolLM2 GGUF as a Hugging Face folder (float32 safetensors) that vLLM loads."""
    from lmboard.models.aliases import smollm2
    from lmboard.models.vllm_backend import folder_of

    return folder_of(smollm2())


if __name__ == "__main__":
    main()
