"""One registry mechanism for every kind of plugin: a decorator and a lazy entry-point group.

A kind (model backends, aliases, inference functions, tasks) is a
``Registry``. Code registers with its decorator; the registry finds what is not
registered yet in its entry-point group, loading only on a miss: first the entry point
of the name asked for, then the rest of the group. lmboard's built-ins are listed in
its own ``pyproject.toml`` under the same groups, so they register exactly the way a
third-party package does (and a plugin backend can be named like a built-in one).
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable
from typing import Generic, TypeVar

from lmboard.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str):
        self.kind, self.group = kind, group
        self._items: dict[str, T] = {}
        self._loaded: set[str] = set()  # entry points already imported (by entry-point name)
        self._all_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")`` over a function or class."""

        def deco(obj: T) -> T:
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self._items[name] = obj

    def _entry_points(self) -> list[importlib.metadata.EntryPoint]:
        return list(importlib.metadata.entry_points(group=self.group))

    def _load(self, eps: list[importlib.metadata.EntryPoint]) -> None:
        for ep in eps:
            if ep.name in self._loaded:
                continue
            self._loaded.add(ep.name)
            try:
                ep.load()
            except Exception as e:  # a broken plugin must not break lmboard
                print(f"warning: plugin {ep.name!r} ({ep.value}) failed to load: {e}", file=sys.stderr)

    def find(self, name: str) -> T | None:
        """The object registered as ``name``, loading entry points on a miss; None if none."""
        if name not in self._items:
            eps = self._entry_points()
            self._load([ep for ep in eps if ep.name == name])
            if name not in self._items and not self._all_loaded:
                self._all_loaded = True
                self._load(eps)
        return self._items.get(name)

    def get(self, name: str) -> T:
        obj = self.find(name)
        if obj is None:
            raise UsageError(f"unknown {self.kind} {name!r} (known: {', '.join(self.names()) or 'none'})")
        return obj

    def __contains__(self, name: str) -> bool:
        return self.find(name) is not None

    def names(self) -> list[str]:
        """Every name this kind can resolve (entry points are loaded: several kinds share a group)."""
        if not self._all_loaded:
            self._all_loaded = True
            self._load(self._entry_points())
        return sorted(self._items)


# The kinds. Groups: backends, aliases and inference functions share lmboard.models
# (one plugin module often registers all three).
BACKENDS: Registry = Registry("model backend", "lmboard.models")
ALIASES: Registry = Registry("model alias", "lmboard.models")
INFER: Registry = Registry("inference function", "lmboard.models")
TASKS: Registry = Registry("task", "lmboard.tasks")


def register_model(name: str, options: type | None = None):
    """Register a backend class (or factory) ``f(spec) -> LM`` as ``name:...`` in model specs.

    ``options``: the frozen dataclass of its ``key=value`` options (none when omitted).
    The class may declare ``capabilities`` (see lmboard.lm.Capability)."""

    def deco(factory):
        if options is not None:
            factory.options_class = options
        return BACKENDS.register(name)(factory)

    return deco


def register_alias(name: str):
    """Register ``f() -> ModelSpec``: a short name usable wherever a model spec is."""
    return ALIASES.register(name)


def register_llm_infer(name: str):
    """Register ``f(texts: list[str], **kwargs) -> list[str]`` as model ``plugin:name``."""
    return INFER.register(name)


def register_task(name: str):
    """Register a benchmark (a class whose instances load, render and score it)."""
    return TASKS.register(name)
