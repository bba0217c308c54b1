"""The answer letter in a model's words (tasks/extract.py): the rule on real answer styles,
a corrected letter, options restated, Chinese answers, and <think> traces removed."""

from __future__ import annotations

import pytest

from lmboard.tasks.extract import extract_letter, strip_thinking

L = "ABCD"
CHOICES = ["London", "Paris", "Rome", "Berlin"]


@pytest.mark.parametrize("answer,letter,rule", [
    ("B", "B", "leading"),
    ("(B)", "B", "leading"),
    ("B.", "B", "leading"),
    ("The answer is B.", "B", "stated"),
    ("答案是B", "B", "stated"),
    ("答案：B。因为巴黎是法国的首都。", "B", "stated"),
    ("我认为应选B。", "B", "stated"),
    # SmolLM2 on CMMLU: the first option restated, then its choice stated (twice): the statement counts
    ("D. 右心家\n\n选择：C. 左心家\n\n选择：C. 左心家", "C", "stated"),
    ("B. Paris", "B", "leading"),
    ("B) Paris is the capital of France.", "B", "leading"),
    ("Answer: (C)", "C", "stated"),
    ("The correct option is D", "D", "stated"),
    ("B is correct because Paris is the capital.", "B", "stated"),
    # a wrong letter first, then corrected: the last statement counts
    ("The answer is A. Wait, no: the answer is C.", "C", "stated"),
    ("I first thought A, but actually C.", "C", "stated"),
    ("A) London is wrong, so the answer is B", "B", "stated"),
    # the options restated line by line are not an answer
    ("A. London\nB. Paris\nC. Rome\nD. Berlin", None, "none"),
    ("A. London\nB. Paris\nC. Rome\nD. Berlin\n\nThe answer is B. Paris.", "B", "stated"),
    # an English article is not a letter
    ("A good question. It is Paris.", "B", "choice-text"),
    ("I would pick C here.", "C", "only-letter"),
    ("Either A or C.", None, "none"),
    ("Not sure.", None, "none"),
])
def test_extraction_rule(answer, letter, rule):
    assert extract_letter(answer, L, CHOICES) == (letter, rule)


def test_think_traces_removed_and_measured():
    text, n = strip_thinking("<think>It might be A... no, B.</think>The answer is B.")
    assert text == "The answer is B." and n == len("<think>It might be A... no, B.</think>")
    assert extract_letter(text, L, CHOICES) == ("B", "stated")
    # an unclosed trace (out of tokens while thinking): no answer at all, not the letter it mused about
    text, n = strip_thinking("<think>Maybe the answer is A, let me check")
    assert text == "" and extract_letter(text, L, CHOICES) == (None, "none")
    # the template opened the trace: only its end is in the answer
    assert strip_thinking("the answer is A? hmm</think>\nC")[0] == "C"
    assert strip_thinking("plain answer B") == ("plain answer B", 0)
