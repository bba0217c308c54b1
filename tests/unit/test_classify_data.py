"""Classification data: reading, the seeded split, balanced shots, metrics, bad input."""

import pytest

from helpers import CHNSENTICORP as CSV
from helpers import check_one_line_error, run_cli
from lmboard.metrics.classification import classification_report
from lmboard.tasks import classify

LABELS = {"0": "负面", "1": "正面"}


def test_split_shots_and_metrics():
    examples, _ = classify.load_examples(CSV, "review", "label", LABELS)
    train, test = classify.split(examples, 0.8, 123)
    assert len(train) + len(test) == len(examples) and not {e.line for e in train} & {e.line for e in test}
    assert classify.split(examples, 0.8, 123)[1][:5] == test[:5]
    shots = classify.pick_shots(train, classify.ClassifySettings(LABELS, shots=4))
    assert sorted(s.label for s in shots) == ["正面", "正面", "负面", "负面"]
    m = classification_report(["正面", "负面", "正面"], ["正面", None, "负面"], ["负面", "正面"])
    assert m["accuracy"] == pytest.approx(1 / 3) and m["unmatched"] == 1
    assert m["per_label"]["正面"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["confusion"]["负面"]["unmatched"] == 1
    assert classify.match_label(" 正面。", ["负面", "正面"]) == "正面" and classify.match_label("正面的评价", ["负面", "正面"]) == "正面"
    assert classify.match_label("不知道", ["负面", "正面"]) is None


def test_classify_bad_input(tmp_path):
    bad = tmp_path / "d.csv"
    bad.write_text("label,review\n1,好\n7,差\n", encoding="utf-8")
    r = run_cli("eval", "--task", "classify", "--data", str(bad), "--text-column", "review", "--labels", "0=负面,1=正面")
    check_one_line_error(r, "d.csv:3: label '7' is not one of 0, 1")
    r = run_cli("eval", "--task", "classify", "--data", str(bad), "--text-column", "text", "--labels", "0=负面,1=正面")
    check_one_line_error(r, "no column 'text'")
    # options of the other kind of task are an error, not ignored
    r = run_cli("eval", "--task", "classify", "--data", str(bad), "--labels", "0=负面,1=正面", "--subjects", "x")
    check_one_line_error(r, "--subjects does not apply to --task classify")
    r = run_cli("eval", "--task", "mmlu", "--labels", "0=负面,1=正面")
    check_one_line_error(r, "--labels does not apply to --task mmlu")


def test_classification_against_an_endpoint_names_the_capability(tmp_path):
    """An endpoint gives no logits: a one-line error naming the capability, before anything
    is sent or loaded (the URL below has no server)."""
    r = run_cli("eval", "openai:m@http://127.0.0.1:9/v1", "--task", "classify", "--data", str(CSV),
                "--text-column", "review", "--labels", "0=负面,1=正面", "--db", str(tmp_path / "db"))
    check_one_line_error(r, "--task classify", "'score' capability", "openai backend")
    r = run_cli("eval", "openai:m@http://127.0.0.1:9/v1", "--task", "mmlu", "--db", str(tmp_path / "db"))
    check_one_line_error(r, "--task mmlu", "'score' capability")
