"""Registries: model backends, aliases and inference functions.

Built-ins register with the same decorators as third-party plugins. Plugins come
from the entry-point group ``lmboard.models`` (loaded lazily, on the first lookup
that misses) or from files and folders named with ``--plugins``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lmboard.errors import UsageError

if TYPE_CHECKING:
    from lmboard.config import ModelSpec
    from lmboard.models.base import LM

ENTRY_POINT_GROUP = "lmboard.models"

_BACKENDS: dict[str, Callable[[ModelSpec], LM]] = {}
_ALIASES: dict[str, Callable[[], ModelSpec]] = {}
_INFER: dict[str, Callable[..., list[str]]] = {}
# Built-in backends live in modules imported only when used (heavy imports inside).
_BUILTIN_BACKENDS = {
    "hf": "lmboard.models.hf",
    "openai": "lmboard.models.openai_api",
    "plugin": "lmboard.models.plugin",
}
_entry_points_loaded = False


def register_model(name: str):
    """Register a backend factory ``f(spec: ModelSpec) -> LM`` under ``name``."""

    def deco(factory):
        _BACKENDS[name] = factory
        return factory

    return deco


def register_alias(name: str):
    """Register ``f() -> ModelSpec``: a short name usable wherever a model spec is."""

    def deco(fn):
        _ALIASES[name] = fn
        return fn

    return deco


def register_llm_infer(name: str):
    """Register ``f(texts: list[str], **kwargs) -> list[str]`` as model ``plugin:name``."""

    def deco(fn):
        _INFER[name] = fn
        return fn

    return deco


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:  # a broken plugin must not break lmboard
            print(f"warning: plugin {ep.name!r} failed to load: {e}", file=sys.stderr)


def load_plugin_paths(paths: list[Path]) -> None:
    """Import the .py files (or folders of them) the user named with --plugins."""
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise UsageError(f"--plugins: {p}: no such file or folder")
        files = sorted(p.glob("*.py")) if p.is_dir() else [p]
        for f in files:
            mod_name = f"lmboard_plugin_{abs(hash(str(f.resolve())))}"
            if mod_name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(mod_name, f)
            if spec is None or spec.loader is None:
                raise UsageError(f"--plugins: {f}: not a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                raise UsageError(f"--plugins: {f}: {type(e).__name__}: {e}") from e


def resolve_alias(name: str) -> ModelSpec | None:
    importlib.import_module("lmboard.models.aliases")
    if name not in _ALIASES:
        _load_entry_points()
    fn = _ALIASES.get(name)
    return fn() if fn else None


def infer_function(name: str) -> Callable[..., list[str]]:
    if name not in _INFER:
        _load_entry_points()
    if name not in _INFER:
        known = ", ".join(sorted(_INFER)) or "none registered"
        raise UsageError(f"plugin:{name}: no inference function of that name ({known}); see --plugins")
    return _INFER[name]


def load_model(spec: ModelSpec) -> LM:
    if spec.backend not in _BACKENDS and spec.backend in _BUILTIN_BACKENDS:
        importlib.import_module(_BUILTIN_BACKENDS[spec.backend])
    if spec.backend not in _BACKENDS:
        _load_entry_points()
    if spec.backend not in _BACKENDS:
        raise UsageError(f"model backend {spec.backend!r} is not registered")
    return _BACKENDS[spec.backend](spec)
