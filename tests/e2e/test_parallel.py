"""Data-parallel runs under torchrun on the CPU (gloo): the same samples as one process,
resume across world sizes, a failing rank stops the job with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ALPACA_REF, CHNSENTICORP, DATA, MMLU, ROOT, run_cli, short_reference

TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")


def torchrun(n: int, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    def run() -> subprocess.CompletedProcess:
        return subprocess.run([str(TORCHRUN), "--standalone", f"--nproc-per-node={n}", "-m", "lmboard", *args],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})

    r = run()
    # Seen once in a clean-clone run on a 2-core machine (the same test then passed 3 of 3
    # alone): the ranks' first broadcast failed in gloo's TCP transport, before any work,
    # and lmboard said so in one line. The transport is not these tests' subject: launch
    # once more.
    if r.returncode != 0 and "before the job began" in r.stderr and "gloo/transport" in r.stderr:
        r = run()
    return r


def samples(out: Path) -> dict[str, dict]:
    return {f"{r['subject']}/{r['index']}": r for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}


def same_answers(a: dict, b: dict, tol: float = 1e-4) -> None:
    """The guarantee: float32 logits within ``tol`` of one process's (the shard changes
    which questions share a batch, which moves the matrix products' rounding), hence
    the same answer wherever the two best letters are further apart than that."""
    assert a.keys() == b.keys()
    for k in a:
        diff = max(abs(x - y) for x, y in zip(a[k]["logits"], b[k]["logits"], strict=True))
        assert diff < tol, (k, diff)
        top = sorted(a[k]["logits"])
        if top[-1] - top[-2] > 2 * tol:
            assert a[k]["pred"] == b[k]["pred"], k


def exam(model_dir: Path, tmp: Path, tag: str) -> list[str]:
    return ["eval", f"hf:{model_dir},dtype=float32", "--task", "mmlu", "--data", str(MMLU), "--subjects",
            "abstract_algebra,anatomy,astronomy", "--limit", "12", "--shots", "5", "--out", str(tmp / tag),
            "--db", str(tmp / f"{tag}.db"), "--quiet"]


def test_two_ranks_score_what_one_process_scores(sp_model_dir, tmp_path, one_process):
    two = torchrun(2, *exam(sp_model_dir, tmp_path, "two"))
    assert two.returncode == 0, two.stderr
    same_answers(samples(one_process), samples(tmp_path / "two"))
    acc = json.loads(next((tmp_path / "two").glob("accuracies_*.json")).read_text())
    par = acc["provenance"]["parallel"]
    assert par["world_size"] == 2 and sum(par["items_per_rank"]) == 36 and min(par["items_per_rank"]) > 0
    assert acc["provenance"]["engine"]["items"] == 36
    assert json.loads(next(one_process.glob("accuracies_*.json")).read_text())["provenance"]["parallel"] == {
        "world_size": 1}


@pytest.fixture(scope="module")
def one_process(sp_model_dir, tmp_path_factory) -> Path:
    """The exam scored by one process, uninterrupted (the reference of the resume tests)."""
    tmp = tmp_path_factory.mktemp("one_process")
    ref = run_cli(*exam(sp_model_dir, tmp, "ref"))
    assert ref.returncode == 0, ref.stderr
    return tmp / "ref"


@pytest.mark.parametrize("resume_with", [1, 2])
def test_a_killed_two_rank_run_resumes_with_any_world_size(sp_model_dir, tmp_path, resume_with, one_process):
    args = exam(sp_model_dir, tmp_path, "run")
    killed = torchrun(2, *args, env={"LMBOARD_FAULT": "engine.batch=2", "LMBOARD_FAULT_RANK": "1"})
    assert killed.returncode != 0
    # What rank 0 prints here races torchrun's stop (and, seen once in about twenty runs,
    # gloo aborting rank 0's receiver when the peer's socket dies): not this test's subject.
    # The one-line rule is the next test's (a rank that fails and says why).
    import sqlite3

    con = sqlite3.connect(tmp_path / "run.db")
    stored = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    con.close()
    assert 0 < stored < 36  # what rank 0 received before the kill is kept
    again = run_cli(*args) if resume_with == 1 else torchrun(2, *args)
    assert again.returncode == 0, again.stderr
    same_answers(samples(one_process), samples(tmp_path / "run"))
    if resume_with == 2:  # the same world size: the same shards and batches, so the very same file
        whole = torchrun(2, *exam(sp_model_dir, tmp_path, "whole"))
        assert whole.returncode == 0, whole.stderr
        assert (tmp_path / "run" / "samples.jsonl").read_text() == (tmp_path / "whole" / "samples.jsonl").read_text()


def test_generation_and_classification_on_two_ranks_match_one_process(sp_model_dir, tmp_path):
    """The tiny model in float32 (the sharding is the job's, whatever the model; ShopBench
    below runs SmolLM2 on two ranks): greedy answers are independent of batch-mates (the
    continuous scheduler), so two ranks write the very same answers; label scores within 1e-4."""
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(json.loads(ALPACA_REF.read_text())[:6]))
    model = f"hf:{sp_model_dir},dtype=float32"
    gen = ["generate", "--models", model, "--prompts", str(prompts), "--max-new-tokens", "16", "--greedy", "--raw",
           "--quiet"]
    cls = ["eval", model, "--task", "classify", "--data", str(CHNSENTICORP), "--text-column", "review",
           "--labels", "0=负面,1=正面", "--split", "0.8", "--test-size", "8", "--shots", "1", "--quiet"]
    for tag, run in (("one", run_cli), ("two", lambda *a: torchrun(2, *a))):
        g = run(*gen, "--out", str(tmp_path / f"g{tag}"), "--db", str(tmp_path / f"{tag}.db"))
        assert g.returncode == 0, g.stderr
        c = run(*cls, "--out", str(tmp_path / f"c{tag}"), "--db", str(tmp_path / f"{tag}.db"))
        assert c.returncode == 0, c.stderr
    assert json.loads((tmp_path / "gone" / "output.json").read_text()) == json.loads(
        (tmp_path / "gtwo" / "output.json").read_text())
    one, two = (json.loads((tmp_path / f"c{t}" / "classify.json").read_text()) for t in ("one", "two"))
    assert one["accuracy"] == two["accuracy"]
    rows = [[json.loads(x) for x in (tmp_path / f"c{t}" / "samples.jsonl").read_text().splitlines()]
            for t in ("one", "two")]
    assert len(rows[1]) == 8
    for a, b in zip(*rows, strict=True):
        assert a["line"] == b["line"] and a["pred"] == b["pred"]
        assert max(abs(x - y) for x, y in zip(a["scores"], b["scores"], strict=True)) < 1e-4
    assert two["provenance"]["parallel"]["world_size"] == 2


def test_a_command_that_does_not_shard_is_a_one_line_error_under_torchrun(tmp_path):
    r = torchrun(2, "board", "--db", str(tmp_path / "x.db"))
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode != 0 and len(lines) == 1 and "does not run under torchrun" in lines[0], r.stderr


def test_local_judge_on_two_ranks_gives_one_process_board(tmp_path):
    import csv

    outputs = tmp_path / "outputs.json"
    entries = json.loads(ALPACA_REF.read_text())[:4]
    outputs.write_text(json.dumps([{**e, "output": e["output"][:160], "generator": "short"} for e in entries]))
    args = ["judge", "--outputs", str(outputs), "--reference", str(short_reference(tmp_path)), "--judge",
            "smollm2,dtype=float32", "--both-orders", "--quiet"]
    one = run_cli(*args, "--leaderboard", str(tmp_path / "one.csv"), "--db", str(tmp_path / "one.db"))
    two = torchrun(2, *args, "--leaderboard", str(tmp_path / "two.csv"), "--db", str(tmp_path / "two.db"))
    assert one.returncode == 0 and two.returncode == 0, (one.stderr, two.stderr)
    a, b = (list(csv.DictReader((tmp_path / f"{t}.csv").open())) for t in ("one", "two"))
    assert len(a) == len(b) == 1
    for k, v in a[0].items():
        try:
            assert abs(float(v) - float(b[0][k])) < 1e-3, k
        except ValueError:
            assert v == b[0][k], k
    import sqlite3

    con = sqlite3.connect(tmp_path / "two.db")  # rank 0 stored both ranks' judgments
    assert con.execute("SELECT count(*) FROM judgments").fetchone()[0] == 8
    con.close()


def test_a_rank_that_fails_stops_the_job_with_its_line(sp_model_dir, tmp_path):
    r = torchrun(2, *exam(sp_model_dir, tmp_path, "f"), env={"LMBOARD_FAULT": "engine.batch=1:INT",
                                                             "LMBOARD_FAULT_RANK": "1"})
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: rank 1: interrupted"), r.stderr


def test_shopbench_on_two_ranks_gives_one_process_answers(tmp_path):
    """float32, greedy, the continuous scheduler: the same answers, the same scores."""
    args = ["eval", "smollm2,dtype=float32", "--task", "shopbench", "--data", str(DATA / "shopbench" / "development.json"),
            "--tasks", "task2,task12", "--quiet"]
    one = run_cli(*args, "--out", str(tmp_path / "one"), "--db", str(tmp_path / "one.db"))
    two = torchrun(2, *args, "--out", str(tmp_path / "two"), "--db", str(tmp_path / "two.db"))
    assert one.returncode == 0 and two.returncode == 0, (one.stderr, two.stderr)
    a, b = ([json.loads(x) for x in (tmp_path / t / "samples.jsonl").read_text().splitlines()] for t in ("one", "two"))
    assert [(r["index"], r["response"], r["score"]) for r in a] == [(r["index"], r["response"], r["score"]) for r in b]
    sa, sb = (json.loads((tmp_path / t / "scores.json").read_text()) for t in ("one", "two"))
    assert sa["overall"] == sb["overall"] and sb["provenance"]["parallel"]["world_size"] == 2


def test_generate_for_two_models_on_two_ranks(sp_model_dir, tmp_path):
    """Each model is a phase of its own: rank 0 stores each model's answers under its run."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"the room was clean {i}\n" for i in range(6)))
    args = ["generate", "--models", f"hf:{sp_model_dir},dtype=float32,label=a",
            f"hf:{sp_model_dir},dtype=float32,label=b", "--prompts", str(prompts), "--max-new-tokens", "6",
            "--greedy", "--raw", "--quiet"]
    one = run_cli(*args, "--out", str(tmp_path / "one"), "--db", str(tmp_path / "one.db"))
    two = torchrun(2, *args, "--out", str(tmp_path / "two"), "--db", str(tmp_path / "two.db"))
    assert one.returncode == 0 and two.returncode == 0, (one.stderr, two.stderr)
    a, b = (json.loads((tmp_path / t / "output.json").read_text()) for t in ("one", "two"))
    assert a == b and len(b) == 12 and {e["generator"] for e in b} == {"a", "b"}


def test_task_yamls_on_two_ranks_match_one_process(tmp_path):
    """A task YAML (generate_until with filters, and a group of multiple_choice tasks) on the
    fake backend: two ranks write the same samples and results as one process."""
    fixtures = ROOT / "tests" / "fixtures" / "harness"
    fake = str(ROOT / "tests" / "fake_backend.py")
    for tag, run in (("one", run_cli), ("two", lambda *a: torchrun(2, *a))):
        for task in ("arith_words", "mmlu_local_pair"):
            r = run("eval", "fake:table", "--plugins", fake, "--task", task, "--include-path", str(fixtures),
                    "--limit", "6", "--out", str(tmp_path / f"{tag}-{task}"), "--db", str(tmp_path / f"{tag}.db"),
                    "--quiet")
            assert r.returncode == 0, r.stderr
    for name, files in (("arith_words", ["samples_arith_words.jsonl"]),
                        ("mmlu_local_pair", ["samples_mmlu_local_anatomy.jsonl", "samples_mmlu_local_astronomy.jsonl"])):
        for f in files:
            one = (tmp_path / f"one-{name}" / f).read_text()
            assert one and one == (tmp_path / f"two-{name}" / f).read_text()
        docs = [json.loads((tmp_path / f"{t}-{name}" / "results.json").read_text()) for t in ("one", "two")]
        assert docs[0]["results"] == docs[1]["results"]
        assert {p["provenance"]["parallel"]["world_size"] for p in docs[1]["lmboard"].values()} == {2}
