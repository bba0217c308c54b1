"""Judge prompt parsing, language choice and the order coin."""

from lmboard.judge.judges import model_first
from lmboard.judge.prompts import parse_grade, parse_label
from lmboard.text import is_mostly_cjk


def test_parsers_and_language_choice():
    assert parse_label("M") == "M" and parse_label(" `m`") == "m" and parse_label("Model M.") == "M"
    assert parse_label("I think the first one") is None
    assert parse_grade("Good answer. Rating: [[7]]") == 7 and parse_grade("[[11]]") is None and parse_grade("7/10") is None
    assert is_mostly_cjk("请写一首关于春天的诗") and not is_mostly_cjk("Write a poem about spring")
    flips = [model_first(0, f"instruction {i}") for i in range(200)]
    assert 70 < sum(flips) < 130 and flips == [model_first(0, f"instruction {i}") for i in range(200)]
