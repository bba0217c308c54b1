"""Threads on a shared machine: eval, classify, generate and speed on SmolLM2, each on a
quiet machine and beside one busy core (a process spinning on it), at the default
--threads (one thread per core other processes leave idle: lmboard/cpu.py), with
--threads N (every core: the default before) and with --threads 1. Prints each command's
wall time (speed: its batch-1 TPOT) and the ratios to --threads 1 in the same run.

    python bench/threads_busy.py [--data ../shared/data] [--only eval,speed]
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

ROOT = Path(__file__).resolve().parent.parent
HOG = "import time\nend = time.time() + 900\nwhile time.time() < end:\n    pass\n"


def workloads(data: Path, tmp: Path) -> dict[str, list[str]]:
    prompts = tmp / "prompts.json"
    rows = json.loads((data / "alpaca_eval" / "reference_gpt4_1106_preview.json").read_text())[:8]
    prompts.write_text(json.dumps(rows, ensure_ascii=False))
    return {
        "eval": ["eval", "smollm2", "--task", "mmlu", "--data", str(data / "mmlu"), "--subjects", "anatomy",
                 "--limit", "40", "--shots", "5"],
        "classify": ["eval", "smollm2", "--task", "classify", "--data",
                     str(data / "chnsenticorp" / "ChnSentiCorp_htl_all.csv"), "--text-column", "review",
                     "--labels", "0=负面,1=正面", "--split", "0.8", "--shots", "4", "--test-size", "40"],
        "generate": ["generate", "--models", "smollm2", "--prompts", str(prompts), "--max-new-tokens", "128"],
        "speed": ["speed", "smollm2", "--batch-sizes", "1", "--prompt-tokens", "64", "--new-tokens", "32",
                  "--warmup", "1", "--repeats", "3"],
    }


def run(name: str, args: list[str], extra: list[str], tmp: Path, k: int, env: dict | None = None) -> float:
    out = tmp / f"{name}-{k}"
    cmd = [sys.executable, "-m", "lmboard", *args, *extra, "--db", str(tmp / f"db-{k}"), "--out",
           str(out if name != "speed" else out.with_suffix(".json")), "--quiet"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{name} failed: {r.stderr.strip()}")
    if name == "speed":
        return json.loads(out.with_suffix(".json").read_text())["results"][0]["tpot_s"]["median"] * 1000
    return wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--only", default="eval,classify,generate,speed")
    ap.add_argument("--omp-passive", action="store_true",
                    help="also every core with OMP_WAIT_POLICY=PASSIVE (threads sleep at barriers)")
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    env_note = f"{cores} cores, load before start {os.getloadavg()[0]:.2f}"
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        jobs = workloads(a.data, tmp)
        k = 0
        rows = []
        for name in a.only.split(","):
            args = jobs[name]
            res = {}
            k += 1
            run(name, args, [], tmp, k)  # warm: the GGUF cache, compiled kernels, page cache
            conds = [("quiet, default", [], False, None), ("busy, default", [], True, None),
                     (f"busy, --threads {cores}", ["--threads", str(cores)], True, None),
                     ("busy, --threads 1", ["--threads", "1"], True, None)]
            if a.omp_passive:
                conds.append((f"busy, --threads {cores}, OMP_WAIT_POLICY=PASSIVE", ["--threads", str(cores)], True,
                              {"OMP_WAIT_POLICY": "PASSIVE"}))
            for cond, extra, busy, env in conds:
                hog = subprocess.Popen([sys.executable, "-c", HOG]) if busy else None
                try:
                    if hog:
                        time.sleep(1.0)
                    k += 1
                    res[cond] = run(name, args, extra, tmp, k, env)
                finally:
                    if hog:
                        hog.kill()
                        hog.wait()
            rows.append((name, res))
    unit = {"speed": "TPOT ms (batch 1)"}
    print(f"# threads beside a busy core ({env_note})")
    for name, res in rows:
        one = res["busy, --threads 1"]
        cells = ", ".join(f"{c}: {v:.1f}" for c, v in res.items())
        print(f"{name} [{unit.get(name, 'wall s')}]: {cells}; busy default / --threads 1 = "
              f"{res['busy, default'] / one:.2f}, busy --threads {cores} / --threads 1 = "
              f"{res[f'busy, --threads {cores}'] / one:.2f}")
        print(json.dumps({"bench": "threads_busy", "command": name, **{k: round(v, 2) for k, v in res.items()}}))


if __name__ == "__main__":
    main()
