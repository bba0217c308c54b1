"""lmboard generate against the seeds' loop: one model.generate per prompt.

    python bench/generate_vs_naive.py [--n 64] [--new-tokens 64]

Same model (SmolLM2 GGUF), same 64 alpaca_eval instructions, same chat template, greedy,
exactly the same token budget. The seed's inference function renders each prompt with
the chat template and calls model.generate on it alone (float32, as their code loads
it); lmboard generate runs with its defaults. Prints output tokens/s for each, the ratio
and the share of identical answers; last line: one JSON object.
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
REF = ROOT.parent / "shared" / "data" / "alpaca_eval" / "reference_gpt4_1106_preview.json"
sys.path.insert(0, str(ROOT))


def naive(instructions: list[str], new_tokens: int) -> tuple[list[str], int, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmboard.models.aliases import SMOLLM2_FILE, smollm2_dir

    tok = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_FILE)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_FILE, dtype=torch.float32).eval()
    eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    outs, n_tokens = [], 0
    t0 = time.perf_counter()
    for text in instructions:  # the seeds' inference function: one prompt at a time
        prompt = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos,
                                 pad_token_id=tok.pad_token_id)
        new = out[0, ids.input_ids.shape[1]:].tolist()
        n = next((i for i, t in enumerate(new) if t in eos), len(new))
        n_tokens += n
        outs.append(tok.decode(new[:n], skip_special_tokens=True))
    return outs, n_tokens, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--dtype", default=None, help="lmboard dtype (default: its own auto choice)")
    args = ap.parse_args()
    instructions = [e["instruction"] for e in json.loads(REF.read_text())[: args.n]]
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        (tmp / "p.jsonl").write_text("".join(json.dumps({"instruction": t}) + "\n" for t in instructions))
        spec = "smollm2" + (f",dtype={args.dtype}" if args.dtype else "")
        cmd = [str(Path(sys.executable).parent / "lmboard"), "generate", "--models", spec, "--prompts",
               str(tmp / "p.jsonl"), "--out", str(tmp / "out"), "--max-new-tokens", str(args.new_tokens), "--greedy",
               "--db", str(tmp / "db"), "--quiet"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        lb_wall = time.perf_counter() - t0
        gens = [json.loads(line) for line in (tmp / "out" / "generations.jsonl").read_text().splitlines()]
        lb_out = {g["instruction"]: g["output"] for g in gens}
        lb_tokens = sum(g["output_tokens"] for g in gens)
    nv_out, nv_tokens, nv_time = naive(instructions, args.new_tokens)
    identical = sum(lb_out[t] == o for t, o in zip(instructions, nv_out, strict=True)) / len(instructions)
    lb_tps = lb_tokens / lb_wall
    nv_tps = nv_tokens / nv_time
    print(f"{len(instructions)} prompts, {args.new_tokens} new tokens max, greedy, SmolLM2")
    print(f"naive loop (float32, one generate per prompt, load excluded): {nv_tokens} tokens in {nv_time:.1f} s = {nv_tps:.1f} tokens/s")
    print(f"lmboard generate (defaults, whole command incl. load): {lb_tokens} tokens in {lb_wall:.1f} s = {lb_tps:.1f} tokens/s")
    print(f"ratio {lb_tps / nv_tps:.2f}x; identical answers {identical:.1%}")
    print(json.dumps({"ratio": round(lb_tps / nv_tps, 2), "identical": round(identical, 4),
                      "lmboard_tokens_per_s": round(lb_tps, 1), "naive_tokens_per_s": round(nv_tps, 1)}))


if __name__ == "__main__":
    main()
