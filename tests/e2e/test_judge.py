"""End to end: generate with SmolLM2 twice (greedy, sampled), judge with SmolLM2 served by
a real `transformers serve`, against the shared gpt4_1106_preview reference (its 805
instructions, each answer cut to 300 characters to keep the judge's prompts short)."""

import csv
import json
import re

import pytest

from helpers import ALPACA_REF as REF
from helpers import run_cli, short_reference


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    prompts = d / "prompts.json"
    prompts.write_text(json.dumps(json.loads(REF.read_text())[:10]))
    for label, flags in (("smollm2-greedy", ["--greedy"]), ("smollm2-sampled", ["--do-sample", "--temperature", "0.9"])):
        r = run_cli("generate", "--models", f"smollm2,label={label}", "--prompts", str(prompts), "--out",
                    str(d / label), "--max-new-tokens", "48", "--db", str(d / "db"), "--quiet", *flags)
        assert r.returncode == 0, r.stderr
    return d


def test_board_from_a_served_judge_and_zero_requests_on_rerun(generated, serve, tmp_path):
    board = tmp_path / "board.csv"
    args = ["judge", "--outputs", str(generated / "smollm2-greedy" / "output.json"),
            str(generated / "smollm2-sampled" / "output.json"), "--reference", str(short_reference(tmp_path)),
            "--judge", f"openai:{serve.model}@{serve.url}", "--leaderboard", str(board), "--db", str(tmp_path / "db")]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    first = int(re.search(r"judge requests sent: (\d+)", r.stdout).group(1))
    assert first >= 20  # 2 generators x 10 instructions (+ retries of unparsable answers)
    rows = {row[""]: row for row in csv.DictReader(open(board))}
    assert set(rows) == {"smollm2-greedy", "smollm2-sampled"}
    for row in rows.values():
        assert int(row["n_total"]) + int(row["n_invalid"]) == 10 and row["judge"]
        assert (row["lmboard_length_controlled_winrate"] != "") == (int(row["n_total"]) > 0)
    assert sum(int(row["n_total"]) for row in rows.values()) > 0  # the served judge gave usable answers
    # the reference has 805 instructions, the outputs 10: listed, not silently dropped
    missing = json.loads(board.with_suffix(".missing.json").read_text())
    assert len(missing["smollm2-greedy"]["not_in_outputs"]) == 795
    first_board = board.read_text()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "judge requests sent: 0" in again.stdout
    assert board.read_text() == first_board  # the cached judgments rebuild the same board


def test_judge_bad_input(generated, tmp_path):
    no_gen = tmp_path / "nogen.json"
    no_gen.write_text(json.dumps([{"instruction": "x", "output": "y"}]))
    r = run_cli("judge", "--outputs", str(no_gen), "--reference", str(REF), "--judge", "smollm2")
    assert r.returncode == 2 and "nogen.json: entry 0: missing field 'generator'" in r.stderr
    r = run_cli("judge", "--outputs", str(generated / "smollm2-greedy" / "output.json"), "--reference", str(REF),
                "--judge", "openai:m@http://127.0.0.1:9/v1", "--leaderboard", str(tmp_path / "b.csv"),
                "--db", str(tmp_path / "db"), "--quiet")
    assert r.returncode == 2 and "unreachable" in r.stderr and "Traceback" not in r.stderr
    bad_ref = tmp_path / "ref.json"
    bad_ref.write_text(json.dumps([{"instruction": "something else", "output": "z"}]))
    r = run_cli("judge", "--outputs", str(generated / "smollm2-greedy" / "output.json"), "--reference", str(bad_ref),
                "--judge", "smollm2", "--db", str(tmp_path / "db"))
    assert r.returncode == 2 and "no instruction in common" in r.stderr


def test_local_judge_reads_label_probabilities(generated, tmp_path):
    board = tmp_path / "b.csv"
    r = run_cli("judge", "--outputs", str(generated / "smollm2-greedy" / "output.json"), "--reference",
                str(short_reference(tmp_path)), "--judge", "smollm2,dtype=float32", "--both-orders", "--leaderboard", str(board),
                "--db", str(tmp_path / "db"))
    assert r.returncode == 0, r.stderr
    (row,) = list(csv.DictReader(open(board)))
    assert int(row["n_total"]) == 10 and int(row["n_invalid"]) == 0
    assert 0 < float(row["win_rate"]) < 100 and row["consistency"] != ""


def test_single_mode_grades_with_a_plugin_judge(generated, tmp_path):
    (tmp_path / "grader.py").write_text(
        "from lmboard import register_llm_infer\n"
        "@register_llm_infer('grader')\n"
        "def grader(texts, **kw):\n"
        "    return ['Fine. [[7]]' if 'Reference answer' in t else 'no grade' for t in texts]\n")
    board = tmp_path / "single.csv"
    r = run_cli("judge", "--mode", "single", "--outputs", str(generated / "smollm2-greedy" / "output.json"),
                "--reference", str(REF), "--judge", "plugin:grader", "--plugins", str(tmp_path / "grader.py"),
                "--leaderboard", str(board), "--db", str(tmp_path / "db"))
    assert r.returncode == 0, r.stderr
    (row,) = list(csv.DictReader(open(board)))
    assert float(row["mean_score"]) == 7 and int(row["n_total"]) == 10 and int(row["n_invalid"]) == 0
    assert "mean grade 7.00" in r.stdout
