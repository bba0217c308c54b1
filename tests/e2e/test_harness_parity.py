"""Task YAMLs on SmolLM2 in float32, lmboard against lm-evaluation-harness 0.4.13 on the
same files and local data (tests/fixtures/harness): every rendered prompt identical, every
per-sample metric identical, for an MMLU subject as a multiple_choice YAML, a
generate_until task with regex filters and exact_match, and a group of two subjects with
its weighted aggregate. One lm-eval process runs them all (its model loads once)."""

from __future__ import annotations

import json

import pytest
from harness_parity import compare, run_lm_eval, run_lmboard

pytest.importorskip("lm_eval", reason="lm-eval 0.4.13 (lmboard[dev]) runs beside lmboard here")
LIMIT = 10


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    d = tmp_path_factory.mktemp("harness")
    theirs, _ = run_lm_eval(["mmlu_local_pair", "arith_words"], LIMIT, d / "lm_eval.json")
    run_lmboard("mmlu_local_pair", LIMIT, d / "pair", d / "db")
    run_lmboard("arith_words", LIMIT, d / "arith", d / "db")
    return theirs, d


@pytest.mark.parametrize("task,out", [("mmlu_local_anatomy", "pair"), ("mmlu_local_astronomy", "pair"),
                                      ("arith_words", "arith")])
def test_identical_prompts_and_per_sample_metrics(both, task, out):
    theirs, d = both
    c = compare(theirs, d / out, task)
    filters = 2 if task == "arith_words" else 1  # strict and flexible
    assert c["n"] == LIMIT * filters
    assert c["prompts"] == c["n"] and c["metrics"] == c["n"] and c["answers"] == c["n"], c["first_diff"]


def test_results_json_has_lm_evals_shape_and_numbers(both):
    theirs, d = both
    ours = json.loads((d / "pair" / "results.json").read_text())
    for task in ("mmlu_local_anatomy", "mmlu_local_astronomy", "mmlu_local_pair"):
        for key in ("acc,none", "acc_stderr,none"):
            assert ours["results"][task][key] == pytest.approx(theirs["results"][task][key], abs=1e-9), (task, key)
    assert ours["group_subtasks"] == {"mmlu_local_pair": ["mmlu_local_anatomy", "mmlu_local_astronomy"]}
    assert ours["n-shot"]["mmlu_local_anatomy"] == 5 and ours["n-samples"]["mmlu_local_anatomy"]["effective"] == LIMIT
    arith = json.loads((d / "arith" / "results.json").read_text())["results"]["arith_words"]
    for key in ("exact_match,strict", "exact_match,flexible"):
        assert arith[key] == pytest.approx(theirs["results"]["arith_words"][key])
