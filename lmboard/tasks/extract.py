"""The answer letter in a model's words, and reasoning traces taken out before reading it.

The rule (``RULE`` and ``RULE_VERSION``, recorded with every result; the answers are
stored as given and read at the end, so a changed rule reads them again), tried in order on the answer with its
``<think>...</think>`` trace removed, and with the lines that restate the options
("A. ...", "B. ..." on lines of their own, two or more) taken out: a model that copies the
options has not answered by doing so.

1. ``stated``: the LAST explicit statement of an answer: "answer is (B)", "answer: B",
   "correct option is B", "B is correct", "actually B", "答案是B", "答案：B", "选B", "应选B", "选择：B".
   The last one, so that a wrong letter mentioned first and then corrected counts as
   corrected.
2. ``leading``: the answer opens with a letter on its own, followed by punctuation or the
   line's end: "B", "(B)", "B.", "B) Paris", "B：巴黎".
3. ``only-letter``: exactly one distinct letter stands alone anywhere (not inside a word;
   an "A" followed by a lowercase word is the English article, not taken; with two letters
   standing alone, none is).
4. ``choice-text``: the answer contains exactly one option's whole text.

Otherwise no letter: the sample is wrong, counted as "no extractable letter" and shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

RULE_VERSION = 1
RULE = ("options restated line by line ignored; last explicit statement (answer is X / X is correct / actually X / 答案是X / 选X), else a leading "
        "letter, else the only letter standing alone, else the only option text quoted; <think> traces removed")

THINK = re.compile(r"<think>.*?</think>", re.S)
OPEN_THINK = re.compile(r"<think>.*\Z", re.S)


def strip_thinking(text: str) -> tuple[str, int]:
    """(the answer without its reasoning traces, the traces' length in characters). An
    opening ``<think>`` never closed (the model ran out of tokens while thinking) takes the
    rest; a lone ``</think>`` (the template opened the trace) takes what precedes it."""
    n = len(text)
    text = THINK.sub("", text)
    text = OPEN_THINK.sub("", text)
    if "</think>" in text:
        text = text.split("</think>")[-1]
    return text.strip(), n - len(text.strip())


def _letters(letters: Sequence[str]) -> str:
    return "".join(re.escape(x) for x in letters)


def patterns(letters: Sequence[str]) -> list[re.Pattern]:
    L = f"[{_letters(letters)}]"
    alone = rf"\(?({L})\)?(?![A-Za-z])"
    return [
        re.compile(rf"(?i:answer|option|choice)\s*(?:is|would be|should be|must be|:|=)?\s*[:：]?\s*(?:option\s*)?{alone}"),
        re.compile(rf"(?<![A-Za-z]){alone}\s*(?i:is (?:the )?(?:correct|right|answer|best))"),
        re.compile(rf"(?i:actually|instead|so|therefore|thus),?\s*(?:it'?s\s*)?{alone}"),
        re.compile(rf"(?:答案|正确答案|正确选项|选项)\s*(?:应该|应|为|是|：|:)*\s*[（(]?({L})"),
        re.compile(rf"(?:应选|选择|选)\s*[:：]?\s*[（(]?({L})"),
    ]


def extract_letter(answer: str, letters: Sequence[str], choices: Sequence[str] = ()) -> tuple[str | None, str]:
    """(the letter or None, the rule that found it: stated, leading, only-letter, choice-text, none)."""
    text = answer.strip()
    L = f"[{_letters(letters)}]"
    listed = re.compile(rf"^\s*[（(]?{L}[.．)）:：]", re.M)
    if len({m.group(0).strip()[-2:] for m in listed.finditer(text)}) >= 2:  # the options restated, not an answer
        text = "\n".join(line for line in text.split("\n") if not listed.match(line)).strip()
    best: tuple[int, str] | None = None
    for p in patterns(letters):
        for m in p.finditer(text):
            if best is None or m.start(1) >= best[0]:
                best = (m.start(1), m.group(1))
    if best is not None:
        return best[1], "stated"
    m = re.match(rf"^[\s*#>]*[（(]?({L})[)）]?(?:[.．:：、)]|\s*$|\s*\n)", text)
    if m:
        return m.group(1), "leading"
    # "A" followed by a lowercase word is the English article, not a letter
    alone = {m.group(1) for m in re.finditer(rf"(?<![A-Za-z])({L})(?![A-Za-z'’])", text)
             if not (m.group(1) == "A" and re.match(r"\s+(?!or\b|and\b)[a-z]", text[m.end():]))}
    if len(alone) == 1:
        return alone.pop(), "only-letter"
    quoted = [x for x, c in zip(letters, choices, strict=False) if c and c.strip() and c.strip().lower() in text.lower()]
    if len(quoted) == 1:
        return quoted[0], "choice-text"
    return None, "none"
