"""Exams in generation mode on SmolLM2 with its chat template (`lmboard eval --by generate`):
MMLU and CMMLU answered in words, the letter read by the recorded rule, answers with no
letter counted and shown, the run resumable and on the board as its own column."""

from __future__ import annotations

import json

from helpers import DATA, MMLU, run_cli


def test_mmlu_and_cmmlu_by_generation(tmp_path):
    db = ["--db", str(tmp_path / "db")]
    runs = {"mmlu": (MMLU, "anatomy,astronomy"), "cmmlu": (DATA / "cmmlu", "anatomy,astronomy")}
    for task, (data, subjects) in runs.items():
        args = ("eval", "smollm2,dtype=float32", "--task", task, "--data", str(data), "--subjects", subjects,
                "--limit", "4", "--shots", "0", "--by", "generate", "--max-new-tokens", "32", "--out",
                str(tmp_path / task), *db)
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
        assert "letters read by:" in r.stdout and "no extractable letter:" in r.stdout
        samples = [json.loads(x) for x in (tmp_path / task / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(samples) == 8
        for s in samples:
            assert s["response"] and s["extraction"] in ("stated", "leading", "only-letter", "choice-text", "none")
            assert s["correct"] == (s["pred"] == s["gold"]) and (s["pred"] is None) == (s["extraction"] == "none")
        acc = json.loads(next((tmp_path / task).glob("accuracies_*.json")).read_text())
        assert acc["provenance"]["by"] == "generate" and "last explicit statement" in acc["provenance"]["extraction_rule"]
        assert acc["weighted_accuracy"] == sum(s["correct"] for s in samples) / 8
        again = run_cli(*args)  # every answer stored: nothing generated again
        assert again.returncode == 0 and "resum" in again.stderr.lower()
    doc = json.loads(run_cli("board", *db, "--format", "json").stdout)
    groups = {c["group"] for c in doc["columns"]}
    assert {"MMLU 0-shot by generation", "CMMLU 0-shot by generation"} <= groups
    bad = run_cli("eval", "smollm2", "--task", "mmlu", "--by", "generate", "--letter-token", "bare", *db)
    assert bad.returncode == 2 and "--letter-token does not apply to --by generate" in bad.stderr
