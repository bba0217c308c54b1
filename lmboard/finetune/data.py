"""Training data from the same readers as ``lmboard eval``.

Three shapes: prompt/response columns (optionally an instruction column), chat
``messages`` (the last message is the answer), or classification rows read exactly as
``lmboard eval --task classify`` reads them, split with the same seeded split, so a
model trained on the train side is tested on the other side.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from lmboard.errors import UsageError
from lmboard.finetune.templates import Example
from lmboard.io import need_file, read_csv_dicts, read_json_list, read_jsonl
from lmboard.tasks.classify import ClassifySettings, load_examples, split


@dataclass(frozen=True)
class DataSpec:
    path: Path
    prompt_column: str = "prompt"
    response_column: str = "response"
    instruction_column: str | None = None
    messages_column: str = "messages"
    classify: ClassifySettings | None = None  # set: classification rows (labels, prompt template, seed)
    text_column: str = "text"
    label_column: str = "label"
    split: float | None = None  # classification: train on this share of the seeded split
    test_size: int | None = None


@dataclass(frozen=True)
class TrainData:
    examples: list[Example]
    skipped: dict[str, int]
    data_hash: str
    train_lines: list[int]  # the rows trained on (line numbers, or entry numbers of a JSON list)
    split: float | None = None  # classification: the train share of the seeded split
    seed: int | None = None
    meta: dict = field(default_factory=dict)


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_train_data(spec: DataSpec) -> TrainData:
    path = Path(spec.path)
    need_file(path, "--data")
    if spec.classify is not None:
        data = _classification(spec, path)
    else:
        examples, skipped = _rows(spec, path)
        data = TrainData(examples, skipped, file_hash(path), [e.line for e in examples])
    if not data.examples:
        why = ", ".join(f"{n} {k}" for k, n in data.skipped.items() if n) or "the file has no rows"
        raise UsageError(f"--data: {path}: no training examples left ({why})")
    return data


def _classification(spec: DataSpec, path: Path) -> TrainData:
    s = spec.classify
    assert s is not None
    examples, empty = load_examples(path, spec.text_column, spec.label_column, s.labels)
    if spec.split is not None:
        examples = split(examples, spec.split, s.seed)[0]
    # The prompt and the answer's leading separator are the ones `lmboard eval --task
    # classify` scores: the trained tokens are exactly the label tokens it reads.
    out = [Example(e.line, s.prompt(e.text), s.sep + e.label) for e in examples]
    return TrainData(out, {"empty text": empty}, file_hash(path), [e.line for e in examples], spec.split, s.seed,
                     {"labels": s.labels, "classify_template": s.prompt("{text}")})


def _read(path: Path) -> list[tuple[str, dict]]:
    if path.suffix == ".jsonl":
        return [(f"{path}:{n}", r) for n, r in read_jsonl(path)]
    if path.suffix == ".json":
        rows = read_json_list(path, "examples")
        bad = next((i for i, r in enumerate(rows, 1) if not isinstance(r, dict)), None)
        if bad is not None:
            raise UsageError(f"{path}: entry {bad}: expected a JSON object")
        return [(f"{path}: entry {i}", r) for i, r in enumerate(rows, 1)]
    return [(f"{path}:{n}", r) for n, r in read_csv_dicts(path)]


def _rows(spec: DataSpec, path: Path) -> tuple[list[Example], dict[str, int]]:
    out: list[Example] = []
    skipped = {"empty answer": 0}
    for i, (where, r) in enumerate(_read(path), 1):
        ex = _messages(where, i, r[spec.messages_column]) if spec.messages_column in r else _columns(spec, where, i, r)
        if not ex.response.strip():
            skipped["empty answer"] += 1
            continue
        out.append(ex)
    return out, skipped


def _columns(spec: DataSpec, where: str, line: int, r: dict) -> Example:
    for col, flag in ((spec.response_column, "--response-column"), (spec.prompt_column, "--prompt-column"),
                      (spec.instruction_column, "--instruction-column")):
        if col is not None and col not in r:
            raise UsageError(f"{where}: no {col!r} field (the row has: {', '.join(map(str, r)) or 'nothing'}); "
                             f"name it with {flag}")
    vals = {c: r[c] for c in (spec.response_column, spec.prompt_column, spec.instruction_column) if c}
    for c, v in vals.items():
        if v is not None and not isinstance(v, str):
            raise UsageError(f"{where}: field {c!r} must be a string (got {type(v).__name__})")
    instruction = (r[spec.instruction_column] or "") if spec.instruction_column else ""
    return Example(line, r[spec.prompt_column] or "", r[spec.response_column] or "", instruction)


def _messages(where: str, line: int, msgs: object) -> Example:
    if not isinstance(msgs, list) or not msgs:
        raise UsageError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in (
                "system", "user", "assistant"):
            raise UsageError(f"{where}: messages[{j}] must be {{\"role\": system|user|assistant, \"content\": text}}")
    system = msgs[0]["content"] if msgs[0]["role"] == "system" else None
    turns = msgs[1:] if system is not None else msgs
    roles = [m["role"] for m in turns]
    if len(turns) % 2 or roles != ["user", "assistant"] * (len(turns) // 2):
        raise UsageError(f"{where}: messages must alternate user, assistant (after an optional system) "
                         f"and end with the assistant's answer (got {', '.join(roles)})")
    pairs = [(turns[k]["content"], turns[k + 1]["content"]) for k in range(0, len(turns), 2)]
    return Example(line, pairs[-1][0], pairs[-1][1], history=tuple(pairs[:-1]), system=system)
