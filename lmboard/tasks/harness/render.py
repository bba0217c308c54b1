"""A task's documents and prompts, as lm-evaluation-harness 0.4.13 makes them.

Decisions that change numbers, kept as the harness has them so that prompts are
identical: a field name is the field, anything else a Jinja template (StrictUndefined,
trailing newline kept, the ``regex_replace`` filter); a template that renders to digits is
an index when the task has choices; few-shot examples come from ``fewshot_split``, else
the training, validation or test split, drawn by one ``random.Random(1234)`` shared by
all documents in order (the harness's default seed), and the document being asked is left
out only when the few-shot split is named and is the test split (the harness's quirk); a
shot is text + target_delimiter + answer + fewshot_delimiter, the question follows with
no delimiter, and a multiple-choice continuation is target_delimiter + choice."""

from __future__ import annotations

import ast
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmboard.errors import UsageError
from lmboard.io import read_jsonl
from lmboard.tasks.harness.config import TaskSpec, data_files

FEWSHOT_SEED = 1234  # lm-eval's default --fewshot_random_seed


@dataclass
class Docs:
    rows: list[dict]
    where: list[str]  # "file:line" of each row, for errors


def _env():
    import re

    from jinja2 import BaseLoader, Environment, StrictUndefined

    env = Environment(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)  # noqa: S701 - text, not HTML
    env.filters["regex_replace"] = lambda s, pattern, repl, count=0: re.sub(pattern, repl, s, count=count)
    return env


def _read(path: Path) -> Docs:
    if path.suffix in (".json", ".jsonl"):
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            rows = json.loads(text)
            return Docs(rows, [f"{path}: entry {i}" for i in range(len(rows))])
        lines = read_jsonl(path)  # JSON lines, with file:line errors
        return Docs([r for _, r in lines], [f"{path}:{n}" for n, _ in lines])
    import pandas as pd

    try:
        frame = pd.read_csv(path) if path.suffix in (".csv", ".tsv") else pd.read_parquet(path)
    except ImportError as e:
        raise UsageError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from e
    offset = 2 if path.suffix == ".csv" else 0  # a CSV's header is line 1
    return Docs(frame.to_dict("records"), [f"{path}:{i + offset}" for i in range(len(frame))])


def load_splits(task: TaskSpec) -> dict[str, Docs]:
    out = {}
    for split, files in data_files(task, task.source.path).items():
        parts = [_read(f) for f in files]
        out[split] = Docs([r for p in parts for r in p.rows], [w for p in parts for w in p.where])
    return out


def _processed(fn: Any, docs: Docs, where: str) -> Docs:
    """``process_docs`` on a split: a datasets.Dataset where the package is installed (the
    harness hands one), else the list of rows."""
    try:
        import datasets

        arg: Any = datasets.Dataset.from_list(docs.rows)
    except ImportError:
        arg = docs.rows
    try:
        rows = [dict(r) for r in fn(arg)]
    except Exception as e:  # noqa: BLE001 - the user's function: say where it broke
        raise UsageError(f"{where}: process_docs failed ({type(e).__name__}: {e})") from e
    same = len(rows) == len(docs.rows)
    return Docs(rows, docs.where if same else [f"{where}: document {i}" for i in range(len(rows))])


class HarnessTask:
    """One task: its documents, few-shot pool and prompts."""

    def __init__(self, spec: TaskSpec):
        self.spec, self.cfg, self.name = spec, spec.config, spec.name
        self.path = spec.source.path
        self.output_type = self.cfg.get("output_type", "generate_until")
        self.target_delimiter = self.cfg.get("target_delimiter", " ")
        self.fewshot_delimiter = self.cfg.get("fewshot_delimiter", "\n\n")
        fs = self.cfg.get("fewshot_config") or {}
        self.fs = {"split": self.cfg.get("fewshot_split"), "process_docs": self.cfg.get("process_docs"),
                   "fewshot_delimiter": self.fewshot_delimiter, "target_delimiter": self.target_delimiter,
                   "doc_to_text": self.cfg.get("doc_to_text"), "doc_to_choice": self.cfg.get("doc_to_choice"),
                   "doc_to_target": self.cfg.get("doc_to_target"), "gen_prefix": self.cfg.get("gen_prefix"),
                   "sampler": "default", **fs}
        self.env = _env()
        self.splits = load_splits(spec)
        self.eval_split = next((self.cfg[k] for k in ("test_split", "validation_split") if self.cfg.get(k)), None)
        if self.eval_split is None:
            raise UsageError(f"{self.path}: no test_split or validation_split")
        self.docs = self._split(self.eval_split, self.cfg.get("process_docs"))
        self.features = set().union(*(r.keys() for r in self.docs.rows)) if self.docs.rows else set()
        self._pool: list[dict] | None = None
        if self.cfg.get("doc_to_choice") is not None and self.docs.rows and isinstance(self.text(0), int):
            raise UsageError(f"{self.path}: doc_to_text gives a choice index (a task with several inputs, as "
                             "winogrande): not supported")

    def _split(self, split: str, process: Any) -> Docs:
        if split not in self.splits:
            raise UsageError(f"{self.path}: split {split!r} is not in dataset_kwargs.data_files "
                             f"({', '.join(self.splits)})")
        docs = self.splits[split]
        return _processed(process, docs, f"{self.path} ({split})") if callable(process) else docs

    # ---- fields, as ConfigurableTask.doc_to_text/_target/_choice
    def _template(self, template: str, doc: dict, where: str, what: str) -> str:
        from jinja2 import TemplateError, UndefinedError

        try:
            return self.env.from_string(template).render(**doc)
        except UndefinedError as e:
            raise UsageError(f"{where}: {what} refers to a field this row does not have ({e.message}; the row "
                             f"has {', '.join(sorted(doc))})") from None
        except TemplateError as e:
            raise UsageError(f"{self.path}: {what}: template error ({e}) at {where}") from None

    def _field(self, value: Any, doc: dict, where: str, what: str, kind: str) -> Any:
        if isinstance(value, int) or isinstance(value, list) and kind != "choice":
            return value
        if callable(value):
            return value(doc)
        if isinstance(value, dict) and kind == "choice":
            return list(value.values())
        if isinstance(value, list):
            return value
        if not isinstance(value, str):
            raise UsageError(f"{self.path}: {what} must be a field name, a template or a !function")
        if value in doc and value in self.features:
            return doc[value]
        text = self._template(value, doc, where, what)
        if kind == "choice":
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise UsageError(f"{where}: doc_to_choice rendered {text[:80]!r}, not a list") from None
        if text.isdigit() and self.cfg.get("doc_to_choice") is not None:
            return ast.literal_eval(text)
        if kind == "target" and len(text) >= 2 and text[0] == "[" and text[-1] == "]":
            try:
                return ast.literal_eval(text)
            except (SyntaxError, ValueError):
                return text
        return text

    def text(self, i: int, doc: dict | None = None, where: str | None = None, value: Any = None) -> Any:
        doc = self.docs.rows[i] if doc is None else doc
        return self._field(value if value is not None else self.cfg.get("doc_to_text"), doc,
                           where or self.docs.where[i], "doc_to_text", "text")

    def target(self, doc: dict, where: str, value: Any = None) -> Any:
        return self._field(value if value is not None else self.cfg.get("doc_to_target"), doc, where,
                           "doc_to_target", "target")

    def choices(self, doc: dict, where: str, value: Any = None) -> list[str] | None:
        v = value if value is not None else self.cfg.get("doc_to_choice")
        if v is None:
            return None
        out = self._field(v, doc, where, "doc_to_choice", "choice")
        if not isinstance(out, list):
            raise UsageError(f"{where}: doc_to_choice gave {type(out).__name__}, not a list")
        return [str(c) for c in out]

    # ---- few-shot examples
    def pool(self) -> Docs:
        if self.fs.get("split") is not None:
            return self._split(self.fs["split"], self.fs.get("process_docs"))
        if self.fs.get("samples") is not None:
            s = self.fs["samples"]
            rows = s() if callable(s) else s
            return Docs(list(rows), [f"{self.path}: fewshot_config.samples {i}" for i in range(len(rows))])
        for key in ("training_split", "validation_split", "test_split"):
            if self.cfg.get(key):
                return self._split(self.cfg[key], self.cfg.get("process_docs"))
        raise UsageError(f"{self.path}: num_fewshot > 0 but no split to draw examples from")

    def shots(self, pool: Docs, n: int, doc: dict, rnd: random.Random) -> list[tuple[dict, str]]:
        if n == 0:
            return []
        pairs = list(zip(pool.rows, pool.where, strict=True))
        exclude = self.fs.get("split") is not None and self.fs.get("split") == self.cfg.get("test_split")
        if self.fs.get("sampler") == "first_n":
            use = [p for p in pairs if p[0] != doc] if exclude else pairs
            if n > len(use):
                raise UsageError(f"{self.path}: {n} shots asked, the few-shot pool has {len(use)}")
            return use[:n]
        if n + exclude > len(pairs):
            raise UsageError(f"{self.path}: {n} shots asked, the few-shot pool has {len(pairs)}")
        if not exclude:
            return rnd.sample(pairs, n)
        got = [p for p in rnd.sample(pairs, n + 1) if p[0] != doc][:n]
        if len(got) < n:  # the pool holds copies of the document: drawn again without them
            got = rnd.sample([p for p in pairs if p[0] != doc], n)
        return got

    def turns(self, i: int, shots: list[tuple[dict, str]]) -> list[tuple[str, str, str]]:
        """The prompt as (role, content, delimiter) turns, as fewshot_context's Messages."""
        doc, where = self.docs.rows[i], self.docs.where[i]
        msgs: list[tuple[str, str, str]] = []
        desc = self.cfg.get("description") or ""
        if desc:
            desc = doc[desc] if desc in self.features and desc in doc else self._template(desc, doc, where, "description")
            msgs.append(("system", desc, ""))
        for sdoc, swhere in shots:
            q = self.text(0, sdoc, swhere, self.fs.get("doc_to_text"))
            c = self.choices(sdoc, swhere, self.fs.get("doc_to_choice")) if self.fs.get("doc_to_choice") else None
            a = self.target(sdoc, swhere, self.fs.get("doc_to_target"))
            answer = c[a] if c and isinstance(a, int) else a[0] if isinstance(a, list) else a
            if not isinstance(q, str) or not isinstance(answer, str):
                raise UsageError(f"{swhere}: a few-shot example's text and answer must be text (got "
                                 f"{type(q).__name__}, {type(answer).__name__})")
            msgs += [("user", q, self.fs["target_delimiter"]), ("assistant", answer, self.fs["fewshot_delimiter"])]
        q = self.text(i)
        if not isinstance(q, str):
            raise UsageError(f"{where}: doc_to_text gave {type(q).__name__}, not text")
        msgs.append(("user", q, ""))
        return msgs


def plain(turns: list[tuple[str, str, str]]) -> str:
    return "".join(content + delim for _, content, delim in turns)


def chat_messages(turns: list[tuple[str, str, str]], multiturn: bool) -> list[dict[str, str]]:
    """The turns for a chat template: few-shot examples as alternating user and assistant
    turns (``multiturn``, lm-eval's --fewshot_as_multiturn), else collapsed into one user
    turn (lm-eval's multiturn_to_singleturn)."""
    system = [{"role": "system", "content": turns[0][1]}] if turns and turns[0][0] == "system" else []
    rest = turns[len(system):]
    if multiturn:
        return system + [{"role": r, "content": c} for r, c, _ in rest]
    text = "".join(c + d for _, c, d in rest[:-1]) + rest[-1][1]
    return system + [{"role": "user", "content": text}]
