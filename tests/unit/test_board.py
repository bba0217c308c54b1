"""lmboard board without a browser: the statistics against hand-computed cases, the
columns that keep different settings apart, missing values, the text formats."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import pytest

from board_store import XSS, sample_store
from helpers import check_one_line_error as check
from helpers import run_cli as lmboard
from lmboard.metrics.paired import cluster_bootstrap_ci, mcnemar_exact, paired_comparison
from lmboard.report.board_collect import build


def test_mcnemar_exact_by_hand():
    # b=5, c=1: P(X <= 1) for Binomial(6, 1/2) = (1 + 6) / 64; two-sided doubles it
    assert mcnemar_exact(5, 1) == pytest.approx(14 / 64)
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_exact(3000, 2900) == pytest.approx(0.1979, abs=1e-3)  # n beyond a float's 2**1023


def test_cluster_bootstrap_resamples_subjects_not_questions():
    # two subjects of 10 questions, all right in one and all wrong in the other: the
    # subject-level interval spans [0, 1]; a question-level bootstrap would give ~[0.28, 0.72]
    vals, clus = [1.0] * 10 + [0.0] * 10, ["a"] * 10 + ["b"] * 10
    lo, hi = cluster_bootstrap_ci(vals, clus)
    assert lo == 0.0 and hi == 1.0
    # identical subjects: every resample has the same accuracy
    assert cluster_bootstrap_ci([1, 0, 1, 0], ["a", "a", "b", "b"]) == (0.5, 0.5)


def test_paired_comparison_on_questions_both_answered():
    a = {"q1": True, "q2": True, "q3": False, "q4": True, "q5": False, "only_a": True}
    b = {"q1": True, "q2": False, "q3": False, "q4": False, "q5": True, "only_b": False}
    p = paired_comparison(a, b, {k: "s" for k in a | b})
    assert (p.n, p.a_only, p.b_only) == (5, 2, 1)
    assert p.difference == pytest.approx((2 - 1) / 5)
    assert p.p_value == pytest.approx(1.0)  # 2 vs 1 discordant: 2 * P(X <= 1 | n=3) = 2 * 4/8
    # without clusters each question is its own: the interval has width (it did not once)
    q = paired_comparison(a, b, {})
    assert q.low < q.difference < q.high


def test_board_rows_columns_and_intervals(tmp_path):
    board = build(sample_store(tmp_path / "db"))
    assert set(board.models) == {"model-a · bfloat16", "model-b · float32", "model-c · bfloat16", XSS[1]}
    groups = {c.group for c in board.columns.values()}
    assert {"MMLU 5-shot", "MMLU 0-shot", "speed 256+64 tokens on test cpu", "judged vs gpt4 · judge smollm2"} <= groups
    acc = next(c for c in board.columns.values() if c.group == "MMLU 5-shot" and c.label == "accuracy")
    cell = board.cells[("model-a · bfloat16", acc.key)]
    assert cell.value == pytest.approx(70.0) and cell.n == 20 and acc.unit == "%" and acc.main
    # two subjects: too few for a cluster bootstrap, so Wilson's interval, and the cell says so
    assert cell.low < 70 < cell.high and cell.interval.startswith("Wilson, 20 items (2 subjects")
    # model-c ran 0-shot: no 5-shot cell (missing, not 0), and a 0-shot column of its own
    assert ("model-c · bfloat16", acc.key) not in board.cells
    # the judged generator is matched to the generate run's model row
    win = next(c for c in board.columns.values() if c.label == "win rate")
    assert board.cells[("model-a · bfloat16", win.key)].value == 62.5
    lc = next(c for c in board.columns.values() if c.label == "LC win rate (lmboard fit)")
    assert board.cells[("model-a · bfloat16", lc.key)].value is None
    comp = board.comparisons()[acc.key]
    # aligned by question: A is right and B wrong on anatomy 5-7 and astronomy 3-5, never the reverse
    assert len(comp) == 1 and (comp[0]["n"], comp[0]["a_only"], comp[0]["b_only"]) == (20, 6, 0)
    assert comp[0]["p_value"] == pytest.approx(2 / 64) and comp[0]["difference"] == pytest.approx(6 / 20)
    assert comp[0]["interval"].startswith("paired bootstrap over 20 items (2 subjects")


def test_board_formats_and_errors(tmp_path):
    sample_store(tmp_path / "db")
    r = lmboard("board", "--db", str(tmp_path / "db"), "--format", "json")
    doc = json.loads(r.stdout)
    assert len(doc["models"]) == 4 and doc["comparisons"]
    assert all(c["value"] is None or not math.isnan(c["value"]) for c in doc["cells"])
    md = lmboard("board", "--db", str(tmp_path / "db"), "--format", "md", "--models", "model-b").stdout
    assert md.count("\n") == 3 and "model-b" in md and "—" in md
    r = lmboard("board", "--db", str(tmp_path / "db"), "--out", str(tmp_path / "b.csv"))
    assert r.returncode == 0 and (tmp_path / "b.csv").read_text().startswith("model,dtype,adapter,")
    check(lmboard("board", "--db", str(tmp_path / "none.db")), "no store at")
    check(lmboard("board", "--db", str(tmp_path / "db"), "--format", "pdf"), "--format must be one of")
    check(lmboard("board", "--db", str(tmp_path / "db"), "--models", "nobody"), "no finished run of nobody")


def test_html_is_self_contained_and_escapes_model_text(tmp_path):
    sample_store(tmp_path / "db")
    r = lmboard("board", "--db", str(tmp_path / "db"), "--out", str(tmp_path / "b.html"))
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "b.html").read_text()
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    for x in XSS:
        assert x not in html  # every '<' of model text is escaped inside the JSON blocks
    # no element loads anything (plotly.js names URLs in its code; the CSP blocks them)
    assert not re.search(r"<(script|link|img|iframe)[^>]*\b(src|href)=", html)


def test_imported_lm_eval_and_alpaca_eval_results_go_on_the_board(tmp_path):
    from helpers import DATA

    sample_store(tmp_path / "db")
    lm_eval = tmp_path / "results_2026-01-01.json"
    lm_eval.write_text(json.dumps({
        "results": {"mmlu": {"alias": "mmlu", "acc,none": 0.25, "acc_stderr,none": 0.01},
                    "arc_easy": {"acc,none": 0.5, "acc_stderr,none": "N/A", "acc_norm,none": 0.45}},
        "n-shot": {"mmlu": 5, "arc_easy": 0}, "config": {"model": "hf", "model_args": "pretrained=org/tiny,dtype=float32"},
    }))
    board_csv = DATA / "alpaca_eval" / "published_leaderboard_rows.csv"
    r = lmboard("board", "--db", str(tmp_path / "db"), "--import", str(lm_eval), str(board_csv), "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    models = {m["key"]: m for m in doc["models"]}
    assert models["org/tiny (imported)"]["imported"].endswith("results_2026-01-01.json")
    cols = {c["key"]: c for c in doc["columns"]}
    mmlu = next(c for c in doc["cells"] if c["model"] == "org/tiny (imported)"
                and cols[c["column"]]["group"] == "lm-eval mmlu 5-shot (imported)")
    assert mmlu["value"] == 25.0 and mmlu["low"] == pytest.approx(25 - 196 * 0.01)
    arc = next(c for c in doc["cells"] if c["model"] == "org/tiny (imported)"
               and cols[c["column"]]["group"] == "lm-eval arc_easy 0-shot (imported)")
    assert arc["value"] == 50.0 and arc["low"] is None  # no stderr: no interval
    null = [c for c in doc["cells"] if c["model"] == "NullModel (imported)" and cols[c["column"]]["label"] == "win rate"]
    assert null[0]["value"] == pytest.approx(76.91979180386511)
    # lmboard's own MMLU column stays apart from lm-eval's
    assert "MMLU 5-shot" in {c["group"] for c in doc["columns"]}
    lc = [c for c in doc["cells"] if c["model"] == "NullModel (imported)" and "LC" in cols[c["column"]]["label"]]
    assert cols[lc[0]["column"]]["label"] == "LC win rate (alpaca_eval)"  # the published fit, named as theirs
    again = lmboard("board", "--db", str(tmp_path / "db"), "--import", str(lm_eval), "--format", "json")
    assert len(json.loads(again.stdout)["models"]) == len(doc["models"])
    check(lmboard("board", "--db", str(tmp_path / "db"), "--import", str(tmp_path / "x.txt")), "no such file")
    (tmp_path / "x.json").write_text("{}")
    check(lmboard("board", "--db", str(tmp_path / "db"), "--import", str(tmp_path / "x.json")), "no 'results'")


def test_interval_rule_never_zero_width_and_says_which():
    from lmboard.metrics.paired import MIN_CLUSTERS, accuracy_interval

    # one subject, 20 questions, 25%: a cluster bootstrap would say [25, 25]; Wilson does not
    lo, hi, how = accuracy_interval([True] * 5 + [False] * 15, ["a"] * 20)
    assert lo < 0.25 < hi and hi - lo > 0.3 and how.startswith("Wilson, 20 items (1 subject:")
    # two subjects: not just the two subjects' scores
    lo, hi, _ = accuracy_interval([True] * 10 + [False] * 10, ["a"] * 10 + ["b"] * 10)
    assert 0 < lo < 0.5 < hi < 1
    # 0% and 100% still get width
    assert accuracy_interval([True] * 12, ["a"] * 12)[1] == 1.0 and accuracy_interval([True] * 12, ["a"] * 12)[0] < 1
    # enough subjects: the cluster bootstrap, named with its count
    subjects = [f"s{i}" for i in range(MIN_CLUSTERS) for _ in range(5)]
    lo, hi, how = accuracy_interval([i % 3 == 0 for i in range(len(subjects))], subjects)
    assert how == f"cluster bootstrap over {MIN_CLUSTERS} subjects" and lo < hi


def test_csv_json_and_terminal_units_and_widths(tmp_path):
    from lmboard.report.board_text import terminal_tables

    sample_store(tmp_path / "db")
    rows = list(csv.reader(io.StringIO(lmboard("board", "--db", str(tmp_path / "db"), "--format", "csv").stdout)))
    head = rows[0]
    # one unit per column, named in the header; shares in percent everywhere
    assert all(h.endswith(("[%]", "[tok/s]", "[s]", "[MB]", "interval")) for h in head[3:]), head
    i = head.index("MMLU 5-shot: accuracy [%]")
    a = next(r for r in rows if r[0] == "model-a")
    assert float(a[i]) == pytest.approx(70.0) and a[i + 3].startswith("Wilson")
    w = head.index("judged vs gpt4 · judge smollm2: win rate [%]")
    assert float(a[w]) == pytest.approx(62.5)
    doc = json.loads(lmboard("board", "--db", str(tmp_path / "db"), "--format", "json").stdout)
    assert doc["units"]["%"] == "percent" and {c["unit"] for c in doc["columns"]} <= {"%", "tok/s", "s", "MB"}
    (pair,) = next(iter(doc["comparisons"].values()))
    assert pair["difference"] == pytest.approx(30.0)  # percentage points
    # the terminal: at 80 columns every line fits, no column squeezed to a character
    from rich.console import Console

    board = build(sample_store(tmp_path / "db"))
    for width in (80, 120):
        console = Console(width=width, record=True, file=io.StringIO())
        for t in terminal_tables(board, width):
            console.print(t)
        text = console.export_text()
        assert max(len(x) for x in text.splitlines()) <= width
        assert "70.0 [48.1, 85.5]" in text and "62.5 [57.5, 67.5]" in text
    piped = lmboard("board", "--db", str(tmp_path / "db"))  # not a terminal: 120 columns
    assert piped.returncode == 0 and max(len(x) for x in piped.stdout.splitlines()) <= 120


def test_benchmark_names_not_file_names():
    from lmboard.report.board_collect import dataset_name

    assert dataset_name("/data/chnsenticorp/ChnSentiCorp_htl_all.csv") == "ChnSentiCorp"
    assert dataset_name("/data/reviews/my_reviews.csv") == "my_reviews"


def test_a_labelled_generator_joins_its_models_row(tmp_path):
    from board_store import judge_run, prov

    s = sample_store(tmp_path / "db")
    # model-b's weights and dtype, generated under another label (labels tell generators apart)
    p = prov("model-b", "float32")
    p["model_spec"] = {**p["model_spec"], "label": "gen-b"}
    s.open_run("gen-b", "generate", "gen-b", {}, p)
    s.finish_run("gen-b", {"n": 3})
    judge_run(s, "judge-b", "gen-b", 40.0, ["x"])
    board = build(s)
    win = next(c for c in board.columns.values() if c.label == "win rate")
    assert board.cells[("model-b · float32", win.key)].value == 40.0 and "gen-b" not in board.models
