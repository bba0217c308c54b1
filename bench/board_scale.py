"""The board at scale: a store with 100,000 samples (7 models x 14,042 MMLU-shaped
questions over 57 subjects, plus a judged run of 805 instructions each), then the time
to build the HTML board, its size, and the time Chromium takes to open it (until the
table is drawn) and to open the largest run's drill-down.

    python bench/board_scale.py [--models 7]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def fill(db: Path, n_models: int) -> int:
    from board_store import judge_run, prov, speed_run
    from lmboard.store import Store

    rng = random.Random(0)
    s = Store(db)
    subjects = [f"subject_{i:02d}" for i in range(57)]
    total = 0
    for m in range(n_models):
        label, rid = f"model-{m}", f"mmlu-{m}"
        skill = 0.3 + 0.06 * m
        cfg = {"exam": {"task": "mmlu", "data": "/nowhere", "subjects": subjects, "limit": None, "shots": 5,
                        "letter_token": "spaced", "chat": False, "max_length": None}, "template": "t"}
        s.open_run(rid, "exam", label, cfg, prov(label, "bfloat16"))
        rows = []
        for q in range(14042):
            sub = subjects[q % 57]
            ok = rng.random() < skill
            rows.append((f"{sub}/{q // 57}", {"subject": sub, "index": q // 57, "correct": ok, "pred": "A" if ok else "B",
                                              "gold": "A", "probs": [0.4, 0.3, 0.2, 0.1]}))
        s.add_samples(rid, rows)
        s.finish_run(rid, {"categories": {"STEM": skill}})
        judge_run(s, f"judge-{m}", label, 10.0 + m, [f"answer {i} of model {m}" for i in range(805)])
        speed_run(s, f"speed-{m}", label, "bfloat16", 20.0 + m, 800.0 + 50 * m)
        total += 14042 + 805
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=7)
    a = ap.parse_args()
    from browser import chromium

    d = Path(tempfile.mkdtemp(prefix="board-scale-"))
    n = fill(d / "db", a.models)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lmboard", "board", "--db", str(d / "db"), "--out", str(d / "board.html"),
                    "--quiet"], check=True, cwd=ROOT)
    build = time.perf_counter() - t0
    size = (d / "board.html").stat().st_size
    driver = chromium()
    try:
        t0 = time.perf_counter()
        driver.get((d / "board.html").resolve().as_uri())
        driver.execute_script("return document.querySelectorAll('#board tbody tr').length")
        opened = time.perf_counter() - t0
        t0 = time.perf_counter()
        driver.execute_script("document.querySelector('#board tbody tr a').click()")
        rows = driver.execute_script("return document.querySelectorAll('#samples tr').length")
        drill = time.perf_counter() - t0
    finally:
        driver.quit()
    print(f"store: {n} samples, {a.models} models")
    print(f"lmboard board --out: {build:.1f} s (whole command); HTML {size / 1e6:.1f} MB")
    print(f"Chromium: page open (table drawn) {opened:.2f} s; one run's drill-down ({rows - 1} rows) {drill:.2f} s")
    print(json.dumps({"samples": n, "build_s": build, "html_mb": size / 1e6, "open_s": opened, "drill_s": drill}))


if __name__ == "__main__":
    main()
