"""ShopBench (Amazon KDD Cup 2024): a routed multi-task benchmark. Every row names its task,
type and metric; a route (tasks/routes.py) gives it its prompt recipe and parser
(tasks/shopbench_parse.py); the kit's metrics score it (metrics/shopbench.py). The job
is tasks/shopbench_run.py. Any benchmark in this "each row names its type and metric"
shape runs the same way.

Data: JSON Lines (the kit's ``development.json``) or a JSON list, one object per row:
``input_field`` (the prompt), ``output_field`` (the truth), ``task_name``, ``task_type``,
``metric``, and optionally ``is_multiple_choice`` and ``track``. A row's key is its
0-based position in the file (the kit's row index), so ``--tasks`` keeps keys stable.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmboard.errors import UsageError
from lmboard.io import need_file, read_json_list, read_jsonl
from lmboard.metrics.shopbench import METRIC_NAMES
from lmboard.registry import register_task
from lmboard.tasks.routes import Route, route_for
from lmboard.tasks.shopbench_parse import PARSER_OF_TYPE

REQUIRED = ("input_field", "output_field", "task_name", "task_type", "metric")


@dataclass(frozen=True)
class Row:
    index: int  # 0-based position in the file: the sample key
    line: int  # where it is in the file (for errors)
    prompt: str
    truth: Any
    task: str
    type: str
    metric: str
    track: str | None
    is_mc: bool


@dataclass(frozen=True)
class Routed:
    """A row with the route it takes and that route's placeholder values."""

    row: Row
    route: Route
    fields: dict[str, str]

    @property
    def parser(self) -> str:
        return self.route.parser_for(self.row.type)


@dataclass(frozen=True)
class ShopBenchSettings:
    data: Path
    tasks: tuple[str, ...] = ()  # empty: all
    routes: tuple[Route, ...] = ()  # the user's routes, tried before the defaults
    routes_file: str | None = None
    parse: str = "official"  # official | lenient
    mc_by: str = "generate"  # generate | loglik
    responses: Path | None = None  # score these answers instead of running a model
    embedders: dict[str, Path] = field(default_factory=dict)


@register_task("shopbench")
class ShopBench:
    """The task as the registry knows it; its job is tasks/shopbench_run.py."""

    name = "shopbench"
    kind = "routed"


def _truth_ok(metric: str, truth: Any) -> bool:
    if metric == "accuracy":
        return isinstance(truth, int) and not isinstance(truth, bool)
    if metric in ("hit rate@3", "ndcg"):
        return isinstance(truth, list) and bool(truth) and all(isinstance(x, int | float) for x in truth)
    if metric == "micro f1":
        return isinstance(truth, list) and all(isinstance(x, str) for x in truth)
    return isinstance(truth, str) or (isinstance(truth, list) and bool(truth) and all(isinstance(x, str) for x in truth))


def _row(path: Path, index: int, line: int, obj: Any) -> Row:
    if not isinstance(obj, dict):
        raise UsageError(f"{path}:{line}: expected a JSON object")
    for k in REQUIRED:
        if k not in obj:
            raise UsageError(f"{path}:{line}: missing field {k!r}")
    for k in ("input_field", "task_name", "task_type", "metric"):
        if not isinstance(obj[k], str):
            raise UsageError(f"{path}:{line}: field {k!r} must be a string")
    if obj["metric"] not in METRIC_NAMES:
        raise UsageError(f"{path}:{line}: unknown metric {obj['metric']!r} (known: {', '.join(METRIC_NAMES)})")
    if not _truth_ok(obj["metric"], obj["output_field"]):
        raise UsageError(f"{path}:{line}: output_field {json.dumps(obj['output_field'])[:60]} does not fit "
                         f"metric {obj['metric']!r}")
    is_mc = obj.get("is_multiple_choice", obj["task_type"] == "multiple-choice")
    return Row(index, line, obj["input_field"], obj["output_field"], obj["task_name"], obj["task_type"],
               obj["metric"], obj.get("track"), bool(is_mc))


def load_rows(path: Path) -> list[Row]:
    """Every row of a ShopBench file, validated (a bad row is a one-line error naming its line)."""
    path = Path(path)
    need_file(path, "--data")
    head = path.read_text(encoding="utf-8", errors="replace").lstrip()[:1]
    if head == "[":
        pairs = [(i + 1, obj) for i, obj in enumerate(read_json_list(path, "rows"))]
    else:
        pairs = read_jsonl(path)
    if not pairs:
        raise UsageError(f"--data: {path}: no rows")
    return [_row(path, i, line, obj) for i, (line, obj) in enumerate(pairs)]


def select(rows: list[Row], tasks: tuple[str, ...]) -> list[Row]:
    if not tasks:
        return rows
    known = list(dict.fromkeys(r.task for r in rows))
    for t in tasks:
        if t not in known:
            raise UsageError(f"--tasks: no task {t!r} in the data (tasks: {', '.join(known)})")
    return [r for r in rows if r.task in tasks]


def route_rows(rows: list[Row], routes: list[Route], path: Path) -> list[Routed]:
    out = []
    for r in rows:
        hit = route_for(routes, r.type, r.is_mc, r.prompt)
        if hit is not None and hit[0].parser is None and r.type not in PARSER_OF_TYPE:
            raise UsageError(f"{path}:{r.line}: task_type {r.type!r} has no default parser: route "
                             f"{hit[0].name!r} must name one (parser: {', '.join(sorted(set(PARSER_OF_TYPE.values())))})")
        if hit is None:
            raise UsageError(f"{path}:{r.line}: no route for task_type {r.type!r} (known types: "
                             f"{', '.join(PARSER_OF_TYPE)}; or add a route with a parser in --routes)")
        out.append(Routed(r, *hit))
    return out


def mc_options(prompt: str) -> list[str]:
    """The answer numbers of a multiple-choice prompt: its numbered option lines ("0. ..."),
    else a scale it states ("on a scale of 1 to 5"), else the digits 0-9."""
    nums = re.findall(r"^\s*(\d+)\.\s", prompt, re.MULTILINE)
    if len(nums) >= 2:
        return list(dict.fromkeys(nums))
    m = re.search(r"(\d+)\s+to\s+(\d+)", prompt)
    if m and int(m.group(1)) < int(m.group(2)) <= 10:
        return [str(i) for i in range(int(m.group(1)), int(m.group(2)) + 1)]
    return [str(i) for i in range(10)]


def load_responses(path: Path, rows: list[Row]) -> dict[int, str]:
    """Answers produced elsewhere: JSONL with ``response`` and the row's ``index`` or its
    ``input_field``. Every selected row must have one."""
    by_prompt: dict[str, list[int]] = {}
    for r in rows:
        by_prompt.setdefault(r.prompt, []).append(r.index)
    wanted = {r.index for r in rows}
    got: dict[int, str] = {}
    for n, obj in read_jsonl(Path(path)):
        if not isinstance(obj.get("response"), str):
            raise UsageError(f"{path}:{n}: missing field 'response' (a string)")
        if "index" in obj:
            if not isinstance(obj["index"], int):
                raise UsageError(f"{path}:{n}: field 'index' must be an integer")
            idx = [obj["index"]]
        elif isinstance(obj.get("input_field"), str):
            idx = by_prompt.get(obj["input_field"], [])
        else:
            raise UsageError(f"{path}:{n}: needs 'index' (the row's 0-based position) or 'input_field'")
        for i in idx:
            if i in wanted:
                got[i] = obj["response"]
    missing = [r for r in rows if r.index not in got]
    if missing:
        raise UsageError(f"--responses: {path} has no response for {len(missing)} of {len(rows)} rows "
                         f"(first: row {missing[0].index}, data line {missing[0].line})")
    return got
