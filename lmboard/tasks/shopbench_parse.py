"""ShopBench answer parsers: the official starter kit's (``--parse official``) and the
seed's lenient normalizers (``--parse lenient``).

``official`` is the kit's ``parsers.py`` version 0.1.1, quirks included; each quirk that
changes a score is written where it happens. ``lenient`` is what seed 003 does after
generation (``find_first_digit``, ``create_consecutive_digits_str``, ``process_string``):
it finds the answer anywhere in the text, so a chatty model is not scored 0 for its
preamble. Both return the same structures, so the kit's metrics apply to either.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Any

OFFICIAL_VERSION = "0.1.1"
MAX_RESPONSE_CHARACTERS = 5000  # the kit cuts every response to this before parsing
PARSE_MODES = ("official", "lenient")
PARSERS = ("multichoice", "ranking", "retrieval", "named_entity_recognition", "generation")
# The parser a task type gets unless its route names another (the kit's own mapping).
PARSER_OF_TYPE = {"multiple-choice": "multichoice", "ranking": "ranking", "retrieval": "retrieval",
                  "named_entity_recognition": "named_entity_recognition", "generation": "generation"}


def _kit_ints(response: str) -> list[int]:
    """The kit's number reading for ranking and retrieval: keep digits, commas and spaces,
    split on commas, keep what ``int`` accepts. So "1 2" (no comma) is one item that
    ``int`` refuses: nothing; "[1, 2]" loses its brackets and reads as 1, 2."""
    cleaned = "".join(c for c in response if c.isnumeric() or c in (",", " "))
    out = []
    for item in cleaned.split(","):
        try:
            out.append(int(item))
        except ValueError:  # "" or "1 2", or a numeric character int() refuses ("½")
            pass
    return out


def official_multichoice(response: str) -> int:
    # The first character of the stripped response only: "The answer is 2" is -1.
    try:
        return int(response.strip()[0])
    except (ValueError, IndexError):
        return -1


def official_ranking(response: str) -> list[int]:
    # Numbers above 5 are dropped before the first 5 are taken, and any duplicate among
    # those 5 empties the whole list (scored 0). A 0 is kept (<= 5): ndcg then reads it
    # as index -1, the truth's last weight (see metrics/shopbench.py).
    items = [n for n in _kit_ints(response) if n <= 5][:5]
    return items if len(items) == len(set(items)) else []


def official_retrieval(response: str) -> list[int]:
    # The first 3 numbers, duplicates kept (hit rate@3 takes a set, so "5, 5, 5" is one guess).
    return _kit_ints(response)[:3]


def official_ner(response: str) -> list[str]:
    # A Python list literal of strings, else the text split on commas with empty items
    # dropped. "[New York, Amazon]" (no quotes) keeps its brackets in the first and last
    # items; "[1, 2]" is a list but not of strings, so it is split: "[1", "2]".
    try:
        entities = ast.literal_eval(response)
        if isinstance(entities, list) and all(isinstance(e, str) for e in entities):
            return entities
    except Exception:  # the kit catches everything here (SyntaxError, ValueError, MemoryError...)
        pass
    return [e.strip() for e in response.split(",") if e.strip() != ""]


def official_generation(response: str) -> str:
    return response.strip()


def lenient_multichoice(response: str) -> int:
    """The first digit anywhere (the seed's find_first_digit)."""
    m = re.search(r"\d", response)
    return int(m.group()) if m else -1


def lenient_ranking(response: str, n: int = 5) -> list[int]:
    """A permutation of 1..n: the numbers in 1..n in the order first given, duplicates
    dropped, then the ones not given in ascending order (the seed's create_consecutive_digits_str)."""
    seen: list[int] = []
    for tok in re.findall(r"\d+", response):
        v = int(tok)
        if 1 <= v <= n and v not in seen:
            seen.append(v)
    return seen + [v for v in range(1, n + 1) if v not in seen]


def lenient_retrieval(response: str) -> list[int]:
    """The first 3 distinct numbers found anywhere (the seed's process_string)."""
    out: list[int] = []
    for tok in re.findall(r"\d+", response):
        if int(tok) not in out:
            out.append(int(tok))
    return out[:3]


OFFICIAL: dict[str, Callable[[str], Any]] = {
    "multichoice": official_multichoice, "ranking": official_ranking, "retrieval": official_retrieval,
    "named_entity_recognition": official_ner, "generation": official_generation,
}
LENIENT: dict[str, Callable[[str], Any]] = {
    **OFFICIAL, "multichoice": lenient_multichoice, "ranking": lenient_ranking, "retrieval": lenient_retrieval,
}


def parse(response: str, parser: str, mode: str = "official") -> Any:
    """The parsed answer of ``response`` with ``parser`` (one of PARSERS) in ``mode``."""
    table = OFFICIAL if mode == "official" else LENIENT
    return table[parser](response[:MAX_RESPONSE_CHARACTERS])
