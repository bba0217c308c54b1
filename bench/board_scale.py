"""The board at scale: a store with 100,000 samples (7 models x 14,042 MMLU-shaped
questions over 57 subjects, plus a judged run of 805 instructions each), then the time
to build the HTML board, its size, and the time Chromium takes to open it (until the
table is drawn), to open the largest run's drill-down (its samples parsed, the first 200
drawn), to sort that run's samples by key and to show its wrong answers only. The
targets (issue 44): build under 10 s, open under 2 s.

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
    from board_store import generate_run, judge_run, prov, speed_run
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
        generate_run(s, f"gen-{m}", label, "bfloat16")  # the judged generator is this model's row
        judge_run(s, f"judge-{m}", label, 10.0 + m, [f"answer {i} of model {m}" for i in range(805)])
        speed_run(s, f"speed-{m}", label, "bfloat16", 20.0 + m, 800.0 + 50 * m)
        total += 14042 + 805
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=7)
    a = ap.parse_args()
    import os

    from browser import chromium

    load = os.getloadavg()[0]
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
        driver.get((d / "board.html").resolve().as_uri())
        driver.execute_script("return document.querySelectorAll('#board tbody tr').length")
        reopened = time.perf_counter() - t0
        t0 = time.perf_counter()
        driver.execute_script("document.querySelector('button[data-view=plots]').click()")
        plots = time.perf_counter() - t0
        driver.execute_script("document.querySelector('button[data-view=overview]').click()")
        t0 = time.perf_counter()
        driver.execute_script("document.querySelector('#board tbody tr a').click()")
        count = driver.execute_script("return document.querySelector('#drill .controls .muted').textContent")
        drill = time.perf_counter() - t0
        t0 = time.perf_counter()
        driver.execute_script("document.querySelector('#samples th').click()")
        first = driver.execute_script("return document.querySelector('#samples tr.sample td').textContent")
        sort = time.perf_counter() - t0
        t0 = time.perf_counter()
        driver.execute_script("document.getElementById('wrong-only').click()")
        wrong = driver.execute_script("return document.querySelector('#drill .controls .muted').textContent")
        filt = time.perf_counter() - t0
    finally:
        driver.quit()
    import os
    import platform

    cpu = next((x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")),
               platform.processor())
    print(f"CPU: {cpu}, {os.cpu_count()} cores; load before: {load:.2f}")
    print(f"store: {n} samples, {a.models} models")
    print(f"lmboard board --out: {build:.1f} s (whole command); HTML {size / 1e6:.1f} MB")
    print(f"Chromium: page open in a fresh browser (table drawn) {opened:.2f} s, again {reopened:.2f} s; "
          f"the plots view {plots:.2f} s (plotly.js compiled on first use); one run's drill-down ({count}) {drill:.2f} s; "
          f"sorted by key ({first} first) {sort:.2f} s; wrong answers only ({wrong}) {filt:.2f} s")
    print(json.dumps({"samples": n, "build_s": round(build, 2), "html_mb": round(size / 1e6, 1), "open_s": round(opened, 2), "reopen_s": round(reopened, 2), "plots_s": round(plots, 2),
                      "drill_s": round(drill, 2), "sort_s": round(sort, 2), "filter_s": round(filt, 2), "load": load}))


if __name__ == "__main__":
    main()
