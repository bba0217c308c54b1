"""C-Eval (Huang et al., 2023): Chinese exams in 52 subjects.

Layout: DIR/{val,dev,test}/<subject>_<split>.csv with the header
``id,question,A,B,C,D,answer,explanation``, and DIR/subject_mapping.json
(subject -> [English name, Chinese name, category]) as the official repository ships.
The public test split has no answers, so lmboard scores the val split, with shots from dev.
No C-Eval data is reachable from this project's machines: the tests use a fixture
written in this layout.
"""

from __future__ import annotations

from pathlib import Path

from lmboard.io import read_csv_rows, read_json
from lmboard.registry import register_task
from lmboard.tasks.exam import MCExam, MCQuestion, check_answer


@register_task("ceval")
class CEval(MCExam):
    name = "ceval"
    eval_split = "val"
    answer_cue = "\n答案："
    answer_sep = ""  # "答案：A"
    drop_rule = "last"

    def __init__(self) -> None:
        self.mapping: dict[str, list[str]] = {}

    def _load_mapping(self, data: Path) -> dict[str, list[str]]:
        path = Path(data) / "subject_mapping.json"
        if path.is_file():
            self.mapping = read_json(path)
        return self.mapping

    layout = "val/<subject>_val.csv, dev/<subject>_dev.csv and subject_mapping.json, C-Eval's layout"

    def subjects(self, data: Path) -> list[str]:
        self._load_mapping(data)
        return sorted(p.name.removesuffix("_val.csv") for p in (Path(data) / "val").glob("*_val.csv"))

    def load_split(self, data: Path, subject: str, split: str) -> list[MCQuestion] | None:
        path = Path(data) / split / f"{subject}_{split}.csv"
        if not path.is_file():
            return None
        rows = read_csv_rows(path, 8, header=True)
        return [
            MCQuestion(subject, i, r[1], tuple(r[2:6]), check_answer(path, line, r[6]), tuple(r))
            for i, (line, r) in enumerate(rows)
        ]

    def header(self, subject: str) -> str:
        name = self.mapping.get(subject, [subject, subject])[1]
        return f"以下是中国关于{name}考试的单项选择题，请选出其中的正确答案。\n\n"

    def categories(self, data: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        # C-Eval groups subjects directly into categories; the subject's English name
        # serves as its subcategory.
        subcats = {s: [v[0]] for s, v in self.mapping.items()}
        cats: dict[str, list[str]] = {}
        for v in self.mapping.values():
            cats.setdefault(v[2], []).append(v[0])
        return subcats, cats
