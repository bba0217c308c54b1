"""Generation throughput: the seeds' loop, --scheduler static, transformers' continuous
batching and lmboard's default (continuous batching), on one workload, in one run.

    python bench/generate_throughput.py [--n 64] [--new-tokens 256,512]

Workload: the first N instructions of alpaca_eval's reference file, SmolLM2's chat
template, greedy, at each --new-tokens. Measured in this run, before the rest: the
matrix-product peak of this machine in bfloat16 and float32 (the best of a few large
products); the compute bound of a configuration is that peak over 2 x parameters
FLOPs per token. Times exclude model loading (every configuration loads first).

- seeds' loop: one model.generate per prompt, float32 (as the seeds load the model);
- static: lmboard's static batches (model.generate per batch), default dtype;
- transformers CB: model.generate_batch, paged attention (attn_implementation
  "paged|eager"), its cache sized by num_blocks/max_batch_tokens, default dtype;
- lmboard: the default scheduler (continuous), default dtype; and again in float32,
  whose answers are compared with the seeds' loop.

Last line: one JSON object with vs_static, share_of_bound (256 tokens) and identical_fp32.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT.parent / "shared" / "data" / "alpaca_eval" / "reference_gpt4_1106_preview.json"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def matmul_peak(dtype) -> float:
    """FLOP/s of the best of a few large matrix products in ``dtype``."""
    import torch
    import torch.nn.functional as F

    best = 0.0
    for m, k, n in ((2048, 2048, 2048), (1024, 576, 1536), (2048, 1536, 576)):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
        for _ in range(3):
            F.linear(a, b)
        t = time.perf_counter()
        for _ in range(10):
            F.linear(a, b)
        best = max(best, 10 * 2 * m * k * n / (time.perf_counter() - t))
    return best


def lmboard_run(dtype: str | None, scheduler: str, instructions: list[str], new_tokens: int):
    from lmboard.lm import GenerationSettings, GenRequest
    from lmboard.models.registry import load_model
    from lmboard.models.spec import parse_model_spec

    lm = load_model(parse_model_spec("smollm2" + (f",dtype={dtype}" if dtype else "") + f",scheduler={scheduler}"))
    reqs = [GenRequest(str(i), ({"role": "user", "content": t},)) for i, t in enumerate(instructions)]
    settings = GenerationSettings(max_new_tokens=new_tokens, do_sample=False)
    list(lm.generate(reqs[:2], GenerationSettings(max_new_tokens=4, do_sample=False)))
    t0 = time.perf_counter()
    out = {r.key: r for r in lm.generate(reqs, settings)}
    seconds = time.perf_counter() - t0
    return ([out[str(i)].output for i in range(len(reqs))], sum(r.output_tokens for r in out.values()), seconds,
            lm.info()["dtype"], lm.model.num_parameters())


def transformers_cb(instructions: list[str], new_tokens: int):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation import ContinuousBatchingConfig, GenerationConfig

    from lmboard.models.aliases import SMOLLM2_FILE, smollm2_dir

    tok = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_FILE)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_FILE, dtype=torch.bfloat16,
                                                 attn_implementation="paged|eager").eval()
    ids = [tok(tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True),
               add_special_tokens=False).input_ids for t in instructions]
    eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    gc = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    page = 32  # its cache: every sequence's longest possible length, not 80-90% of free memory
    cb = ContinuousBatchingConfig(page_size=page, num_blocks=len(ids) * (-(-(max(map(len, ids)) + new_tokens) // page)),
                                  max_batch_tokens=2048, max_requests_per_batch=len(ids))
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate_batch(ids, generation_config=gc, continuous_batching_config=cb, progress_bar=False)
    seconds = time.perf_counter() - t0
    tokens = sum(sum(1 for _ in _until_eos(o.generated_tokens, eos)) for o in out.values())
    return tokens, seconds


def _until_eos(tokens, eos):
    for t in tokens:
        if t in eos:
            return
        yield t


def line(name: str, tokens: int, seconds: float, bound: float, note: str = "") -> float:
    tps = tokens / seconds
    print(f"{name:<46} {tokens:>6} tokens in {seconds:7.1f} s = {tps:7.1f} tokens/s = {tps / bound:6.1%} of bound"
          + (f"  {note}" if note else ""))
    return tps


def one_setting(instructions: list[str], new_tokens: int, peaks: dict) -> dict:
    from generate_vs_naive import naive

    print(f"\n== {len(instructions)} prompts, up to {new_tokens} new tokens, greedy, SmolLM2 ==")
    lb_out, lb_tok, lb_s, lb_dtype, params = lmboard_run(None, "continuous", instructions, new_tokens)
    bound = {k: v / (2 * params) for k, v in peaks.items()}
    print(f"compute bound: {peaks[lb_dtype] / 1e9:.0f} GFLOP/s / (2 x {params / 1e6:.1f} M) = {bound[lb_dtype]:.0f} "
          f"tokens/s in {lb_dtype}; {bound['float32']:.0f} tokens/s in float32")
    nv_out, nv_tok, nv_s = naive(instructions, new_tokens)
    loop = line("seeds' loop (float32, one prompt at a time)", nv_tok, nv_s, bound["float32"], "(float32 bound)")
    _, st_tok, st_s, _, _ = lmboard_run(None, "static", instructions, new_tokens)
    static = line(f"lmboard --scheduler static ({lb_dtype})", st_tok, st_s, bound[lb_dtype])
    cb_tok, cb_s = transformers_cb(instructions, new_tokens)
    cb = line("transformers generate_batch (bfloat16, paged|eager)", cb_tok, cb_s, bound["bfloat16"])
    lmb = line(f"lmboard default: continuous ({lb_dtype})", lb_tok, lb_s, bound[lb_dtype])
    f32_out, f32_tok, f32_s, _, _ = lmboard_run("float32", "continuous", instructions, new_tokens)
    line("lmboard continuous (float32)", f32_tok, f32_s, bound["float32"], "(float32 bound)")
    same = sum(a == b for a, b in zip(f32_out, nv_out, strict=True)) / len(nv_out)
    print(f"lmboard default over static {lmb / static:.2f}x, over transformers CB {lmb / cb:.2f}x, over the loop "
          f"{lmb / loop:.2f}x; float32 answers identical to the loop: {same:.1%}")
    diff = [i for i, (a, b) in enumerate(zip(f32_out, nv_out, strict=True)) if a != b]
    for i in diff[:3]:
        k = next((j for j, (x, y) in enumerate(zip(f32_out[i], nv_out[i], strict=False)) if x != y), 0)
        print(f"  differs: prompt {i} from character {k}: lmboard {f32_out[i][k:k + 40]!r} / loop {nv_out[i][k:k + 40]!r}")
    return {"vs_static": round(lmb / static, 2), "vs_transformers_cb": round(lmb / cb, 2), "vs_loop": round(lmb / loop, 2),
            "share_of_bound": round(lmb / bound[lb_dtype], 4), "identical_fp32": round(same, 4),
            "tokens_per_s": {"loop_fp32": round(loop, 1), "static": round(static, 1), "transformers_cb": round(cb, 1),
                             "lmboard": round(lmb, 1)}}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--new-tokens", default="256,512")
    args = ap.parse_args()
    instructions = [e["instruction"] for e in json.loads(REF.read_text())[: args.n]]
    peaks = {"bfloat16": matmul_peak(torch.bfloat16), "float32": matmul_peak(torch.float32)}
    from speed_limits import copy_bandwidth

    bw = copy_bandwidth()
    print(f"matmul peak on this machine ({torch.get_num_threads()} threads): bfloat16 {peaks['bfloat16'] / 1e9:.0f} "
          f"GFLOP/s, float32 {peaks['float32'] / 1e9:.0f} GFLOP/s; copy bandwidth {bw / 1e9:.1f} GB/s (read + write): "
          f"a decode step reads all weights ({2 * 134.5e6 / 1e6:.0f} MB in bfloat16) and every sequence's keys and values")
    results = {int(n): one_setting(instructions, int(n), peaks) for n in args.new_tokens.split(",")}
    first = results[min(results)]
    print(json.dumps({"vs_static": first["vs_static"], "share_of_bound": first["share_of_bound"],
                      "identical_fp32": first["identical_fp32"], "peak_gflops": {k: round(v / 1e9) for k, v in peaks.items()},
                      "copy_bandwidth_gb_s": round(bw / 1e9, 1),
                      "by_new_tokens": results}))


if __name__ == "__main__":
    main()
