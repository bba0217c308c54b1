"""`lmboard eval` end to end on SmolLM2 and the real MMLU data, through the real CLI.
(Killing and resuming runs: test_faults.py.)"""

import json
import sqlite3
from collections import defaultdict
from pathlib import Path

import pytest

from helpers import MMLU, lmboard


def read_samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_must_show_command_writes_files_and_accuracies_recompute(tmp_path):
    out = tmp_path / "out"
    r = lmboard("eval", "smollm2", "--task", "mmlu", "--data", str(MMLU), "--subjects", "anatomy,astronomy",
                "--limit", "50", "--shots", "0", "--out", str(out), "--db", str(tmp_path / "db.sqlite"), "--subcategories")
    assert r.returncode == 0, r.stderr
    assert "weighted" in r.stdout and "health" in r.stdout
    acc = json.loads((out / "accuracies_smollm2.json").read_text())
    samples = read_samples(out)
    assert len(samples) == 50 + 50
    by = defaultdict(list)
    for s in samples:
        assert abs(sum(s["probs"]) - 1) < 1e-6 and s["pred"] in "ABCD"
        assert s["correct"] == (s["pred"] == s["gold"])
        by[s["subject"]].append(s["correct"])
    cats = json.loads((MMLU / "categories.json").read_text())
    # recompute every accuracy in the JSON from samples.jsonl
    assert acc["weighted_accuracy"] == pytest.approx(sum(map(sum, by.values())) / len(samples), abs=1e-12)
    for subject, c in by.items():
        assert acc["subjects"][subject] == pytest.approx(sum(c) / len(c), abs=1e-12)
    sub = defaultdict(list)
    for subject, c in by.items():
        for sc in cats["subcategories"][subject]:
            sub[sc] += c
    assert set(acc["subcategories"]) == set(sub) == {"health", "physics"}
    for sc, c in sub.items():
        assert acc["subcategories"][sc] == pytest.approx(sum(c) / len(c), abs=1e-12)
    assert acc["categories"]["STEM"] == pytest.approx(sum(by["astronomy"]) / 50, abs=1e-12)
    assert acc["categories"]["other"] == pytest.approx(sum(by["anatomy"]) / 50, abs=1e-12)
    assert acc["cost_time"] > 0
    prov = acc["provenance"]
    for key in ("model_spec", "dtype", "device", "shots_requested", "shots_used", "fewshot_source",
                "prompt_template_hash", "tokenizer", "versions", "letter_token"):
        assert key in prov, key
    assert prov["fewshot_source"] == "test" and prov["shots_used"] == {"min": 0, "max": 0}
    assert {"torch", "transformers", "lmboard"} <= set(prov["versions"])
    # the per-subject CSV: the original columns plus the model's
    header = (out / "anatomy.csv").read_text().splitlines()[0].split(",")
    assert header == ["0", "1", "2", "3", "4", "5", "smollm2_correct", "smollm2_choiceA_probs",
                      "smollm2_choiceB_probs", "smollm2_choiceC_probs", "smollm2_choiceD_probs"]
    # the store holds the run and every question
    con = sqlite3.connect(tmp_path / "db.sqlite")
    assert con.execute("select count(*) from samples").fetchone()[0] == 100
    assert con.execute("select status from runs").fetchone()[0] == "done"
    # the process's peak memory: said at the end, and in the run's provenance
    said = [line for line in r.stderr.splitlines() if line.startswith("peak memory: ")]
    assert len(said) == 1 and said[0].endswith(" GB resident"), r.stderr
    peak = json.loads(con.execute("select provenance from runs").fetchone()[0])["peak_memory"]
    assert float(said[0].split()[2]) == pytest.approx(peak["peak_rss_mb"] / 1024, abs=0.02)
    assert 200 < peak["peak_rss_mb"] < 16_000


def test_a_job_writing_to_a_log_prints_progress_lines_and_no_bars(tmp_path):
    """stderr not a terminal (nohup, Slurm, CI): progress as lines, from the start, and none
    of transformers' bars ("Loading weights", GGUF conversion)."""
    import os
    import subprocess
    import sys

    from helpers import ROOT

    log = tmp_path / "log"
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "-m", "lmboard", "eval", "smollm2,dtype=float32", "--data", str(MMLU),
                            "--subjects", "anatomy", "--limit", "12", "--shots", "1", "--batch-tokens", "300",
                            "--db", str(tmp_path / "db"), "--out", str(tmp_path / "o")],
                           stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, timeout=600,
                           env={**os.environ, "LMBOARD_PROGRESS_EVERY": "0"})
    text = log.read_text()
    assert r.returncode == 0, text
    lines = [line for line in text.splitlines() if line.startswith("mmlu smollm2: ")]
    assert len(lines) >= 3 and lines[0].startswith("mmlu smollm2: 0/12 (0%)"), text
    assert lines[-1].startswith("mmlu smollm2: 12/12 (100%)") and "weighted" in text
    assert "Loading weights" not in text and "it/s" not in text and "\r" not in text
