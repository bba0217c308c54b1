"""Crash safety, proven by fault injection: a run killed anywhere (SIGKILL, or Ctrl-C as
SIGINT), then the same command: it resumes, redoes at most the work in flight, and its
files equal an uninterrupted run's. Faults are placed exactly with LMBOARD_FAULT
(lmboard/faults.py): inside a store transaction, between scoring batches, during the
float32 recheck, between generated answers, between judged chunks."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ALPACA_REF, CHNSENTICORP, MMLU, ROOT, lmboard, run_cli, short_reference

KILLED = {"KILL": -signal.SIGKILL, "INT": 130}  # 130: lmboard's exit code after Ctrl-C


def rows(db: Path) -> dict[str, tuple[float, str]]:
    """key -> (when stored, state) of every sample in the store."""
    if not db.exists():
        return {}
    con = sqlite3.connect(db)
    try:
        return {k: (c, s) for k, c, s in con.execute("SELECT key, created, state FROM samples")}
    finally:
        con.close()


def statuses(db: Path) -> set[str]:
    con = sqlite3.connect(db)
    try:
        return {s for (s,) in con.execute("SELECT status FROM runs")}
    finally:
        con.close()


def judgments(db: Path) -> dict[str, float]:
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT cache_key, created FROM judgments"))
    finally:
        con.close()


def files(out: Path) -> dict[str, str]:
    """Every result file, minus what legitimately differs between runs (times, run ids, counters)."""
    got = {}
    for p in sorted(out.rglob("*")):
        if p.suffix in (".csv", ".jsonl", ".json") and not p.name.endswith(".missing.json"):
            text = p.read_text()
            if p.suffix == ".json" and not p.name.startswith("output"):
                doc = json.loads(text)
                for k in ("cost_time", "provenance", "run_id", "engine"):
                    doc.pop(k, None) if isinstance(doc, dict) else None
                text = json.dumps(doc, sort_keys=True)
            if p.name == "generations.jsonl":  # latency and run id vary
                text = "\n".join(json.dumps({k: v for k, v in json.loads(line).items() if k not in ("latency_s",)},
                                            sort_keys=True) for line in text.splitlines())
            got[str(p.relative_to(out))] = text
    return got


def report(case: str, before: dict, after: dict, redone: int, identical: bool) -> bool:
    """With LMBOARD_FAULT_REPORT=FILE, one JSON line per case (the closing note's table)."""
    path = os.environ.get("LMBOARD_FAULT_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"case": case, "total": len(after), "stored_at_kill": len(before),
                                "pending_at_kill": sum(1 for _, s in before.values() if s == "pending"),
                                "rewritten_by_resume": redone, "computed_by_resume": len(after) - len(before) + redone,
                                "files_identical": identical}) + "\n")
    return identical


def kill_and_resume(args: list[str], tmp: Path, name: str, fault: str) -> tuple[dict, dict, int]:
    """Run with the fault (it must die of it), then again: (rows at the kill, rows after, redone)."""
    db, out = tmp / f"{name}.db", tmp / name
    full = [*args, "--db", str(db), "--out", str(out), "--quiet"]
    sig = fault.rsplit(":", 1)[1] if ":" in fault else "KILL"
    r = lmboard(*full, env={"LMBOARD_FAULT": fault})
    assert r.returncode == KILLED[sig], (fault, r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    if sig == "INT":  # Ctrl-C: the run is marked interrupted and the line says how to go on
        assert f"to go on, run the same command again: lmboard {args[0]}" in r.stderr, r.stderr
        assert statuses(db) == {"interrupted"}
    before = rows(db)
    again = run_cli(*full)  # the resume: the same command (in this process; only the kill needs its own)
    assert again.returncode == 0, again.stderr
    after = rows(db)
    redone = sum(1 for k, (c, _) in before.items() if after[k][0] != c)
    return before, after, redone


EXAM = ["eval", "smollm2,dtype=float32", "--task", "mmlu", "--data", str(MMLU), "--subjects", "anatomy,astronomy", "--limit", "12",
        "--shots", "2", "--batch-tokens", "300"]


@pytest.fixture(scope="module")
def exam_reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exam_ref")
    r = run_cli(*EXAM, "--out", str(tmp / "out"), "--db", str(tmp / "db"), "--quiet")
    assert r.returncode == 0, r.stderr
    return files(tmp / "out"), len(rows(tmp / "db"))


@pytest.mark.parametrize("fault", ["store.write=2", "engine.batch=3", "engine.batch=2:INT", "store.write=3:INT"])
def test_exam_float32_resumes_to_the_same_files(exam_reference, tmp_path, fault):
    ref_files, n = exam_reference
    before, after, redone = kill_and_resume(EXAM, tmp_path, "run", fault)
    assert report(f"eval mmlu float32, {fault}", before, after, redone, files(tmp_path / "run") == ref_files)
    assert 0 < len(before) < n and len(after) == n
    assert redone == 0  # a stored batch is never scored again


def tiny_bf16_exam(sp_model_dir: Path) -> list[str]:
    """bfloat16 with the float32 recheck on (its margin calibrated in the run): a tiny
    random model has many close calls."""
    return ["eval", f"hf:{sp_model_dir},dtype=bfloat16", "--task", "mmlu", "--data", str(MMLU),
            "--subjects", "anatomy,astronomy,abstract_algebra", "--limit", "30", "--shots", "1",
            "--batch-tokens", "256"]


def reference(tmp_path_factory, name: str, args: list[str]) -> Path:
    """An uninterrupted run's output folder, made once for the cases that compare with it."""
    tmp = tmp_path_factory.mktemp(name)
    r = run_cli(*args, "--out", str(tmp / "ref"), "--db", str(tmp / "ref.db"), "--quiet")
    assert r.returncode == 0, r.stderr
    return tmp / "ref"


@pytest.fixture(scope="module")
def bf16_reference(tmp_path_factory, sp_model_dir):
    ref = reference(tmp_path_factory, "bf16_ref", tiny_bf16_exam(sp_model_dir))
    prov = json.loads(next(ref.glob("accuracies_*.json")).read_text())["provenance"]["engine"]
    assert prov["rechecked"] > 0 and prov["batches"] > 8  # the recheck runs, in more than one group
    return files(ref)


@pytest.mark.parametrize("fault", ["recheck=1", "recheck=2:INT", "store.write=4", "engine.batch=9"])
def test_bfloat16_recheck_is_a_resumable_stage(sp_model_dir, bf16_reference, tmp_path, fault):
    args = tiny_bf16_exam(sp_model_dir)
    before, after, redone = kill_and_resume(args, tmp_path, "run", fault)
    assert report(f"eval mmlu bfloat16 + recheck, {fault}", before, after, redone,
                  files(tmp_path / "run") == bf16_reference)
    assert before and all(state == "final" for _, state in after.values()) and len(after) == 90
    if fault.startswith("recheck"):
        assert any(state == "pending" for _, state in before.values())  # stored, waiting for the recheck
    # redone: at most the rows of the group being decided (their bfloat16 rows were
    # stored as pending and are replaced by final ones)
    pending = sum(1 for _, s in before.values() if s == "pending")
    assert redone <= pending


def classify_args(sp_model_dir: Path) -> list[str]:
    """On the tiny model: what is checked (each review stored as scored, nothing scored
    twice, the files of an uninterrupted run) is the job's, whatever the model."""
    return ["eval", f"hf:{sp_model_dir},dtype=float32", "--task", "classify", "--data", str(CHNSENTICORP),
            "--text-column", "review", "--labels", "0=负面,1=正面", "--split", "0.8", "--test-size", "10", "--shots", "1"]


@pytest.fixture(scope="module")
def classify_reference(tmp_path_factory, sp_model_dir):
    return files(reference(tmp_path_factory, "classify_ref", classify_args(sp_model_dir)))


@pytest.mark.parametrize("fault", ["store.write=4", "store.write=4:INT"])
def test_classification_resumes(classify_reference, sp_model_dir, tmp_path, fault):
    before, after, redone = kill_and_resume(classify_args(sp_model_dir), tmp_path, "run", fault)
    assert report(f"eval classify loglik, {fault}", before, after, redone,
                  files(tmp_path / "run") == classify_reference)
    assert len(before) == 3 and len(after) == 10 and redone == 0


def prompts_file(tmp: Path, n: int) -> Path:
    p = tmp / "prompts.json"
    p.write_text(json.dumps(json.loads(ALPACA_REF.read_text())[:n]))
    return p


def generation_args(tmp: Path, sp_model_dir: Path) -> list[str]:
    """On the tiny model (raw text: it has no chat template), as classify_args."""
    return ["generate", "--models", f"hf:{sp_model_dir},dtype=float32", "--prompts", str(prompts_file(tmp, 6)),
            "--max-new-tokens", "12", "--greedy", "--batch-size", "2", "--raw"]


@pytest.fixture(scope="module")
def generation_reference(tmp_path_factory, sp_model_dir):
    tmp = tmp_path_factory.mktemp("gen_args")
    return files(reference(tmp_path_factory, "gen_ref", generation_args(tmp, sp_model_dir))), tmp


@pytest.mark.parametrize("fault", ["generate.result=3", "store.write=4:INT"])
def test_generation_resumes_with_the_same_answers(generation_reference, sp_model_dir, tmp_path, fault):
    ref_files, prompts_dir = generation_reference
    before, after, redone = kill_and_resume(generation_args(prompts_dir, sp_model_dir), tmp_path, "run", fault)
    assert report(f"generate, {fault}", before, after, redone, files(tmp_path / "run") == ref_files)
    assert 0 < len(before) < 6 and len(after) == 6
    assert redone == 0  # a batch with an answer left runs whole, but stored answers are kept


@pytest.mark.parametrize("fault", ["judge.chunk=1", "store.write=1:INT"])
def test_local_judge_resumes(tmp_path, fault):
    outputs = tmp_path / "outputs.json"
    ref_entries = json.loads(ALPACA_REF.read_text())[:2]
    outputs.write_text(json.dumps([{**e, "output": e["output"][:200], "generator": "short"} for e in ref_entries]))
    args = ["judge", "--outputs", str(outputs), "--reference", str(short_reference(tmp_path)), "--judge",
            "smollm2,dtype=float32", "--both-orders"]
    ref = run_cli(*args, "--leaderboard", str(tmp_path / "ref" / "board.csv"), "--db", str(tmp_path / "ref.db"), "--quiet")
    assert ref.returncode == 0, ref.stderr
    r = lmboard(*args, "--leaderboard", str(tmp_path / "run" / "board.csv"), "--db", str(tmp_path / "run.db"),
                "--quiet", env={"LMBOARD_FAULT": fault})
    assert r.returncode == KILLED["INT" if fault.endswith(":INT") else "KILL"], r.stderr
    assert not judgments(tmp_path / "run.db")  # the chunk in flight is lost (a write is rolled back)
    again = run_cli(*args, "--leaderboard", str(tmp_path / "run" / "board.csv"), "--db", str(tmp_path / "run.db"))
    assert again.returncode == 0 and len(judgments(tmp_path / "run.db")) == 4
    same = (tmp_path / "run" / "board.csv").read_text() == (tmp_path / "ref" / "board.csv").read_text()
    assert report(f"judge, local judge, {fault}", {}, {k: (v, "final") for k, v in judgments(tmp_path / "run.db").items()},
                  0, same)
    rerun = run_cli(*args, "--leaderboard", str(tmp_path / "run" / "board.csv"), "--db", str(tmp_path / "run.db"))
    assert "judge requests sent: 0" in rerun.stdout


def test_a_changed_setting_starts_a_new_run_and_says_so(sp_model_dir, tmp_path):
    db = str(tmp_path / "db")
    args = tiny_bf16_exam(sp_model_dir) + ["--out", str(tmp_path / "o"), "--db", db]
    first = run_cli(*args, "--recheck-margin", "0.02")
    assert first.returncode == 0, first.stderr
    second = run_cli(*args, "--recheck-margin", "0.1")
    assert second.returncode == 0 and "new run" in second.stderr and "recheck_margin" in second.stderr
    same = run_cli(*args, "--recheck-margin", "0.1", "--batch-tokens", "128")  # batching changes no result
    assert same.returncode == 0 and "resuming run" in same.stderr
    gen = ["generate", "--models", "smollm2,dtype=float32", "--prompts", str(prompts_file(tmp_path, 2)),
           "--max-new-tokens", "4", "--out", str(tmp_path / "g"), "--db", db]
    assert run_cli(*gen, "--batch-size", "1").returncode == 0
    r = run_cli(*gen, "--batch-size", "2")
    assert r.returncode == 0 and "new run" in r.stderr and "batch_size" in r.stderr


def test_two_identical_processes_do_the_work_once(tmp_path):
    db = tmp_path / "db"
    procs = [subprocess.Popen([sys.executable, "-m", "lmboard", *EXAM, "--out", str(tmp_path / f"o{i}"),
                               "--db", str(db)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    results = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert sum("waiting: run" in err for _, err in results) == 1
    engines = [json.loads(next((tmp_path / f"o{i}").glob("accuracies_*.json")).read_text())["provenance"].get("engine")
               for i in range(2)]
    assert sum(e is not None for e in engines) == 1  # the second found every question stored
    assert files(tmp_path / "o0") == files(tmp_path / "o1")
