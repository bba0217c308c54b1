"""The multiple-choice exam layer shared by MMLU, CMMLU and C-Eval.

An exam file (mmlu.py, cmmlu.py, ceval.py) says only what differs between exams:
the data layout, the prompt and the categories. Everything else is here: few-shot
selection, prompts that fit the context, the answer-letter tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmboard.errors import UsageError
from lmboard.lm import TokenizingLM

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class ExamSettings:
    """A multiple-choice exam run (MMLU, CMMLU, C-Eval)."""

    task: str
    data: Path
    subjects: tuple[str, ...] = ()
    limit: int | None = None
    shots: int = 5
    letter_token: str = "spaced"  # spaced: " A" as after "Answer:"; bare: tokenizer("A")[-1]
    chat: bool = False
    max_length: int | None = None  # None: the model's context length

    def key_dict(self) -> dict:
        """Everything that changes the numbers (batching does not)."""
        return {
            "task": self.task,
            "data": str(Path(self.data).resolve()),
            "subjects": list(self.subjects),
            "limit": self.limit,
            "shots": self.shots,
            "letter_token": self.letter_token,
            "chat": self.chat,
            "max_length": self.max_length,
        }


@dataclass(frozen=True)
class MCQuestion:
    subject: str
    index: int  # row number within the subject's split, from 0
    question: str
    choices: tuple[str, ...]
    answer: str  # a letter
    row: tuple[str, ...]  # the original columns, written back to the per-subject CSV


@dataclass
class Prompt:
    question: MCQuestion
    text: str  # the full prompt
    prefix: str  # the part shared with other questions (header + shots)
    shots: int  # shots actually used


class MCExam:
    """Base class: subclasses set the layout, the prompt and the categories."""

    name = "exam"
    eval_split = "test"  # the split that is scored
    letters = LETTERS
    question_prefix = ""  # before each question ("题目：" in CMMLU)
    answer_cue = "\nAnswer:"  # after the choices
    answer_sep = " "  # between the answer cue and the letter in few-shot examples
    drop_rule = "last"  # when too long: "last" shot first (MMLU) or "longest" first (CMMLU)
    layout = "test/<subject>_test.csv"  # the files it reads, said when a folder has none

    # ---- layout (subclasses)
    def subjects(self, data: Path) -> list[str]:
        raise NotImplementedError

    def load_split(self, data: Path, subject: str, split: str) -> list[MCQuestion] | None:
        """The split's questions, or None when the split does not exist."""
        raise NotImplementedError

    # ---- prompt (subclasses)
    def header(self, subject: str) -> str:
        raise NotImplementedError

    def example(self, q: MCQuestion, with_answer: bool) -> str:
        """question, the lettered choices one a line, the cue, and in a shot the answer."""
        text = self.question_prefix + q.question
        for letter, choice in zip(self.letters, q.choices, strict=True):
            text += f"\n{letter}. {choice}"
        text += self.answer_cue
        if with_answer:
            text += f"{self.answer_sep}{q.answer}\n\n"
        return text

    # ---- categories (subclasses): subject -> [subcategory], category -> [subcategory]
    def categories(self, data: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        return {}, {}

    # ---- shared machinery
    def select_subjects(self, data: Path, wanted: Sequence[str]) -> list[str]:
        if not Path(data).is_dir():
            raise UsageError(f"--data: {data}: no such folder")
        available = self.subjects(data)
        if not available:
            raise UsageError(f"--data: {data}: no {self.name} files in it (expected {data}/{self.layout})")
        for s in wanted:
            if s not in available:
                raise UsageError(f"--subjects: unknown subject {s!r} (no test file for it in {data})")
        return list(wanted) or available

    def shot_pool(self, data: Path, subject: str, test: list[MCQuestion]) -> tuple[list[MCQuestion], str]:
        """Few-shot examples: the dev split in order; without one, the test split."""
        dev = self.load_split(data, subject, "dev")
        if dev:
            return dev, "dev"
        return test, "test"

    def shots_for(self, q: MCQuestion, pool: list[MCQuestion], source: str, k: int) -> list[MCQuestion]:
        if source != "test":
            return pool[:k]
        # No dev split: the first k test rows other than the question being asked
        # (take k+1, drop it, keep k). This is lm-evaluation-harness's first_n sampler
        # when the few-shot split is the test split, so both tools build identical
        # prompts. Compared by content, as the harness compares docs.
        return list(itertools.islice((s for s in pool if s.row != q.row), k))

    def render(self, q: MCQuestion, shots: list[MCQuestion]) -> tuple[str, str]:
        """(full prompt, shared prefix)."""
        prefix = self.header(q.subject) + "".join(self.example(s, True) for s in shots)
        return prefix + self.example(q, False), prefix

    def build_prompt(
        self,
        q: MCQuestion,
        shots: list[MCQuestion],
        count: Callable[[str], int],
        max_len: int,
        render: Callable[[MCQuestion, list[MCQuestion]], tuple[str, str]] | None = None,
    ) -> Prompt:
        """The prompt with as many shots as fit in ``max_len`` tokens."""
        render = render or self.render
        shots = list(shots)
        text, prefix = render(q, shots)
        while shots and count(text) > max_len:
            if self.drop_rule == "longest":
                longest = max(range(len(shots)), key=lambda i: len(self.example(shots[i], True)))
                shots.pop(longest)
            else:
                shots.pop()
            text, prefix = render(q, shots)
        return Prompt(q, text, prefix, len(shots))

    def letter_ids(self, lm: TokenizingLM, cue: str, mode: str, sep: str | None = None) -> list[int]:
        """The token id of each answer letter as scored at the prompt's last position.

        spaced (default): the token the tokenizer produces for the letter after the
        answer cue, e.g. " A" after "Answer:" (what the original OpenAI-API code and
        lm-evaluation-harness score); a space before the letter is another token.
        bare: tokenizer("A").input_ids[-1], as the seed's loop does.
        """
        sep = self.answer_sep if sep is None else sep
        if mode == "bare":
            ids = [lm.encode(letter)[-1] for letter in self.letters]
        else:  # the first id of the letter after the cue (its own id if it merged into the cue)
            ids = [lm.encode_pair(cue, sep + letter, special=False)[1][0] for letter in self.letters]
        if len(set(ids)) != len(ids):
            raise UsageError(f"--letter-token {mode}: answer letters share a token id {ids}")
        return ids


def check_answer(path: Path, line: int, answer: str, letters: Sequence[str] = LETTERS) -> str:
    a = answer.strip()
    if a not in letters:
        raise UsageError(f"{path}:{line}: answer {answer!r} is not one of {'/'.join(letters)}")
    return a


def jsonl_question(path: Path, line: int, obj: dict, subject: str, index: int) -> MCQuestion:
    """A question from a JSONL row: question, A..D (or choices) and answer."""
    try:
        choices = tuple(str(obj[k]) for k in LETTERS) if "A" in obj else tuple(map(str, obj["choices"]))
        question, answer = str(obj["question"]), obj["answer"]
    except KeyError as e:
        raise UsageError(f"{path}:{line}: missing field {e.args[0]!r}") from e
    if isinstance(answer, int):
        answer = LETTERS[answer] if 0 <= answer < len(LETTERS) else str(answer)
    if len(choices) != 4:
        raise UsageError(f"{path}:{line}: expected 4 choices, got {len(choices)}")
    answer = check_answer(path, line, str(answer))
    return MCQuestion(subject, index, question, choices, answer, (question, *choices, answer))
