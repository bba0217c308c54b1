"""Label classification as language modelling (seed 001: RAFT, ChnSentiCorp).

Data: a CSV (with header) or JSONL file with a text column and a label column; labels
are named with --labels "0=负面,1=正面". Scoring: the summed log-probability of each
label's tokens after the prompt (--normalize none|tokens|chars), or greedy generation
mapped to a label by exact or prefix match (--by generate; unmatched answers count as
wrong and are counted). Rows with an empty text are skipped and counted.
"""

from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from lmboard.errors import UsageError

TEMPLATE_EN = "Classify the text as one of: {labels}.\n\nText: {text}\nLabel:"
TEMPLATE_ZH = "判断下面文本的类别，只能从以下标签中选择一个：{labels}。\n\n文本：{text}\n情感："
_CJK = re.compile(r"[\u4e00-\u9fff]")


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
        return any(_CJK.search(n) for n in self.labels.values())

    @property
    def sep(self) -> str:
        # "Label: positive" has a space before the label (another token); "情感：正面" has none.
        return "" if self.chinese else " "

    def prompt(self, text: str) -> str:
        t = self.template or (TEMPLATE_ZH if self.chinese else TEMPLATE_EN)
        return t.format(labels=("、" if self.chinese else ", ").join(self.labels.values()), text=text)


def parse_labels(text: str | None) -> dict[str, str]:
    if not text:
        raise UsageError('--labels is required for --task classify, e.g. --labels "0=负面,1=正面"')
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise UsageError(f"--labels: expected value=name, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def load_examples(path: Path, text_col: str, label_col: str, labels: dict[str, str]) -> tuple[list[Example], int]:
    """(examples, rows skipped for an empty text)."""
    if not Path(path).is_file():
        raise UsageError(f"--data: {path}: no such file")
    rows: list[tuple[int, dict]] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise UsageError(f"{path}:{n}: invalid JSON ({e.msg})") from e
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            for col in (text_col, label_col):
                if col not in (reader.fieldnames or []):
                    raise UsageError(f"{path}: no column {col!r} (columns: {', '.join(reader.fieldnames or [])})")
            rows = [(reader.line_num, r) for r in reader]
    out, skipped = [], 0
    for n, r in rows:
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


def metrics(gold: list[str], pred: list[str | None], names: list[str]) -> dict:
    n = len(gold)
    conf = {g: {p: 0 for p in [*names, "unmatched"]} for g in names}
    for g, p in zip(gold, pred, strict=True):
        conf[g][p if p is not None else "unmatched"] += 1
    per = {}
    for lab in names:
        tp = conf[lab][lab]
        fp = sum(conf[g][lab] for g in names if g != lab)
        fn = sum(v for p, v in conf[lab].items() if p != lab)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[lab] = {"precision": prec, "recall": rec, "f1": f1, "support": tp + fn}
    return {
        "accuracy": sum(g == p for g, p in zip(gold, pred, strict=True)) / n if n else float("nan"),
        "macro_f1": sum(v["f1"] for v in per.values()) / len(per),
        "per_label": per,
        "confusion": conf,
        "unmatched": sum(1 for p in pred if p is None),
        "n": n,
    }
