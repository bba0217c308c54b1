"""Data-parallel lmboard: one process against `torchrun --nproc-per-node 2`, same job.

MMLU 5-shot on SmolLM2 (default dtype): one process with every core, then two ranks
(gloo, the cores split between them). Prints both wall times, the answers' agreement,
where the time goes in each rank (start-up and load, scoring, gathering and writing),
and the arithmetic for N devices: the serial part (start-up, load, the store and the
files on rank 0) is paid once per rank in parallel and once on rank 0 at the end, the
scoring divides by N. Last line JSON.

    python bench/data_parallel.py [--subjects a,b,c] [--limit 40] [--shots 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mmlu"
BIN = Path(sys.executable).parent


def run(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t


def load(out: Path) -> tuple[dict, dict]:
    acc = json.loads(next(out.glob("accuracies_*.json")).read_text())
    samples = {(s["subject"], s["index"]): s for s in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}
    return acc, samples


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subjects", default="abstract_algebra,anatomy,astronomy,college_biology,high_school_geography")
    ap.add_argument("--limit", default="40")
    ap.add_argument("--shots", default="5")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        job = ["eval", "smollm2", "--data", str(DATA), "--subjects", a.subjects, "--shots", a.shots, "--quiet"]
        if a.limit != "none":
            job += ["--limit", a.limit]
        # warm the GGUF unpack cache and the native kernels' build: neither is part of a run
        run([str(BIN / "lmboard"), *job, "--limit", "1", "--out", str(tmp / "w"), "--db", str(tmp / "w.db")])
        t1 = run([str(BIN / "lmboard"), *job, "--out", str(tmp / "one"), "--db", str(tmp / "one.db")])
        t2 = run([str(BIN / "torchrun"), "--standalone", "--nproc-per-node=2", "-m", "lmboard", *job,
                  "--out", str(tmp / "two"), "--db", str(tmp / "two.db")], env={"OMP_NUM_THREADS": "1"})
        acc1, s1 = load(tmp / "one")
        acc2, s2 = load(tmp / "two")
    same = sum(s1[k]["pred"] == s2[k]["pred"] for k in s1) / len(s1)
    score1, score2 = acc1["cost_time"], acc2["cost_time"]
    serial1 = t1 - score1  # start-up, load, planning, files: what one process pays besides scoring
    par = acc2["provenance"]["parallel"]
    print(f"== MMLU {a.shots}-shot, {len(s1)} questions, SmolLM2 {acc1['provenance']['dtype']}, "
          f"{os.cpu_count()} cores ==")
    print(f"1 process : whole {t1:6.1f} s (scoring {score1:5.1f} s, the rest {serial1:4.1f} s)")
    print(f"2 ranks   : whole {t2:6.1f} s (rank 0 from start to its files: scoring+gather {score2:5.1f} s); "
          f"items per rank {par['items_per_rank']}, tokens per rank {par['tokens_per_rank']}")
    print(f"speed-up 2 ranks / 1 process: {t1 / t2:.2f}x; answers identical: {same:.2%}")
    # Amdahl on N devices, from the one-process run: the serial part stays, scoring divides
    share = serial1 / t1
    print(f"serial share of the one-process run: {share:.1%} (start-up, model load, planning, writing)")
    for n in (2, 4, 8):
        print(f"  N={n}: predicted whole {serial1 + score1 / n:6.1f} s = {t1 / (serial1 + score1 / n):.2f}x "
              f"(if each device scores as fast as this machine's two cores)")
    print("note: on this 2-core CPU two ranks share the same two cores, so no speed-up is expected here;"
          " the run shows the overhead of the gather (rank 0 waits for rank 1's last rows) and the duplicated load")
    print(json.dumps({"one_s": round(t1, 1), "two_s": round(t2, 1), "ratio": round(t1 / t2, 3),
                      "identical": round(same, 4), "serial_share": round(share, 3),
                      "items_per_rank": par["items_per_rank"], "tokens_per_rank": par["tokens_per_rank"]}))


if __name__ == "__main__":
    main()
