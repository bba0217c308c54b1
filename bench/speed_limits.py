"""lmboard speed on SmolLM2 next to this machine's memory-bandwidth limit.

    python bench/speed_limits.py [--new-tokens 64] [--prompt-tokens 256]

Measures copy bandwidth with a large array copy (read + write of 1 GiB), then runs
`lmboard speed smollm2` at batch 1 and 16 in float32 and bfloat16, and prints the decode
rate next to the bound: at batch 1 every decode step reads all weights once, so
tokens/s <= bandwidth / bytes of weights. Last line: one JSON object.
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
PARAMS = 134_515_008  # SmolLM2-135M: embeddings tied with the LM head


def copy_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    import numpy as np

    a = np.ones(int(gib * 2**30 // 8), dtype=np.float64)
    b = np.empty_like(a)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(b, a)
        best = max(best, 2 * a.nbytes / (time.perf_counter() - t))  # bytes read + written
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    bw = copy_bandwidth()
    print(f"copy bandwidth (1 GiB numpy copy, read+write): {bw / 1e9:.1f} GB/s")
    summary = {"bandwidth_gb_s": round(bw / 1e9, 1), "runs": {}}
    with tempfile.TemporaryDirectory() as td:
        for dtype, nbytes in (("float32", 4), ("bfloat16", 2)):
            out = Path(td) / f"{dtype}.json"
            subprocess.run([str(Path(sys.executable).parent / "lmboard"), "speed", f"smollm2,dtype={dtype}",
                            "--batch-sizes", "1,16", "--prompt-tokens", str(args.prompt_tokens), "--new-tokens",
                            str(args.new_tokens), "--repeats", str(args.repeats), "--out", str(out), "--db",
                            str(Path(td) / "db")], check=True)
            rec = json.loads(out.read_text())
            weights = PARAMS * nbytes
            bound = bw / weights
            print(f"\n{dtype}: weights {weights / 1e6:.0f} MB read per decode step -> batch-1 bound "
                  f"{bw / 1e9:.1f} GB/s / {weights / 1e6:.0f} MB = {bound:.0f} tokens/s")
            print("batch  TTFT ms  TPOT ms  decode tok/s  e2e s (p50)  peak RSS MB  share of bound (batch 1)")
            for r in rec["results"]:
                share = r["decode_tokens_per_s"] / bound if r["batch_size"] == 1 else float("nan")
                print(f"{r['batch_size']:>5}  {r['ttft_s']['median'] * 1e3:7.1f}  {r['tpot_s']['median'] * 1e3:7.1f}"
                      f"  {r['decode_tokens_per_s']:12.1f}  {r['latency_s']['median']:11.2f}  {r['peak_rss_mb']:11.0f}"
                      f"  {'' if r['batch_size'] != 1 else f'{share:.0%}'}")
                summary["runs"][f"{dtype}_b{r['batch_size']}"] = round(r["decode_tokens_per_s"], 1)
            summary[f"{dtype}_bound_tokens_per_s"] = round(bound, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
