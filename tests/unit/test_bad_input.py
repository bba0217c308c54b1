"""A user's mistake is one line on stderr and exit code 2, never a traceback (the CLI in
this process; tests/e2e runs the same command line in subprocesses)."""

import shutil

import pytest

from helpers import MMLU
from helpers import check_one_line_error as check
from helpers import run_cli as lmboard


@pytest.fixture
def bad_data(tmp_path):
    d = tmp_path / "mmlu"
    (d / "test").mkdir(parents=True)
    shutil.copy(MMLU / "test" / "anatomy_test.csv", d / "test" / "anatomy_test.csv")
    return d


def test_missing_data_folder(tmp_path):
    check(lmboard("eval", "smollm2", "--data", str(tmp_path / "nope"), "--db", str(tmp_path / "db")), "no such folder")


def test_a_folder_where_a_file_is_expected_and_a_folder_without_the_layout(tmp_path):
    check(lmboard("eval", "smollm2", "--task", "classify", "--data", str(tmp_path), "--labels", "0=a,1=b",
                  "--db", str(tmp_path / "db")), f"--data: {tmp_path}: is a folder, not a file")
    check(lmboard("eval", "smollm2", "--data", str(tmp_path), "--db", str(tmp_path / "db")),
          f"no mmlu files in it (expected {tmp_path}/test/<subject>_test.csv", "hendrycks layout")
    check(lmboard("eval", "smollm2", "--task", "cmmlu", "--data", str(tmp_path), "--db", str(tmp_path / "db")),
          "categories.json")


def test_unknown_subject(tmp_path):
    check(lmboard("eval", "--data", str(MMLU), "--subjects", "anatomy,basket_weaving", "--db", str(tmp_path / "db")),
          "basket_weaving")


def test_row_with_wrong_column_count_names_file_and_line(bad_data, tmp_path):
    f = bad_data / "test" / "anatomy_test.csv"
    lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(3, "What?,a,b,c,A\n")
    f.write_text("".join(lines), encoding="utf-8")
    r = lmboard("eval", "--data", str(bad_data), "--db", str(tmp_path / "db"))
    check(r, "anatomy_test.csv:4:", "expected 6 columns, got 5")


def test_answer_outside_a_to_d(bad_data, tmp_path):
    f = bad_data / "test" / "anatomy_test.csv"
    f.write_text(f.read_text(encoding="utf-8") + "What?,a,b,c,d,E\n", encoding="utf-8")
    r = lmboard("eval", "--data", str(bad_data), "--db", str(tmp_path / "db"))
    check(r, "anatomy_test.csv:", "answer 'E' is not one of A/B/C/D")


def test_unknown_model_alias(tmp_path):
    check(lmboard("eval", "gpt-17", "--data", str(MMLU), "--db", str(tmp_path / "db")), "unknown model alias")


def test_gguf_path_that_does_not_exist(tmp_path):
    check(lmboard("eval", f"hf:{tmp_path}/missing.gguf", "--data", str(MMLU), "--subjects", "anatomy",
                  "--db", str(tmp_path / "db")), "does not exist")


def test_negative_shots(tmp_path):
    check(lmboard("eval", "--shots", "-1", "--db", str(tmp_path / "db")), "--shots must be >= 0")


def test_bad_flag(tmp_path):
    check(lmboard("eval", "--colour", "red"), "--colour")


def test_unwritable_out(tmp_path, sp_model_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = lmboard("eval", f"hf:{sp_model_dir}", "--data", str(MMLU), "--subjects", "anatomy", "--limit", "2",
                "--shots", "0", "--out", str(blocker / "sub"), "--db", str(tmp_path / "db"), "--quiet")
    check(r, "--out", "cannot write")


def test_subject_without_test_file(bad_data, tmp_path):
    (bad_data / "dev").mkdir()
    (bad_data / "dev" / "virology_dev.csv").write_text("q,a,b,c,d,A\n")
    check(lmboard("eval", "--data", str(bad_data), "--subjects", "virology", "--db", str(tmp_path / "db")),
          "virology")


def test_unknown_scheduler(tmp_path):
    (tmp_path / "p.txt").write_text("hi\n")
    check(lmboard("generate", "--models", "smollm2", "--prompts", str(tmp_path / "p.txt"), "--scheduler", "eager",
                  "--db", str(tmp_path / "db")), "--scheduler: scheduler must be one of continuous, static")
    check(lmboard("speed", "smollm2", "--scheduler", "eager", "--db", str(tmp_path / "db")),
          "--scheduler: scheduler must be one of continuous, static")


def test_fewer_shots_than_asked_are_said(sp_model_dir, tmp_path):
    """A subject of one row and no dev split has no example to show: said, not silent."""
    (tmp_path / "one" / "test").mkdir(parents=True)
    first = (MMLU / "test" / "anatomy_test.csv").read_text(encoding="utf-8").splitlines()[0]
    (tmp_path / "one" / "test" / "anatomy_test.csv").write_text(first + "\n", encoding="utf-8")
    r = lmboard("eval", f"hf:{sp_model_dir}", "--data", str(tmp_path / "one"), "--shots", "5",
                "--db", str(tmp_path / "db"), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "note: fewer than --shots 5 examples" in r.stderr and "anatomy (1 of 1 questions, 0 to 0 shots)" in r.stderr
