"""Every output path, the store, every input and every flag is checked before any work:
a one-line error and exit code 2, and no model is loaded (``no_model`` fails the test
if one is)."""

import json
import shutil
import sqlite3

import pytest

from helpers import ALPACA_REF, CHNSENTICORP, CMMLU, DATA, MMLU, check_one_line_error, run_cli
from lmboard.store import Store


@pytest.fixture
def no_model(monkeypatch):
    def refuse(spec):
        raise AssertionError(f"a model was loaded: {spec}")

    monkeypatch.setattr("lmboard.cli.common.load_model", refuse)


@pytest.fixture
def prompts(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("Name a color.\n")
    return p


@pytest.fixture
def blocker(tmp_path):
    """A file where a folder would have to be."""
    b = tmp_path / "file"
    b.write_text("x")
    return b


def test_generate_out_that_cannot_be_written(no_model, prompts, blocker, tmp_path):
    r = run_cli("generate", "--models", "smollm2", "--prompts", str(prompts), "--out", str(blocker / "sub"),
                "--db", str(tmp_path / "db"))
    check_one_line_error(r, "--out", "cannot write")


def test_speed_out_and_plot_checked_first(no_model, blocker, tmp_path):
    check_one_line_error(run_cli("speed", "smollm2", "--out", str(tmp_path), "--db", str(tmp_path / "db")),
                         "--out", "is a folder")
    check_one_line_error(run_cli("speed", "smollm2", "--plot", str(blocker / "s.png"), "--db", str(tmp_path / "db")),
                         "--plot", "cannot write")


def test_judge_leaderboard_checked_first(no_model, blocker, tmp_path):
    outputs = tmp_path / "o.json"
    outputs.write_text(json.dumps([{"instruction": "x", "output": "y", "generator": "g"}]))
    r = run_cli("judge", "--outputs", str(outputs), "--reference", str(ALPACA_REF), "--judge", "smollm2",
                "--leaderboard", str(blocker / "board.csv"), "--db", str(tmp_path / "db"))
    check_one_line_error(r, "--leaderboard", "cannot write")
    assert not list(tmp_path.rglob("*.tmp"))


def _stores(tmp_path) -> dict:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database\n" * 50)
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.commit()
    con.close()
    truncated = tmp_path / "truncated.db"
    store = Store(truncated)
    store.open_run("r", "exam", "m", {}, {})
    store.add_samples("r", [(str(i), {"x": "y" * 500}) for i in range(400)])
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return {"garbage": (garbage, "not a SQLite database"), "foreign": (foreign, "another program's database"),
            "truncated": (truncated, "not a usable lmboard store")}


@pytest.mark.parametrize("kind", ["garbage", "foreign", "truncated"])
def test_a_store_that_is_not_ours_is_refused_by_every_command(no_model, prompts, tmp_path, kind):
    path, why = _stores(tmp_path)[kind]
    for args in (["eval", "smollm2", "--data", str(MMLU), "--subjects", "anatomy", "--out", str(tmp_path / "e")],
                 ["generate", "--models", "smollm2", "--prompts", str(prompts), "--out", str(tmp_path / "g")],
                 ["speed", "smollm2"]):
        check_one_line_error(run_cli(*args, "--db", str(path)), "--db", str(path), why)


def test_cmmlu_task_on_an_mmlu_folder(no_model, tmp_path):
    check_one_line_error(run_cli("eval", "--task", "cmmlu", "--data", str(MMLU), "--db", str(tmp_path / "db")),
                         "not CMMLU's categories.json", "name_en2zh")


@pytest.mark.parametrize("args, needle", [
    (["eval", "--limit", "0"], "--limit must be >= 1"),
    (["eval", "--limit", "-3"], "--limit must be >= 1"),
    (["eval", "--recheck-margin", "-1"], "--recheck-margin must be auto or a number >= 0"),
    (["eval", "--threads", "0"], "--threads must be >= 1"),
    (["eval", "--batch-size", "64"], "No such option"),  # one name for the token budget: --batch-tokens
    (["generate", "--models", "smollm2", "--prompts", "PROMPTS", "--concurrency", "0"], "--concurrency must be >= 1"),
    (["judge", "--annotations", "ANN", "--concurrency", "0"], "--concurrency must be >= 1"),
    (["eval", "--task", "classify", "--data", str(CHNSENTICORP), "--text-column", "review", "--labels", "0=负面,1=正面",
      "--template", "Review: {labels}"], "--template must contain {text}"),
    (["eval", "--task", "classify", "--data", str(CHNSENTICORP), "--text-column", "review", "--labels", "0=负面,1=正面",
      "--template", "{review}: {text}"], "only {labels} and {text}"),
    (["generate", "--models", "smollm2", "--prompts", "PROMPTS", "--top-k", "0"], "--top-k must be >= 1"),
])
def test_flags_are_validated(no_model, prompts, tmp_path, args, needle):
    ann = sorted((DATA / "alpaca_eval" / "annotations").glob("*.json"))[0]
    args = [str(prompts) if a == "PROMPTS" else str(ann) if a == "ANN" else a for a in args]
    check_one_line_error(run_cli(*args, "--db", str(tmp_path / "db")), needle)


def test_empty_annotations_are_an_error(tmp_path):
    (tmp_path / "empty.json").write_text("[]")
    check_one_line_error(run_cli("judge", "--annotations", str(tmp_path / "empty.json"), "--leaderboard",
                                 str(tmp_path / "b.csv")), "empty.json: no annotations")


def test_speed_work_longer_than_the_context(sp_model_dir, tmp_path):
    """Checked right after the (tiny) model loads, before anything is measured."""
    r = run_cli("speed", f"hf:{sp_model_dir}", "--prompt-tokens", "100000", "--new-tokens", "8",
                "--db", str(tmp_path / "db"), "--quiet")
    check_one_line_error(r, "--prompt-tokens 100000 + --new-tokens 8 exceed the model's context of 2048")


def test_a_header_row_in_a_hendrycks_csv_is_skipped(tmp_path):
    from lmboard.tasks.mmlu import MMLU as MMLUTask

    (tmp_path / "test").mkdir()
    shutil.copy(MMLU / "test" / "elementary_mathematics_test.csv", tmp_path / "test")
    first = (tmp_path / "test" / "elementary_mathematics_test.csv").read_text().splitlines()[0]
    assert first.startswith("question,answer_a")  # this copy of the data has a header
    qs = MMLUTask().load_split(tmp_path, "elementary_mathematics", "test")
    assert qs[0].index == 0 and qs[0].question != "question" and all(q.answer in "ABCD" for q in qs)


def test_version_and_help_that_is_not_cut_when_piped():
    from lmboard.version import __version__

    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"lmboard {__version__}"
    r = run_cli("eval", "--help")
    assert r.returncode == 0 and "--recheck-margin" in r.stdout and "--threads" in r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) > 100  # not wrapped at 80 columns


def test_cmmlu_still_loads(no_model):
    from lmboard.tasks.cmmlu import CMMLU as CMMLUTask

    assert "anatomy" in CMMLUTask().subjects(CMMLU)
