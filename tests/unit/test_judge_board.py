"""The board from alpaca_eval's published annotations: exact columns, offline length control."""

import csv
import json

import numpy as np
import pytest

from helpers import DATA, run_cli
from lmboard.judge.board import build_board, read_annotations
from lmboard.judge.stats import head2head, spearman

AE = DATA / "alpaca_eval"
FILES = sorted((AE / "annotations").glob("*.json"))


@pytest.fixture(scope="module")
def published():
    return {r[""]: r for r in csv.DictReader(open(AE / "published_leaderboard_rows.csv"))}


@pytest.fixture(scope="module")
def board():
    return {r["name"]: r for r in build_board(read_annotations(FILES))}


def test_reproduces_the_published_columns(board, published):
    assert set(board) == set(published) and len(board) == 22
    for name, p in published.items():
        row = board[name]
        for k in ("win_rate", "standard_error", "discrete_win_rate"):
            assert row[k] == pytest.approx(float(p[k]), abs=1e-6), (name, k)
        for k in ("n_wins", "n_wins_base", "n_draws", "n_total", "avg_length"):
            assert row[k] == int(p[k]), (name, k)


def lc_agreement(board, published, names):
    ours = [board[n]["length_controlled_winrate"] for n in names]
    theirs = [float(published[n]["length_controlled_winrate"]) for n in names]
    return spearman(ours, theirs), float(np.mean(np.abs(np.array(ours) - theirs)))


def test_length_controlled_win_rate_tracks_the_published_one(board, published):
    rho, mad = lc_agreement(board, published, list(published))
    assert rho >= 0.98 and mad <= 1.5, (rho, mad)
    raw_rho, _ = spearman([board[n]["win_rate"] for n in published],
                          [float(published[n]["length_controlled_winrate"]) for n in published]), None
    assert rho > raw_rho  # length control moves the ranking toward the published LC ranking


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_length_control_holds_on_generators_left_out(published, seed):
    """A board of half the generators (a different half each time) still agrees."""
    rng = np.random.default_rng(seed)
    subset = [FILES[i] for i in sorted(rng.choice(len(FILES), size=11, replace=False))]
    b = {r["name"]: r for r in build_board(read_annotations(subset))}
    rho, mad = lc_agreement(b, published, list(b))
    assert rho >= 0.95 and mad <= 2.5, (rho, mad)


def test_bootstrap_interval_and_extra_columns(board):
    for row in board.values():
        assert row["win_rate_ci_low"] <= row["win_rate"] <= row["win_rate_ci_high"]
        assert row["win_rate_ci_high"] - row["win_rate_ci_low"] == pytest.approx(
            2 * 1.96 * row["standard_error"], rel=0.25)
        assert row["n_invalid"] == 0


def test_head2head_counts_invalid_and_legacy_draws():
    h = head2head([1.0, 2.0, 1.5, 0, None, float("nan"), 1.7])
    assert (h["n_total"], h["n_draws"], h["n_wins"], h["n_wins_base"]) == (5, 2, 2, 1)
    assert h["win_rate"] == pytest.approx((0 + 1 + 0.5 + 0.5 + 0.7) / 5 * 100)
    assert h["discrete_win_rate"] == pytest.approx((0 + 1 + 0.5 + 0.5 + 1) / 5 * 100)


def test_cli_builds_the_board_from_annotations_and_stores_it(tmp_path, published):
    out, db = tmp_path / "board.csv", tmp_path / "db"
    args = ("judge", "--annotations", str(AE / "annotations" / "*.json"), "--leaderboard", str(out), "--db", str(db))
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(open(out)))
    # alpaca_eval's columns in its order; the length-controlled rate named as lmboard's fit
    assert rows[0][1:12] == ["win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total",
                             "discrete_win_rate", "mode", "avg_length", "lmboard_length_controlled_winrate",
                             "lmboard_lc_standard_error"]
    assert len(rows) == 23 and "NullModel" in r.stdout and {row[8] for row in rows[1:]} == {"annotations"}
    # stored: the board shows every generator's win rate, judged by the annotator against generator_1
    doc = json.loads(run_cli("board", "--db", str(db), "--format", "json").stdout)
    cols = {c["key"]: c for c in doc["columns"]}
    wins = {c["model"]: c for c in doc["cells"] if cols[c["column"]]["label"] == "win rate"}
    assert len(wins) == 22 and wins["NullModel"]["value"] == pytest.approx(float(published["NullModel"]["win_rate"]))
    (group,) = {cols[c["column"]]["group"] for c in wins.values()}
    assert group == "judged vs gpt4_1106_preview · judge weighted_alpaca_eval_gpt4_turbo"
    assert any(c["label"] == "LC win rate (lmboard fit)" for c in cols.values())
    assert run_cli(*args).returncode == 0  # the same files again: the same runs, nothing added
    assert len(json.loads(run_cli("board", "--db", str(db), "--format", "json").stdout)["runs"]) == 22


def test_malformed_annotation_names_file_and_entry(tmp_path):
    bad = tmp_path / "bad.json"
    entries = json.loads(FILES[0].read_text())[:3]
    entries[1]["preference"] = "first"
    bad.write_text(json.dumps(entries))
    r = run_cli("judge", "--annotations", str(bad))
    assert r.returncode == 2 and "bad.json: entry 1: preference" in r.stderr and "Traceback" not in r.stderr
    del entries[1]["output_2"]
    bad.write_text(json.dumps(entries))
    r = run_cli("judge", "--annotations", str(bad))
    assert r.returncode == 2 and "entry 1: missing or malformed field 'output_2'" in r.stderr
