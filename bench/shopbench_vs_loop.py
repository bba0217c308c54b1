"""ShopBench: the starter kit's loop against `lmboard eval --task shopbench`.

    python bench/shopbench_vs_loop.py [--routes lmboard/data/shopbench/routes_seed003.yaml] [--limit N]

Same model (SmolLM2 GGUF), same 96 development rows, same routes (seed 003's:
system instruction, user input, new-token budget per route), greedy, the same stop ids.
The kit's loop is what seed 003 and the kit's local_evaluation.py do: for each row, render
its chat prompt and call model.generate on it alone (model load excluded from its time).
lmboard runs the whole command (load included), all routes in one continuous decode job,
four times (RUNS): in float32 (answers comparable token for token); at its default dtype
(bfloat16 on CPUs with AMX or AVX-512 BF16), where an answer that came within 0.05
logits of a tie is decoded again in float32; with that margin at 0.02; and with the
recheck off. Prints the times, the ratios, the share of
identical answers (by task type), and the official scores; also the ratio to the time
lmboard spent answering alone (its run's own timing: no imports, load or metrics), the
like of the loop's.

It also prints the floor of any exact float32 answering on this machine: the matrix
products no method can skip (each distinct prompt prefix's position through the model
once, however prefixes are shared; each new token but the first once more; the LM head
once per token chosen), at the best float32 matmul rate measured here. The loop's time
over that floor is the largest ratio any float32 run could reach here, with imports,
load, attention and metrics free. Last line: one JSON object.
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
DEV = ROOT.parent / "shared" / "data" / "shopbench" / "development.json"
SEED_ROUTES = ROOT / "lmboard" / "data" / "shopbench" / "routes_seed003.yaml"
sys.path.insert(0, str(ROOT))


def kit_loop(routed) -> tuple[dict[int, str], int, float, list[list[int]], list[int]]:
    """One generate per row, float32, greedy, the seed's terminators (EOS and <|im_end|>)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmboard.models.aliases import SMOLLM2_FILE, smollm2_dir

    tok = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_FILE)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_FILE, dtype=torch.float32).eval()
    terminators = [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]
    answers, n_tokens, prompts, counts = {}, 0, [], []
    t0 = time.perf_counter()
    for x in routed:
        req = x.route.request(str(x.row.index), x.fields)
        prompt = tok.apply_chat_template(list(req.messages), tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=x.route.max_new_tokens, do_sample=False,
                                 eos_token_id=terminators, pad_token_id=tok.pad_token_id)
        new = out[0, ids.input_ids.shape[1]:].tolist()
        n = next((i for i, t in enumerate(new) if t in terminators), len(new))
        n_tokens += n
        answers[x.row.index] = tok.decode(new[:n], skip_special_tokens=True)
        prompts.append(ids.input_ids[0].tolist())
        counts.append(min(n + 1, len(new)))  # the terminator is chosen too
    return answers, n_tokens, time.perf_counter() - t0, prompts, counts


# (tag, dtype, --recheck-margin): float32; the default (bfloat16 where the CPU has it, its
# close answers decoded again in float32); a smaller margin; the default with that recheck off
RUNS = [("fp32", "float32", None), ("default", "auto", None), ("margin002", "auto", "0.02"), ("norecheck", "auto", "0")]

HIDDEN, LAYERS, INTER, VOCAB, KV = 576, 30, 1536, 49152, 192  # SmolLM2-135M


def float32_floor(prompts: list[list[int]], new_tokens: list[int]) -> tuple[float, int, float]:
    """(seconds, distinct prefix positions, float32 matmul FLOP/s) of the products any
    exact float32 run of these prompts and answers must compute, at the best 2048^3
    float32 matmul rate measured here (a position's keys and values depend on its whole
    prefix, so each distinct prefix is computed at least once)."""
    from mmlu_vs_lm_eval import matmul_peak

    distinct = {tuple(p[: i + 1]) for p in prompts for i in range(len(p))}
    body = 2 * LAYERS * (HIDDEN * (HIDDEN + 2 * KV + HIDDEN) + 3 * HIDDEN * INTER)
    head = 2 * HIDDEN * VOCAB
    work = len(distinct) * body + sum(max(n - 1, 0) for n in new_tokens) * body + sum(new_tokens) * head
    peak = matmul_peak("float32")
    return work / peak, len(distinct), peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=Path, default=SEED_ROUTES)
    ap.add_argument("--data", type=Path, default=DEV)
    args = ap.parse_args()

    from lmboard.store import Store
    from lmboard.tasks.routes import load_routes
    from lmboard.tasks.shopbench import ShopBenchSettings
    from lmboard.tasks.shopbench_run import prepare, run_shopbench

    settings = ShopBenchSettings(args.data, routes=tuple(load_routes(args.routes)))
    routed = prepare(settings).routed
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        lb = {tag: lmboard_run(tmp / tag, dtype, margin, args) for tag, dtype, margin in RUNS}
        loop, loop_tokens, loop_time, prompts, counts = kit_loop(routed)
        floor_s, distinct, peak = float32_floor(prompts, counts)
        resp = tmp / "loop.jsonl"
        resp.write_text("".join(json.dumps({"index": i, "response": r}) + "\n" for i, r in loop.items()))
        from lmboard.lm import ModelSpec

        loop_score = run_shopbench(None, ModelSpec("hf", "kit-loop"), ShopBenchSettings(
            args.data, routes=settings.routes, responses=resp), Store(tmp / "db2"))["overall"]
    print(f"{len(routed)} rows, routes {args.routes.name}, greedy, SmolLM2")
    print(f"kit loop (float32, one generate per row, load excluded): {loop_time:.1f} s, {loop_tokens} new tokens "
          f"({loop_tokens / loop_time:.1f} tokens/s); official score {loop_score:.4f}")
    print(f"float32 floor here: {sum(map(len, prompts))} prompt tokens, {distinct} distinct prefix positions, "
          f"{sum(counts)} tokens chosen; at {peak / 1e9:.0f} GFLOP/s (best float32 matmul measured here): "
          f"{floor_s:.1f} s of products, so no exact float32 run can exceed {loop_time / floor_s:.2f}x the loop here")
    summary = {"rows": len(routed), "loop_s": round(loop_time, 1), "loop_score": round(loop_score, 4),
               "floor_fp32_s": round(floor_s, 1), "max_ratio_fp32": round(loop_time / floor_s, 2)}
    for (tag, dtype, margin), (wall, answers, score, used, timing, rechecked) in zip(RUNS, lb.values(), strict=True):
        same = {x.row.index: answers[x.row.index] == loop[x.row.index] for x in routed}
        by_type: dict[str, list[bool]] = {}
        for x in routed:
            by_type.setdefault(x.row.type, []).append(same[x.row.index])
        identical = sum(same.values()) / len(same)
        flag = f" --recheck-margin {margin}" if margin else ""
        print(f"lmboard eval --task shopbench, dtype={dtype}{flag} ({used}; whole command incl. load): {wall:.1f} s; "
              f"ratio {loop_time / wall:.2f}x (answering alone {timing['answer_s']:.1f} s: "
              f"{loop_time / timing['answer_s']:.2f}x); identical answers {identical:.1%} "
              f"({', '.join(f'{k} {sum(v)}/{len(v)}' for k, v in by_type.items())}); official score {score:.4f}; "
              f"decoded again in float32: {rechecked} rows")
        summary |= {f"ratio_{tag}": round(loop_time / wall, 2), f"identical_{tag}": round(identical, 4),
                    f"answer_ratio_{tag}": round(loop_time / timing["answer_s"], 2),
                    f"lmboard_{tag}_s": round(wall, 1), f"score_{tag}": round(score, 4), f"rechecked_{tag}": rechecked}
    print(json.dumps(summary))


def lmboard_run(out: Path, dtype: str, margin: str | None, args) -> tuple[float, dict[int, str], float, str, dict, int]:
    """(wall time, index -> answer, official score, dtype used, the run's own timing, rows
    decoded again in float32) of the whole command."""
    cmd = [str(Path(sys.executable).parent / "lmboard"), "eval", f"smollm2,dtype={dtype}", "--task", "shopbench",
           "--data", str(args.data), "--routes", str(args.routes), "--db", str(out / "db"), "--out", str(out / "out"),
           "--quiet", *(["--recheck-margin", margin] if margin else [])]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    scores = json.loads((out / "out" / "scores.json").read_text())
    samples = [json.loads(line) for line in (out / "out" / "samples.jsonl").read_text().splitlines()]
    answers = {s["index"]: s["response"] for s in samples}
    rechecked = sum(1 for s in samples if s.get("recheck"))
    return wall, answers, scores["overall"], scores["provenance"]["dtype"], scores["timing"], rechecked


if __name__ == "__main__":
    main()
