"""Label classification as language modelling (seed 001: RAFT, ChnSentiCorp).

Data: a CSV (with header) or JSONL file with a text column and a label column; labels
are named with --labels "0=负面,1=正面". Scoring: the summed log-probability of each
label's tokens after the prompt (--normalize none|tokens|chars), or greedy generation
mapped to a label by exact or prefix match (--by generate; unmatched answers count as
wrong and are counted). Rows with an empty text are skipped and counted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from lmboard.errors import UsageError
from lmboard.io import need_file, read_csv_dicts, read_jsonl
from lmboard.registry import register_task
from lmboard.text import has_cjk

TEMPLATE_EN = "Classify the text as one of: {labels}.\n\nText: {text}\nLabel:"
TEMPLATE_ZH = "判断下面文本的类别，只能从以下标签中选择一个：{labels}。\n\n文本：{text}\n情感："


@dataclass(frozen=True)
class Example:
    line: int
    text: str
    label: str  # the label's name (e.g. 正面)


@dataclass(frozen=True)
class ClassifySettings:
    labels: dict[str, str]  # raw value -> name
    template: str | None = None
    shots: int = 0
    by: str = "loglik"  # loglik | generate
    normalize: str = "none"  # none | tokens | chars
    seed: int = 123

    @property
    def chinese(self) -> bool:
        return any(has_cjk(n) for n in self.labels.values())

    @property
    def sep(self) -> str:
        # "Label: positive" has a space before the label (another token); "情感：正面" has none.
        return "" if self.chinese else " "

    def prompt(self, text: str) -> str:
        t = self.template or (TEMPLATE_ZH if self.chinese else TEMPLATE_EN)
        return t.format(labels=("、" if self.chinese else ", ").join(self.labels.values()), text=text)


@dataclass(frozen=True)
class ClassifyJob:
    """A classification run: the data, how it splits, and how it is scored."""

    data: Path
    settings: ClassifySettings
    text_column: str = "text"
    label_column: str = "label"
    train: Path | None = None  # a separate training file for the shots
    split: float | None = None  # train share when splitting ``data``
    test_size: int | None = None  # cap the test side at N rows


@register_task("classify")
class Classification:
    """The task as the registry knows it; its job is tasks/classify_run.py."""

    name = "classify"
    kind = "classification"


def _rows(path: Path, text_col: str, label_col: str) -> list[tuple[int, dict]]:
    need_file(Path(path), "--data")
    if Path(path).suffix == ".jsonl":
        return read_jsonl(path)
    return read_csv_dicts(path, (text_col, label_col))


def load_examples(path: Path, text_col: str, label_col: str, labels: dict[str, str]) -> tuple[list[Example], int]:
    """(examples, rows skipped for an empty text)."""
    out, skipped = [], 0
    for n, r in _rows(Path(path), text_col, label_col):
        if label_col not in r or text_col not in r:
            raise UsageError(f"{path}:{n}: missing field {label_col if label_col not in r else text_col!r}")
        value = str(r[label_col]).strip()
        if value not in labels:
            raise UsageError(f"{path}:{n}: label {value!r} is not one of {', '.join(labels)}")
        text = r[text_col] if isinstance(r[text_col], str) else ""
        if not text.strip():
            skipped += 1
            continue
        out.append(Example(n, text, labels[value]))
    return out, skipped


def split(examples: list[Example], train_share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded shuffle split, as seed 001's train_test_split(test_size=1-train_share, seed)."""
    if not 0 < train_share < 1:
        raise UsageError(f"--split must be between 0 and 1 (got {train_share})")
    idx = list(range(len(examples)))
    random.Random(seed).shuffle(idx)
    cut = int(round(len(idx) * train_share))
    return [examples[i] for i in idx[:cut]], [examples[i] for i in idx[cut:]]


def pick_shots(train: list[Example], settings: ClassifySettings) -> list[Example]:
    """k examples drawn per label in turn (balanced), seeded, from the training split."""
    if settings.shots <= 0:
        return []
    rng = random.Random(settings.seed)
    by_label = {name: [e for e in train if e.label == name] for name in settings.labels.values()}
    for v in by_label.values():
        rng.shuffle(v)
    shots: list[Example] = []
    while len(shots) < settings.shots and any(by_label.values()):
        for name in settings.labels.values():
            if by_label[name] and len(shots) < settings.shots:
                shots.append(by_label[name].pop())
    rng.shuffle(shots)
    return shots


def render(settings: ClassifySettings, shots: list[Example], text: str) -> str:
    head = "".join(settings.prompt(s.text) + settings.sep + s.label + "\n\n" for s in shots)
    return head + settings.prompt(text)


def match_label(answer: str, names: list[str]) -> str | None:
    a = answer.replace("\ufffd", "").strip().strip("。.!！\"'")
    if a in names:
        return a
    hits = [n for n in names if a.startswith(n)]
    return hits[0] if len(hits) == 1 else None
