"""Routes: which prompt recipe a row of a routed benchmark (ShopBench) gets.

A route matches a row on its ``task_type`` and/or ``is_multiple_choice``, optionally on
text (``contains``) or a regular expression (``regex``, searched with DOTALL) in the
prompt, as seed 003 routes tasks 11 to 15 by text found in the prompt. The recipe:

    system          system prompt (or none); a template over {prompt} and the regex's named groups
    user            the user turn, by default "{prompt}"
    chat            through the model's chat template (true) or raw text (system + user)
    max_new_tokens  greedy unless do_sample; stop strings cut the answer
    parser          multichoice, ranking, retrieval, named_entity_recognition or generation
                    (default: the task type's)

Routes are tried in order, first match wins: those of ``--routes FILE`` (JSON or YAML:
a list, or {"routes": [...]}) before the built-in defaults, which cover every task type.
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmboard.errors import UsageError
from lmboard.io import need_file
from lmboard.lm import GenerationSettings, GenRequest
from lmboard.tasks.shopbench_parse import PARSER_OF_TYPE, PARSERS

# The kit's baseline system prompt (its vanilla Llama-3 model prepends it to every prompt).
KIT_SYSTEM = ("You are a helpful online shopping assistant. Please answer the following question about online "
              "shopping and follow the given instructions.")


@dataclass(frozen=True)
class Route:
    name: str
    task_type: str | None = None  # None: any
    is_multiple_choice: bool | None = None  # None: any
    contains: str | None = None
    regex: str | None = None
    system: str | None = None
    user: str = "{prompt}"
    chat: bool = True
    max_new_tokens: int = 100
    stop: tuple[str, ...] = ()
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    parser: str | None = None

    def matches(self, task_type: str, is_mc: bool, prompt: str) -> dict[str, str] | None:
        """The placeholders' values if the row matches, else None."""
        if self.task_type is not None and self.task_type != task_type:
            return None
        if self.is_multiple_choice is not None and self.is_multiple_choice != is_mc:
            return None
        if self.contains is not None and self.contains not in prompt:
            return None
        fields = {"prompt": prompt}
        if self.regex is not None:
            m = re.search(self.regex, prompt, re.DOTALL)
            if m is None:
                return None
            fields.update({k: v or "" for k, v in m.groupdict().items()})
        return fields

    def parser_for(self, task_type: str) -> str:
        return self.parser or PARSER_OF_TYPE[task_type]

    def request(self, key: str, fields: dict[str, str]) -> GenRequest:
        system = self.system.format_map(fields) if self.system else None
        user = self.user.format_map(fields)
        if self.chat:
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
            return GenRequest(key, tuple(msgs))
        return GenRequest(key, text=(system or "") + user)

    def settings(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample,
                                  temperature=self.temperature, top_p=self.top_p, stop=self.stop, raw=not self.chat)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d


# Built-in defaults, one per task type: the kit's system prompt, the chat template, greedy;
# room for one answer of the type (the kit's baseline gives 1 token to multiple choice and
# 100 to the rest; a few more for multiple choice lets a model open with a space).
DEFAULT_ROUTES = (
    Route("multiple-choice", task_type="multiple-choice", system=KIT_SYSTEM, max_new_tokens=8),
    Route("ranking", task_type="ranking", system=KIT_SYSTEM, max_new_tokens=32),
    Route("retrieval", task_type="retrieval", system=KIT_SYSTEM, max_new_tokens=32),
    Route("named_entity_recognition", task_type="named_entity_recognition", system=KIT_SYSTEM, max_new_tokens=48),
    Route("generation", task_type="generation", system=KIT_SYSTEM, max_new_tokens=128),
)
FIELDS = {f.name for f in dataclasses.fields(Route)}


def _route(path: Path, i: int, obj: Any) -> Route:
    where = f"{path}: route {i + 1}"
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected an object")
    unknown = sorted(set(obj) - FIELDS)
    if unknown:
        raise UsageError(f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(sorted(FIELDS))})")
    obj = {"name": f"route{i + 1}", **obj, "stop": tuple(obj.get("stop") or ())}
    try:
        r = Route(**obj)
    except TypeError as e:
        raise UsageError(f"{where}: {e}") from None
    for name, kinds in (("name", (str,)), ("task_type", (str, type(None))), ("contains", (str, type(None))),
                        ("regex", (str, type(None))), ("system", (str, type(None))), ("user", (str,)),
                        ("chat", (bool,)), ("do_sample", (bool,)), ("is_multiple_choice", (bool, type(None)))):
        if not isinstance(getattr(r, name), kinds):
            raise UsageError(f"{where}: field {name!r} must be {' or '.join('null' if k is type(None) else k.__name__ for k in kinds)}")
    if not all(isinstance(x, str) for x in r.stop):
        raise UsageError(f"{where}: field 'stop' must be a list of strings")
    if r.parser is not None and r.parser not in PARSERS:
        raise UsageError(f"{where}: unknown parser {r.parser!r} (parsers: {', '.join(PARSERS)})")
    if not isinstance(r.max_new_tokens, int) or r.max_new_tokens < 1:
        raise UsageError(f"{where}: max_new_tokens must be a positive integer")
    groups: set[str] = set()
    if r.regex is not None:
        try:
            groups = set(re.compile(r.regex).groupindex)
        except re.error as e:
            raise UsageError(f"{where}: bad regex ({e})") from None
    for name in ("system", "user"):
        text = getattr(r, name)
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(text or "") if f is not None}
        except ValueError as e:
            raise UsageError(f"{where}: {name}: {e} (write a literal brace as {{{{ or }}}})") from None
        missing = sorted(used - groups - {"prompt"})
        if missing:
            raise UsageError(f"{where}: {name} uses {{{missing[0]}}}, which is neither {{prompt}} nor a named "
                             "group of the route's regex")
    return r


def load_routes(path: Path) -> list[Route]:
    """The routes of a JSON or YAML file, validated (a bad route is a one-line error)."""
    path = Path(path)
    need_file(path, "--routes")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise UsageError(f"{path}:{mark.line + 1 if mark else '?'}: invalid YAML") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if isinstance(data, dict):
        data = data.get("routes")
    if not isinstance(data, list) or not data:
        raise UsageError(f"{path}: expected a list of routes (or {{\"routes\": [...]}})")
    routes = [_route(path, i, obj) for i, obj in enumerate(data)]
    names = [r.name for r in routes]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise UsageError(f"{path}: two routes are named {dup!r} (samples record the route by name)")
    return routes


def route_for(routes: list[Route], task_type: str, is_mc: bool, prompt: str) -> tuple[Route, dict[str, str]] | None:
    for r in routes:
        fields = r.matches(task_type, is_mc, prompt)
        if fields is not None:
            return r, fields
    return None
