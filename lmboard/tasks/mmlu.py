"""MMLU (Hendrycks et al.) in the original layout and scoring.

Layout: DIR/test/<subject>_test.csv and optionally DIR/dev/<subject>_dev.csv, no header,
columns question, A, B, C, D, answer; or the same rows as <subject>_{test,dev}.jsonl.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from lmboard.io import read_csv_rows, read_json, read_jsonl
from lmboard.registry import register_task
from lmboard.tasks.exam import MCExam, MCQuestion, check_answer, jsonl_question


def format_subject(subject: str) -> str:
    # As the original: every word gets a leading space, so the header reads
    # "... (with answers) about  abstract algebra." with TWO spaces after "about".
    # Kept on purpose: it changes the tokens, and lm-evaluation-harness's hendrycks
    # prompt differs here.
    s = ""
    for entry in subject.split("_"):
        s += " " + entry
    return s


@register_task("mmlu")
class MMLU(MCExam):
    name = "mmlu"
    answer_cue = "\nAnswer:"
    answer_sep = " "  # "Answer: A": the letter follows a space
    drop_rule = "last"  # the original loop drops shots from the end (k -= 1)

    layout = "test/<subject>_test.csv or .jsonl, the hendrycks layout (dev/<subject>_dev.csv for shots)"

    def subjects(self, data: Path) -> list[str]:
        test = Path(data) / "test"
        names = {p.name.removesuffix("_test.csv") for p in test.glob("*_test.csv")}
        names |= {p.name.removesuffix("_test.jsonl") for p in test.glob("*_test.jsonl")}
        return sorted(names)

    def load_split(self, data: Path, subject: str, split: str) -> list[MCQuestion] | None:
        base = Path(data) / split / f"{subject}_{split}"
        csv_path, jsonl_path = base.with_suffix(".csv"), base.with_suffix(".jsonl")
        if csv_path.is_file():
            rows = read_csv_rows(csv_path, 6, header=False)
            # The hendrycks files have no header, but some copies add one
            # (question,answer_a,...,answer): a first row whose answer reads "answer" is one.
            if rows and rows[0][1][5].strip().lower() == "answer":
                rows = rows[1:]
            return [
                MCQuestion(
                    subject, i, r[0], tuple(r[1:5]), check_answer(csv_path, line, r[5]), tuple(r)
                )
                for i, (line, r) in enumerate(rows)
            ]
        if jsonl_path.is_file():
            return [
                jsonl_question(jsonl_path, line, obj, subject, i)
                for i, (line, obj) in enumerate(read_jsonl(jsonl_path))
            ]
        return None

    def header(self, subject: str) -> str:
        return f"The following are multiple choice questions (with answers) about {format_subject(subject)}.\n\n"

    def categories(self, data: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        # The hendrycks mapping; a categories.json next to the data overrides it.
        local = Path(data) / "categories.json"
        if local.is_file():
            d = read_json(local)
        else:
            d = json.loads(resources.files("lmboard.data").joinpath("mmlu_categories.json").read_text())
        return d["subcategories"], d["categories"]
