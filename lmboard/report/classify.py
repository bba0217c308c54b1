"""Classification result files: ``classify.json`` (metrics, settings, provenance) and
``samples.jsonl`` (one line per test example, in test order)."""

from __future__ import annotations

import json
from pathlib import Path


def write_classify_files(result: dict, out: Path) -> None:
    doc = {k: v for k, v in result.items() if k != "samples"}
    (out / "classify.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False))
    with open(out / "samples.jsonl", "w", encoding="utf-8") as f:
        for s in result["samples"]:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")


def classify_summary(model: str, result: dict) -> list[str]:
    return [f"{model} {result['by']} {result['shots']}-shot on {result['n']} examples: "
            f"accuracy {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}, unmatched {result['unmatched']}, "
            f"skipped (empty text) {result['skipped_empty_text']}",
            f"confusion (gold -> predicted): {json.dumps(result['confusion'], ensure_ascii=False)}"]
