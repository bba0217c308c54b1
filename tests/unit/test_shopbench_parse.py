"""ShopBench parsers: the official kit's own documented cases (parsers.py 0.1.1 and its
unit tests), the issue's edge cases, and the lenient normalizers."""

import pytest

from lmboard.tasks.shopbench_parse import MAX_RESPONSE_CHARACTERS, parse


def off(parser, text):
    return parse(text, parser, "official")


def len_(parser, text):
    return parse(text, parser, "lenient")


@pytest.mark.parametrize("text,expected", [
    ("2", 2), ("a", -1), ("\n", -1), (" ", -1), (" 2", 2), ("\n1", 1), ("\n 3", 3), ("\n ", -1),
    ("", -1), ("The answer is 2", -1), ("3. cotton", 3), ("12", 1),
])
def test_official_multichoice(text, expected):
    assert off("multichoice", text) == expected


@pytest.mark.parametrize("text,expected", [
    ("1, 2, 3, 4, 5", [1, 2, 3, 4, 5]), ("[1, 2, 3, 4, 5]", [1, 2, 3, 4, 5]), ("1, 2, 2, 3", []),
    ("1, 2, 4, aicrowd, 5", [1, 2, 4, 5]), ("\n", []), (" \n", []), ("The answer is: 1, 2, 3, 4, 5", [1, 2, 3, 4, 5]),
    (",1,2,3,4,5", [1, 2, 3, 4, 5]), ("1 2", []),
    # the edge cases: duplicates empty the list; numbers above 5 are dropped first
    ("[1, 2, 2]", []), ("6, 1, 2", [1, 2]), ("", []), ("a", []),
    ("1, 2, 3, 4, 5, 1", [1, 2, 3, 4, 5]),  # only the first 5 are checked for duplicates
    ("0, 1", [0, 1]),  # 0 is kept (<= 5)
])
def test_official_ranking(text, expected):
    assert off("ranking", text) == expected


@pytest.mark.parametrize("text,expected", [
    ("100, 200, 300", [100, 200, 300]), ("100, 200", [100, 200]), ("100, 200, jjhg", [100, 200]),
    ("100,           200, \n\n\n 300", [100, 200, 300]), ("100, 200, 300, 400", [100, 200, 300]),
    ("\n 100, 200, 300", [100, 200, 300]), ("\n \n \n", []),
    ("5, 5, 5", [5, 5, 5]), ("", []), ("a", []), ("[1, 2, 2]", [1, 2, 2]),
    ("1. Good quality\n2. High quality", []),  # no comma between the numbers: one item int() refuses
])
def test_official_retrieval(text, expected):
    assert off("retrieval", text) == expected


@pytest.mark.parametrize("text,expected", [
    ("['New York', 'ShopBench', 'Amazon']", ["New York", "ShopBench", "Amazon"]),
    ("New York, ShopBench, Amazon", ["New York", "ShopBench", "Amazon"]),
    ("[New York, ShopBench, Amazon]", ["[New York", "ShopBench", "Amazon]"]),
    ("\n, New York, ShopBench", ["New York", "ShopBench"]), (" ", []), ("\n \n", []), ("", []),
    ("[1, 2]", ["[1", "2]"]),  # a list literal of numbers is not a list of strings: split on commas
    ("['a', 1]", ["['a'", "1]"]), ("a", ["a"]),
])
def test_official_ner(text, expected):
    assert off("named_entity_recognition", text) == expected


def test_official_generation():
    assert off("generation", "This is a generated response.") == "This is a generated response."
    assert off("generation", "\nThe answer is \n\n good.\n\n\n\n\n\n\n") == "The answer is \n\n good."
    assert off("generation", "\n \n") == ""


def test_responses_are_cut_to_5000_characters():
    pad = "x" * MAX_RESPONSE_CHARACTERS
    assert off("retrieval", pad + "1, 2, 3") == []
    assert off("retrieval", pad[:-7] + "1, 2, 3") == [1, 2, 3]
    assert off("generation", "a" * 6000) == "a" * MAX_RESPONSE_CHARACTERS
    assert off("named_entity_recognition", "['a', 'b']" + " " * 5000) == ["a", "b"]
    assert off("named_entity_recognition", " " * 4995 + "['a', 'b']") == ["['a'"]  # the list's end is cut away


@pytest.mark.parametrize("parser,text,expected", [
    ("multichoice", "The answer is 2", 2), ("multichoice", "none", -1), ("multichoice", "", -1),
    ("ranking", "3 > 1 > 2", [3, 1, 2, 4, 5]), ("ranking", "[1, 2, 2]", [1, 2, 3, 4, 5]),
    ("ranking", "6, 1, 2", [1, 2, 3, 4, 5]), ("ranking", "", [1, 2, 3, 4, 5]),
    ("retrieval", "1. Good quality\n2. High\n9. x", [1, 2, 9]), ("retrieval", "5, 5, 5", [5]),
    ("retrieval", "100, 200, jjhg", [100, 200]),
    ("named_entity_recognition", "cadbury, xmas", ["cadbury", "xmas"]), ("generation", " hi ", "hi"),
])
def test_lenient(parser, text, expected):
    assert len_(parser, text) == expected
