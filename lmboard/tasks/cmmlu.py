"""CMMLU (Li et al., 2023): 67 Chinese subjects.

Layout: DIR/dev/<subject>.csv and DIR/test/<subject>.csv with the header
``,Question,A,B,C,D,Answer``; DIR/categories.json with ``name_en2zh``,
``subcategories`` and ``categories``. Prompt as CMMLU's official code.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from lmboard.errors import UsageError
from lmboard.io import read_csv_rows, read_json
from lmboard.registry import register_task
from lmboard.tasks.exam import MCExam, MCQuestion, check_answer


@cache
def _categories(path: Path) -> dict:
    if not path.is_file():
        raise UsageError(f"--data: {path} is missing (CMMLU needs its categories.json)")
    d = read_json(path)
    for key in ("name_en2zh", "subcategories", "categories"):
        if not isinstance(d, dict) or key not in d:
            raise UsageError(f"--data: {path} is not CMMLU's categories.json (no {key!r}): is {path.parent} "
                             "a CMMLU folder?")
    return d


@register_task("cmmlu")
class CMMLU(MCExam):
    name = "cmmlu"
    question_prefix = "题目："
    answer_cue = "\n答案是："
    answer_sep = ""  # "答案是：A": no space before the letter
    drop_rule = "longest"  # when too long, CMMLU drops the longest example first

    def __init__(self) -> None:
        self.zh: dict[str, str] = {}

    layout = "test/<subject>.csv, dev/<subject>.csv and categories.json, CMMLU's layout"

    def subjects(self, data: Path) -> list[str]:
        self.zh = _categories(Path(data) / "categories.json")["name_en2zh"]
        return sorted(p.stem for p in (Path(data) / "test").glob("*.csv"))

    def load_split(self, data: Path, subject: str, split: str) -> list[MCQuestion] | None:
        path = Path(data) / split / f"{subject}.csv"
        if not path.is_file():
            return None
        rows = read_csv_rows(path, 7, header=True)
        return [
            MCQuestion(subject, i, r[1], tuple(r[2:6]), check_answer(path, line, r[6]), tuple(r))
            for i, (line, r) in enumerate(rows)
        ]

    def header(self, subject: str) -> str:
        name = self.zh.get(subject, subject)
        return f"以下是关于{name}的单项选择题，请直接给出正确答案的选项。\n\n"

    def categories(self, data: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        d = _categories(Path(data) / "categories.json")
        return d["subcategories"], d["categories"]
