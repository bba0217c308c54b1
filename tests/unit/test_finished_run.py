"""A finished run, rerun, reprints its results from the store without loading the
model's weights (the tokenizer and config name the run; hf_load.describe)."""

import pytest

from helpers import MMLU
from helpers import run_cli as lmboard


def test_a_finished_exam_reprints_without_loading_the_weights(sp_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ["eval", f"hf:{sp_model_dir},dtype=float32", "--task", "mmlu", "--data", str(MMLU),
            "--subjects", "anatomy", "--limit", "4", "--shots", "1", "--db", str(tmp_path / "db"), "--out", str(out)]
    first = lmboard(*args)
    assert first.returncode == 0, first.stderr
    samples = (out / "samples.jsonl").read_bytes()

    from lmboard.models import hf_load

    def refuse(*a, **k):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(hf_load, "load", refuse)
    again = lmboard(*args)
    assert again.returncode == 0, again.stderr
    assert "4 of 4 stored: nothing left to compute" in again.stderr
    table = [line for line in first.stdout.splitlines() if not line.startswith("results:")]
    assert [line for line in again.stdout.splitlines() if not line.startswith("results:")] == table
    assert (out / "samples.jsonl").read_bytes() == samples
    assert "peak memory: " in first.stderr and "peak memory: " in again.stderr
    quiet = lmboard(*args, "--quiet")  # for scripts: no notes, no table, no peak line
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == "", (quiet.stdout, quiet.stderr)
    # a run with work left does load them
    with pytest.raises(AssertionError, match="the weights were loaded"):
        lmboard(*[a if a != "4" else "5" for a in args])
